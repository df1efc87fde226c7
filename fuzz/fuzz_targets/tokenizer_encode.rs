//! `ClipTokenizer::encode` and `windows` on any text (see `src/tokenizer.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::tokenizer::run(data);
});
