//! Tensor names and shapes, as text, through `detect` and `NameTable` (see `src/checkpoint.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sd_fuzz::checkpoint::detect_shapes(data);
});
