//! Replays a folder of saved inputs through a target's check: the regression side of fuzzing.
//!
//! Used by `sd-*/tests/fuzz_regressions.rs` (included with `#[path]`), std only. A file's name
//! says what it must do: `ok-*` be accepted, `err-*` be refused with a typed error, anything
//! else (`cov-*` and `crash-*` inputs kept from fuzzing) only not panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs `check` on every file of `fixtures/fuzz/<target>/` under `root` (the repository) and
/// panics once at the end, listing every file that panicked or had the wrong outcome.
pub fn replay<E: std::fmt::Debug>(
    root: &Path,
    target: &str,
    check: impl Fn(&[u8]) -> Result<(), E>,
) {
    let dir = root.join("fixtures/fuzz").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if name.starts_with("crash-") {
            // Past the test harness's capture, so an abort (out of memory) still says which.
            let line = format!("replaying {}\n", path.display());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
        match catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: panicked: {message}"));
            }
            Ok(Err(e)) if name.starts_with("ok-") => {
                failures.push(format!("{name}: refused a valid input: {e:?}"));
            }
            Ok(Ok(())) if name.starts_with("err-") => {
                failures.push(format!("{name}: accepted a bad input"));
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs in {} failed:\n{}",
        failures.len(),
        files.len(),
        dir.display(),
        failures.join("\n")
    );
}
