//! The crate's one error type.

/// Everything that can go wrong in `sd-pipeline`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A random tensor was asked for in a dtype the generator cannot produce.
    #[error("random tensors can be drawn as f32, f16, bf16 or f64, not {0:?}")]
    UnsupportedDType(candle_core::DType),

    /// A per-image generator list does not match the batch it should fill.
    #[error("{what}: expected {expected}, got {got}")]
    BatchMismatch {
        /// What was being matched (e.g. "seeds for a batch").
        what: &'static str,
        /// The count that was needed.
        expected: usize,
        /// The count that was given.
        got: usize,
    },

    /// The prompt's emphasis could not be read (its weights overflow).
    #[error("prompt: {0}")]
    Prompt(#[from] sd_prompt::Error),

    /// The tokenizer failed to load or to tokenize.
    #[error("tokenizer: {0}")]
    Tokenize(#[from] sd_tokenize::Error),

    /// A weights file or model folder could not be read, understood or written.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Two models cannot be mixed: a tensor is missing from one or differs in shape.
    #[error("model mixing: {0}")]
    Merge(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
