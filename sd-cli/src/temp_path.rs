//! Temporary names next to an output, so a result is written whole and then renamed into place:
//! a failure (or Ctrl-C) never leaves a half-written output behind.

use std::path::{Path, PathBuf};

/// A file or folder named `.<target name>.sd-<tag>-<pid>.tmp` next to `target` (same folder, so
/// the final rename stays on one file system), removed when dropped if it is still there.
pub struct TempSibling(PathBuf);

impl TempSibling {
    /// The temporary name for `target`; nothing is created yet.
    pub fn new(target: &Path, tag: &str) -> Self {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let pid = std::process::id();
        TempSibling(target.with_file_name(format!(".{name}.sd-{tag}-{pid}.tmp")))
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempSibling {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else if self.0.exists() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
