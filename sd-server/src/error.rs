//! [`Error`]: why a server could not start (bad folders, a model that does not load, an address
//! already in use). Errors of single requests are [`ApiError`](crate::ApiError)s.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that stops `sd serve` from starting or from serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--models-dir` is missing, unreadable, or holds no model.
    #[error("--models-dir {}: {message}", path.display())]
    ModelsDir {
        /// The folder given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// `--model` names no model of `--models-dir`.
    #[error("--model {name}: {message}")]
    UnknownModel {
        /// The name given.
        name: String,
        /// What is wrong, with the names there are.
        message: String,
    },

    /// `--lora-dir` is not a readable folder.
    #[error("--lora-dir {}: {message}", path.display())]
    LoraDir {
        /// The folder given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The model (or a LoRA file) failed to load.
    #[error("loading model {name}: {error}")]
    Load {
        /// The model's name in `--models-dir`.
        name: String,
        /// The pipeline's error, naming the file at fault.
        error: sd_pipeline::Error,
    },

    /// The listening address cannot be bound (in use, not local, no permission).
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The HTTP server or its runtime failed while serving.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
