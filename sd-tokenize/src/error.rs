//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tokenizer file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A tokenizer file was read but its content is not what it should be.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A folder holds none of the tokenizer files we know.
    #[error("{dir}: no tokenizer files (expected vocab.json + merges.txt, or tokenizer.json)")]
    NoTokenizerFiles {
        /// The folder.
        dir: PathBuf,
    },
    /// The vocabulary and merges could not be made into a BPE model.
    #[error("cannot build the BPE model from {source_name}: {reason}")]
    Bpe {
        /// Where the vocabulary came from (a file name, or "bundled vocabulary").
        source_name: String,
        /// The `tokenizers` crate's message.
        reason: String,
    },
    /// The BPE model failed on a word (does not happen with a complete byte-level vocabulary).
    #[error("BPE failed on {word:?}: {reason}")]
    Tokenize {
        /// The byte-level word.
        word: String,
        /// The `tokenizers` crate's message.
        reason: String,
    },
}

/// This crate's `Result`.
pub type Result<T> = std::result::Result<T, Error>;
