//! Any bytes as an init image or mask, decoded as `sd generate` does (see `src/png.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::png::run(data);
});
