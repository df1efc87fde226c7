//! Any bytes as a `.safetensors` file: `inspect`, then `ModelWeights::open`
//! (see `src/checkpoint.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::checkpoint::safetensors_file(data);
});
