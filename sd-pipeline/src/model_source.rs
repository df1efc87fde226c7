//! Where a model comes from: a diffusers folder, a single checkpoint file, or a Hugging Face
//! Hub repository id fetched into the hub cache (`~/.cache/huggingface/hub`, or `HF_HOME`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A model location as a user writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local diffusers folder or single `.safetensors` / `.ckpt` file.
    Path(PathBuf),
    /// A Hub repository (`owner/name`), optionally at a revision (`owner/name@rev`).
    Hub {
        /// `owner/name`.
        repo: String,
        /// A branch, tag or commit (None: `main`).
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Reads `text`: an existing path is a path; otherwise `owner/name[@revision]` (one slash,
    /// no path-like prefix) is a Hub id; anything else is a path that does not exist, which
    /// fails when loaded with an error naming it.
    pub fn parse(text: &str) -> Self {
        let path = Path::new(text);
        if path.exists() {
            return ModelSource::Path(path.to_path_buf());
        }
        let (repo, revision) = match text.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev.to_string())),
            _ => (text, None),
        };
        let looks_like_repo = repo.split('/').count() == 2
            && !repo.starts_with(['.', '/', '~'])
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if looks_like_repo {
            ModelSource::Hub {
                repo: repo.to_string(),
                revision,
            }
        } else {
            ModelSource::Path(path.to_path_buf())
        }
    }

    /// A short name for the model (a file stem, a folder name, or the repository's name), as
    /// A1111 writes in `Model:`.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Path(path) => {
                let stem = if path.is_dir() {
                    path.file_name()
                } else {
                    path.file_stem()
                };
                stem.map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string())
            }
            ModelSource::Hub { repo, .. } => repo.rsplit('/').next().unwrap_or(repo).to_string(),
        }
    }

    /// The local path to load: the path itself, or the Hub snapshot folder after fetching the
    /// files a diffusers pipeline needs (already-cached files are not fetched again).
    pub fn resolve(&self, show_progress: bool) -> Result<PathBuf> {
        match self {
            ModelSource::Path(path) => Ok(path.clone()),
            ModelSource::Hub { repo, revision } => {
                hub::fetch(repo, revision.as_deref(), show_progress)
            }
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(path) => write!(f, "{}", path.display()),
            ModelSource::Hub {
                repo,
                revision: Some(rev),
            } => write!(f, "{repo}@{rev}"),
            ModelSource::Hub { repo, .. } => write!(f, "{repo}"),
        }
    }
}

impl From<&str> for ModelSource {
    fn from(text: &str) -> Self {
        ModelSource::parse(text)
    }
}

impl From<PathBuf> for ModelSource {
    fn from(path: PathBuf) -> Self {
        ModelSource::Path(path)
    }
}

impl From<&Path> for ModelSource {
    fn from(path: &Path) -> Self {
        ModelSource::Path(path.to_path_buf())
    }
}

/// Files of a diffusers pipeline: each entry is a list of alternatives, the first that can be
/// fetched wins; `required` entries must be found.
const PIPELINE_FILES: [(&[&str], bool); 10] = [
    (&["model_index.json"], false),
    (&["scheduler/scheduler_config.json"], true),
    (&["unet/config.json"], true),
    (
        &[
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ],
        true,
    ),
    (&["vae/config.json"], true),
    (
        &[
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ],
        true,
    ),
    (&["text_encoder/config.json"], true),
    (
        &[
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
        ],
        true,
    ),
    (&["tokenizer/tokenizer_config.json"], false),
    (&["tokenizer/special_tokens_map.json"], false),
];

#[cfg(feature = "hub")]
mod hub {
    use std::path::PathBuf;

    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    use super::{hub_error, snapshot_root, PIPELINE_FILES};
    use crate::error::Result;

    /// Fetches with the cache and endpoint of the environment (`HF_HOME`, `HF_ENDPOINT`).
    pub(super) fn fetch(repo: &str, revision: Option<&str>, progress: bool) -> Result<PathBuf> {
        fetch_with(ApiBuilder::from_env(), repo, revision, progress)
    }

    pub(super) fn fetch_with(
        builder: ApiBuilder,
        repo: &str,
        revision: Option<&str>,
        progress: bool,
    ) -> Result<PathBuf> {
        let api = builder
            .with_progress(progress)
            .build()
            .map_err(|e| hub_error(repo, e))?;
        let hub_repo = match revision {
            Some(rev) => Repo::with_revision(repo.to_string(), RepoType::Model, rev.to_string()),
            None => Repo::model(repo.to_string()),
        };
        let remote = api.repo(hub_repo);
        let mut root = None;
        for (alternatives, required) in PIPELINE_FILES {
            let mut last_error = None;
            let mut found = None;
            for file in alternatives {
                match remote.get(file) {
                    Ok(path) => {
                        found = Some((path, *file));
                        break;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            match (found, last_error) {
                (Some((path, file)), _) => {
                    root.get_or_insert(snapshot_root(&path, file));
                }
                (None, Some(e)) if required => {
                    return Err(hub_error(repo, format!("{}: {e}", alternatives[0])));
                }
                _ => {}
            }
        }
        root.ok_or_else(|| hub_error(repo, "no file could be fetched"))
    }
}

#[cfg(not(feature = "hub"))]
mod hub {
    use std::path::PathBuf;

    use super::hub_error;
    use crate::error::Result;

    pub(super) fn fetch(repo: &str, _revision: Option<&str>, _progress: bool) -> Result<PathBuf> {
        Err(hub_error(
            repo,
            "this build has no Hub support (sd-pipeline's `hub` feature is off)",
        ))
    }
}

/// The snapshot folder holding `file` (a relative path inside the repository).
fn snapshot_root(path: &Path, file: &str) -> PathBuf {
    let depth = Path::new(file).components().count();
    let mut root = path.to_path_buf();
    for _ in 0..depth {
        root.pop();
    }
    root
}

fn hub_error(repo: &str, error: impl fmt::Display) -> Error {
    Error::Hub {
        repo: repo.to_string(),
        message: format!(
            "cannot fetch the model from the Hugging Face Hub ({error}); when offline, or for a \
             model not on the Hub, pass a local diffusers folder or .safetensors / .ckpt file"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_tells_paths_from_repository_ids() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pipeline/tiny-sd1");
        assert_eq!(
            ModelSource::parse(fixture),
            ModelSource::Path(fixture.into())
        );
        assert_eq!(
            ModelSource::parse("stable-diffusion-v1-5/stable-diffusion-v1-5"),
            ModelSource::Hub {
                repo: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
                revision: None
            }
        );
        assert_eq!(
            ModelSource::parse("stabilityai/stable-diffusion-2-1@fp16"),
            ModelSource::Hub {
                repo: "stabilityai/stable-diffusion-2-1".into(),
                revision: Some("fp16".into())
            }
        );
        for path in [
            "./missing/model",
            "/abs/model",
            "model.safetensors",
            "a/b/c",
        ] {
            assert_eq!(
                ModelSource::parse(path),
                ModelSource::Path(path.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn names_for_the_metadata() {
        assert_eq!(
            ModelSource::parse("runwayml/stable-diffusion-v1-5").name(),
            "stable-diffusion-v1-5"
        );
        assert_eq!(
            ModelSource::Path("/m/v1-5-pruned-emaonly.safetensors".into()).name(),
            "v1-5-pruned-emaonly"
        );
    }

    #[test]
    fn snapshot_root_strips_the_file_path() {
        let p = Path::new("/cache/snapshots/abc/unet/config.json");
        assert_eq!(
            snapshot_root(p, "unet/config.json"),
            Path::new("/cache/snapshots/abc")
        );
    }

    #[test]
    #[cfg(feature = "hub")]
    fn an_unreachable_hub_is_a_clear_error() {
        // An endpoint nothing listens on, and an empty cache: the error says to pass a path.
        let cache = std::env::temp_dir().join(format!("sd-hub-cache-{}", std::process::id()));
        let builder = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.clone()))
            .with_endpoint("http://127.0.0.1:9".to_string());
        let err = hub::fetch_with(builder, "nobody/no-such-model", None, false).unwrap_err();
        let _ = std::fs::remove_dir_all(&cache);
        let text = err.to_string();
        assert!(
            text.starts_with("nobody/no-such-model: cannot fetch"),
            "{text}"
        );
        assert!(text.contains("pass a local diffusers folder"), "{text}");
    }
}
