//! Any bytes as a `.ckpt`: `CkptFile::open` and `load`, `inspect`, `ModelWeights::open`
//! (see `src/checkpoint.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::checkpoint::ckpt_file(data);
});
