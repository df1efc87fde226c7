//! The checks behind the fuzz targets in `fuzz_targets/`, one module per reader.
//!
//! Each check feeds one input to the real parsing code and asserts only what that code promises:
//! no panic; `Ok` or the crate's typed error; the few invariants its docs state. The regression
//! tests `sd-*/tests/fuzz_regressions.rs` include these files with `#[path]` and replay
//! `fixtures/fuzz/<target>/` through them on stable ([`replay`]), so a module uses only the
//! crate it tests.

pub mod checkpoint;
pub mod png;
pub mod prompt;
pub mod replay;
pub mod tokenizer;
