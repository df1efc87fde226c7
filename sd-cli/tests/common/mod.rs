//! What the `sd` integration tests share: fixture paths, running the binary, temp folders.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file under `fixtures/checkpoint/` (tools/fixtures/checkpoint.py).
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/checkpoint").join(name)
}

/// A file or model folder under `fixtures/pipeline/` (tools/fixtures/pipeline.py).
pub fn folder(name: &str) -> PathBuf {
    root().join("fixtures/pipeline").join(name)
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Runs the `sd` binary with `args`.
pub fn sd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .output()
        .expect("the sd binary runs")
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `sd-cli-<pid>-<name>`, emptied first.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sd-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the folder, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
