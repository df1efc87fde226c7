//! The tokenizer's fuzzing corpus as a regression test: every input of
//! `fixtures/fuzz/tokenizer_encode/` through the fuzz target's own check (see `fuzz/README.md`).

use std::path::Path;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
#[path = "../../fuzz/src/tokenizer.rs"]
mod tokenizer;

#[test]
fn tokenizer_encode_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    replay::replay(&root, "tokenizer_encode", tokenizer::run);
}
