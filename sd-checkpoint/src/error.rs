//! The crate's one error type.

/// What can go wrong reading, mixing or writing weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (candle's message).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

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
