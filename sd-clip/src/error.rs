//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when loading or running the text encoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read CLIP text config {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not a valid `CLIPTextConfig` JSON.
    #[error("cannot parse CLIP text config {}: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The config describes no valid model (e.g. `hidden_size` not a multiple of the heads).
    #[error("invalid CLIP text config: {0}")]
    InvalidConfig(String),
    /// A weights file could not be opened or is not a safetensors file.
    #[error("cannot open weights file {}: {source}", path.display())]
    WeightsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: candle_core::Error,
    },
    /// A tensor the model needs is in none of the files.
    #[error("tensor `{name}` not found in {}", list_paths(files))]
    MissingTensor {
        /// Full tensor name, prefix included.
        name: String,
        /// The files searched.
        files: Vec<PathBuf>,
    },
    /// A tensor has the wrong shape for the config.
    #[error("tensor `{name}` in {} has shape {got:?}, the config needs {expected:?}", file.display())]
    ShapeMismatch {
        /// Full tensor name, prefix included.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored in a dtype that is not a float (f64, f32, f16, bf16).
    #[error("tensor `{name}` in {} has dtype {dtype}, expected f32, f16, bf16 or f64", file.display())]
    UnsupportedDtype {
        /// Full tensor name, prefix included.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The dtype in the file, as safetensors names it.
        dtype: String,
    },
    /// Input ids are not a `[batch, seq_len]` tensor of u32 or i64.
    #[error("input ids must be a [batch, seq_len] tensor of u32 or i64, got {dtype:?} {shape:?}")]
    InputIds {
        /// The dtype given.
        dtype: candle_core::DType,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A token id is not in the vocabulary.
    #[error("token id {id} at [{batch}, {position}] is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutOfRange {
        /// The offending id.
        id: i64,
        /// Row of the batch.
        batch: usize,
        /// Position in the sequence.
        position: usize,
        /// The config's vocabulary size.
        vocab_size: usize,
    },
    /// The sequence is longer than the position embedding table (or empty).
    #[error("sequence length {seq_len} is not in 1..={max_position_embeddings}")]
    SequenceLength {
        /// Length given.
        seq_len: usize,
        /// The config's `max_position_embeddings`.
        max_position_embeddings: usize,
    },
    /// `clip_skip` is outside `1..=num_hidden_layers`.
    #[error("clip_skip {clip_skip} is not in 1..={num_layers} (1 = last layer, 2 = penultimate)")]
    ClipSkip {
        /// Value given.
        clip_skip: usize,
        /// The model's number of layers.
        num_layers: usize,
    },
    /// `encode_windows` was given no windows, or windows of different lengths.
    #[error("windows: {0}")]
    Windows(String),
    /// An error from candle while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn list_paths(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "(no files)".to_owned();
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    pub(crate) fn weights_file(path: &Path, source: candle_core::Error) -> Self {
        Self::WeightsFile {
            path: path.to_owned(),
            source,
        }
    }
}
