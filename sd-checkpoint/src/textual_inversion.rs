//! Textual-inversion embeddings as they are shared: a few learned token vectors that a word
//! (the file's name) stands for in a prompt.
//!
//! Three layouts are read, from `.pt` / `.bin` (safe pickle reader) or `.safetensors`:
//! - A1111's `.pt`: `string_to_param: {"*": [n, C]}` (beside `string_to_token`, `name`, `step`).
//! - A1111's `.safetensors`: `emb_params: [n, C]`.
//! - diffusers' `{token: vector}`: one tensor, `[C]` or `[n, C]`, under any name.
//!
//! SDXL files (`clip_l` + `clip_g`) are refused: SD 1.x / 2.x have one text encoder. Whether
//! `C` fits a model (768 for SD 1.x, 1024 for SD 2.x) is for the pipeline to check.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::source::Source;

/// The most vectors one embedding may have: one prompt window's tokens.
pub const MAX_VECTORS: usize = 75;

/// Which layout an embedding file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingLayout {
    /// A1111's pickled `string_to_param`.
    StringToParam,
    /// A1111's safetensors `emb_params`.
    EmbParams,
    /// diffusers' single `{token: vector}`.
    TokenVector,
}

impl std::fmt::Display for EmbeddingLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EmbeddingLayout::StringToParam => "A1111 string_to_param",
            EmbeddingLayout::EmbParams => "A1111 emb_params",
            EmbeddingLayout::TokenVector => "diffusers {token: vector}",
        })
    }
}

/// One textual-inversion embedding, read.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    path: PathBuf,
    name: String,
    layout: EmbeddingLayout,
    vectors: Tensor,
}

impl TextualInversion {
    /// Reads `path`; the embedding is named after the file (its name without extension), as
    /// A1111 names it.
    ///
    /// # Errors
    /// When the file cannot be read, holds no embedding (or an SDXL pair), has more than
    /// [`MAX_VECTORS`] vectors, or values that are not finite: the message names the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| fail("has no file name to trigger the embedding with".into()))?;
        let source = Source::open(path)?;
        let infos = source.infos()?;
        let params: Vec<&String> = infos
            .keys()
            .filter(|k| k.starts_with("string_to_param."))
            .collect();
        let (layout, key) = if !params.is_empty() {
            if params.len() > 1 {
                return Err(fail(format!(
                    "string_to_param holds {} embeddings ({}); A1111 files hold one",
                    params.len(),
                    join(&params)
                )));
            }
            (EmbeddingLayout::StringToParam, params[0].clone())
        } else if infos.contains_key("emb_params") {
            (EmbeddingLayout::EmbParams, "emb_params".to_string())
        } else if infos.contains_key("clip_l") || infos.contains_key("clip_g") {
            return Err(fail(
                "is an SDXL embedding (clip_l / clip_g); SD 1.x / 2.x take one set of vectors"
                    .into(),
            ));
        } else if infos.len() == 1 {
            let key = infos.keys().next().cloned().unwrap_or_default();
            (EmbeddingLayout::TokenVector, key)
        } else {
            let keys: Vec<&String> = infos.keys().collect();
            return Err(fail(format!(
                "is not a textual-inversion embedding: expected string_to_param, emb_params \
                 or a single {{token: vector}} tensor, found {}",
                if keys.is_empty() {
                    "no tensors".to_string()
                } else {
                    join(&keys)
                }
            )));
        };
        let tensor = source.load(&key)?.to_dtype(DType::F32)?;
        let vectors = match tensor.dims() {
            [c] => tensor.reshape((1, *c))?,
            [_, _] => tensor,
            dims => {
                return Err(fail(format!(
                    "{key} has shape {dims:?}; an embedding is [vectors, width] or [width]"
                )))
            }
        };
        let (n, width) = vectors.dims2()?;
        if n == 0 || width == 0 {
            return Err(fail(format!("{key} is empty (shape [{n}, {width}])")));
        }
        if n > MAX_VECTORS {
            return Err(fail(format!(
                "{key} has {n} vectors; at most {MAX_VECTORS} (one prompt window) are used"
            )));
        }
        let values: Vec<f32> = vectors.flatten_all()?.to_vec1()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!(
                "{key}: vector {} holds a non-finite value ({})",
                i / width,
                values[i]
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name,
            layout,
            vectors,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The word that triggers it: the file name without extension.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layout the file used.
    pub fn layout(&self) -> EmbeddingLayout {
        self.layout
    }

    /// The vectors, `[n, width]` in f32.
    pub fn vectors(&self) -> &Tensor {
        &self.vectors
    }

    /// How many token slots it takes.
    pub fn len(&self) -> usize {
        self.vectors.dim(0).unwrap_or(0)
    }

    /// Never true: an empty embedding is refused when read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The width of each vector (the text encoder's hidden size it was trained for).
    pub fn width(&self) -> usize {
        self.vectors.dim(1).unwrap_or(0)
    }
}

fn join(keys: &[&String]) -> String {
    let shown: Vec<&str> = keys.iter().take(8).map(|k| k.as_str()).collect();
    let more = keys.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/lora")
            .join(name)
    }

    #[test]
    fn reads_the_three_layouts() {
        let a1111 = TextualInversion::open(fixture("tinyemb.pt")).unwrap();
        assert_eq!(a1111.name(), "tinyemb");
        assert_eq!(a1111.layout(), EmbeddingLayout::StringToParam);
        assert_eq!((a1111.len(), a1111.width()), (2, 8));

        let safetensors = TextualInversion::open(fixture("negemb.safetensors")).unwrap();
        assert_eq!(safetensors.layout(), EmbeddingLayout::EmbParams);
        assert_eq!((safetensors.len(), safetensors.width()), (1, 8));

        let diffusers = TextualInversion::open(fixture("dfemb.bin")).unwrap();
        assert_eq!(diffusers.name(), "dfemb");
        assert_eq!(diffusers.layout(), EmbeddingLayout::TokenVector);
        assert_eq!((diffusers.len(), diffusers.width()), (1, 8));
        // Random normal vectors: not all zero, a spread near 1.
        let v: Vec<f32> = a1111.vectors().flatten_all().unwrap().to_vec1().unwrap();
        let sd = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!((0.5..1.5).contains(&sd), "rms {sd}");
    }

    #[test]
    fn a_lora_file_is_not_an_embedding() {
        let err = TextualInversion::open(fixture("kohya.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kohya.safetensors"), "{err}");
        assert!(err.contains("not a textual-inversion embedding"), "{err}");
    }

    #[test]
    fn sdxl_and_non_finite_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("sd-ti-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v = Tensor::ones((1, 4), DType::F32, &candle_core::Device::Cpu).unwrap();
        let sdxl = dir.join("xl.safetensors");
        candle_core::safetensors::save(
            &[("clip_l".to_string(), v.clone()), ("clip_g".to_string(), v)]
                .into_iter()
                .collect(),
            &sdxl,
        )
        .unwrap();
        let err = TextualInversion::open(&sdxl).unwrap_err().to_string();
        assert!(err.contains("SDXL"), "{err}");

        let nan = Tensor::new(&[[1.0f32, f32::NAN]], &candle_core::Device::Cpu).unwrap();
        let bad = dir.join("bad.safetensors");
        candle_core::safetensors::save(
            &[("emb_params".to_string(), nan)].into_iter().collect(),
            &bad,
        )
        .unwrap();
        let err = TextualInversion::open(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("non-finite"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
