//! [`ModelCatalog`]: the models a server may load, which are exactly the entries of
//! `--models-dir` (diffusers folders, `.safetensors` / `.ckpt` files). A request names a model
//! by its name in that listing, never by path, so `sd_model_checkpoint` cannot reach a file
//! outside the folder (`../x`, `/etc/passwd` and the like are refused before any lookup).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api_error::ApiError;
use crate::error::{Error, Result};

/// File extensions of single-file checkpoints.
const CHECKPOINT_EXTENSIONS: [&str; 2] = ["safetensors", "ckpt"];

/// One model of the folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    /// The entry's file name (`tiny-sd1`, `v1-5.safetensors`): A1111's `title`.
    pub title: String,
    /// The name without extension: A1111's `model_name`.
    pub model_name: String,
    /// Where it is.
    pub filename: PathBuf,
    /// Not computed (A1111's short hash).
    pub hash: Option<String>,
    /// Not computed (A1111's sha256).
    pub sha256: Option<String>,
    /// No separate config file.
    pub config: Option<String>,
}

/// The models under one folder.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    dir: PathBuf,
}

impl ModelCatalog {
    /// The catalog of `dir`.
    ///
    /// # Errors
    /// [`Error::ModelsDir`] when `dir` is not a readable folder holding at least one model.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let catalog = Self { dir: dir.into() };
        let models = catalog.list().map_err(|message| Error::ModelsDir {
            path: catalog.dir.clone(),
            message,
        })?;
        if models.is_empty() {
            return Err(Error::ModelsDir {
                path: catalog.dir.clone(),
                message: "holds no model (diffusers folders with model_index.json, or \
                          .safetensors / .ckpt files)"
                    .into(),
            });
        }
        Ok(catalog)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The models now in the folder, sorted by title (read again on each call, so models
    /// copied in while the server runs are offered).
    ///
    /// # Errors
    /// The reason the folder cannot be read.
    pub fn list(&self) -> std::result::Result<Vec<ModelEntry>, String> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| format!("cannot read it: {e}"))?;
        let mut models: Vec<ModelEntry> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let title = e.file_name().to_str()?.to_string();
                let is_model = if path.is_dir() {
                    path.join("model_index.json").is_file()
                } else {
                    path.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| CHECKPOINT_EXTENSIONS.contains(&x))
                };
                if !is_model {
                    return None;
                }
                let model_name = match path.is_dir() {
                    true => title.clone(),
                    false => path.file_stem()?.to_str()?.to_string(),
                };
                Some(ModelEntry {
                    model_name,
                    title,
                    filename: path,
                    hash: None,
                    sha256: None,
                    config: None,
                })
            })
            .collect();
        models.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(models)
    }

    /// The model `name` names: a title or model name of [`list`](Self::list), optionally with
    /// A1111's ` [hash]` suffix. `field` is blamed in errors.
    ///
    /// # Errors
    /// [`ApiError::PathNotAllowed`] for anything path-like (separators, `..`, a leading dot),
    /// [`ApiError::NotFound`] for a name of no model, listing the names there are.
    pub fn find(&self, field: &str, name: &str) -> std::result::Result<ModelEntry, ApiError> {
        let name = strip_hash(name.trim());
        if name.is_empty()
            || name.contains(['/', '\\', '\0'])
            || name.starts_with('.')
            || Path::new(name).is_absolute()
        {
            return Err(ApiError::PathNotAllowed {
                field: field.to_string(),
                message: format!(
                    "{name:?} is not a model name; give a title from GET /sdapi/v1/sd-models \
                     (paths are not accepted)"
                ),
            });
        }
        let models = self
            .list()
            .map_err(|m| ApiError::Internal(format!("--models-dir {}: {m}", self.dir.display())))?;
        models
            .iter()
            .find(|m| m.title == name)
            .or_else(|| models.iter().find(|m| m.model_name == name))
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = models.iter().map(|m| m.title.as_str()).collect();
                ApiError::NotFound(format!(
                    "{field}: no model {name:?} in --models-dir; there are: {}",
                    known.join(", ")
                ))
            })
    }
}

/// `name` without a trailing ` [0123abcd]` hash, as A1111 titles carry.
fn strip_hash(name: &str) -> &str {
    match name.rfind(" [") {
        Some(cut) if name.ends_with(']') => &name[..cut],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline_fixtures() -> ModelCatalog {
        ModelCatalog::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pipeline"))
            .unwrap()
    }

    #[test]
    fn lists_diffusers_folders() {
        let titles: Vec<String> = pipeline_fixtures()
            .list()
            .unwrap()
            .into_iter()
            .map(|m| m.title)
            .collect();
        assert_eq!(titles, ["tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2"]);
    }

    #[test]
    fn names_only_never_paths() {
        let catalog = pipeline_fixtures();
        assert_eq!(catalog.find("f", "tiny-sd2").unwrap().title, "tiny-sd2");
        assert_eq!(
            catalog.find("f", "tiny-sd2 [abcd1234]").unwrap().title,
            "tiny-sd2"
        );
        for bad in [
            "../pipeline/tiny-sd1",
            "/etc/passwd",
            "..",
            ".hidden",
            "a\\b",
            "",
        ] {
            let e = catalog.find("sd_model_checkpoint", bad).unwrap_err();
            assert!(matches!(e, ApiError::PathNotAllowed { .. }), "{bad}: {e}");
        }
        let e = catalog.find("sd_model_checkpoint", "init.png").unwrap_err();
        assert!(matches!(e, ApiError::NotFound(_)), "{e}");
        assert!(
            e.to_string()
                .contains("tiny-sd1, tiny-sd1-inpaint, tiny-sd2"),
            "{e}"
        );
    }
}
