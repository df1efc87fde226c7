//! The LoRA files of `--lora-dir`, loaded as side branches so each request's
//! `<lora:NAME:WEIGHT>` tags choose which apply (a request without tags gets the plain model).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// File extensions of LoRA / LyCORIS files, as `sd generate --lora-dir` looks them up.
const LORA_EXTENSIONS: [&str; 3] = ["safetensors", "pt", "ckpt"];

/// One LoRA, as `GET /sdapi/v1/loras` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoraEntry {
    /// The name tags use: the file name without extension.
    pub name: String,
    /// The same name (A1111's alias, from metadata, is not read).
    pub alias: String,
    /// Where the file is.
    pub path: PathBuf,
    /// Not read (A1111's training metadata).
    pub metadata: serde_json::Value,
}

/// The LoRA files in `dir`, sorted by name.
///
/// # Errors
/// [`Error::LoraDir`] when `dir` cannot be read.
pub fn list(dir: &Path) -> Result<Vec<LoraEntry>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::LoraDir {
        path: dir.to_path_buf(),
        message: format!("cannot read it: {e}"),
    })?;
    let mut loras: Vec<LoraEntry> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| LORA_EXTENSIONS.contains(&x))
        })
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            Some(LoraEntry {
                alias: name.clone(),
                name,
                path,
                metadata: serde_json::json!({}),
            })
        })
        .collect();
    loras.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(loras)
}
