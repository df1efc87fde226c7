//! `sd_prompt::parse` on any text (see `src/prompt.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::prompt::run(data);
});
