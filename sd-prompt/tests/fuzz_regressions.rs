//! The prompt parser's fuzzing corpus as a regression test: every input of
//! `fixtures/fuzz/prompt_parse/` through the fuzz target's own check (see `fuzz/README.md`).

use std::path::Path;

#[path = "../../fuzz/src/prompt.rs"]
mod prompt;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn prompt_parse_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    replay::replay(&root, "prompt_parse", prompt::run);
}
