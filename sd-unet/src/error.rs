//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong when configuring, loading or running the UNet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `config.json` could not be read or parsed.
    #[error("cannot read UNet config {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (I/O or JSON).
        reason: String,
    },
    /// The config asks for a feature this crate does not implement (e.g. an SDXL-only knob).
    #[error("unsupported UNet config: {key} = {value}")]
    UnsupportedConfig {
        /// The config key.
        key: &'static str,
        /// Its value, as written in the config.
        value: String,
    },
    /// The config is inconsistent (list lengths, channel counts not divisible, ...).
    #[error("invalid UNet config: {0}")]
    InvalidConfig(String),
    /// A weight file could not be opened or memory-mapped.
    #[error("cannot open weight file {path}: {reason}")]
    WeightFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A tensor the model needs is in none of the weight files.
    #[error("missing tensor {tensor} (looked in {files:?})")]
    MissingTensor {
        /// diffusers name of the tensor.
        tensor: String,
        /// The files searched.
        files: Vec<PathBuf>,
    },
    /// A tensor has a shape other than the config implies.
    #[error("tensor {tensor} in {file} has shape {got:?}, the config implies {expected:?}")]
    TensorShape {
        /// diffusers name of the tensor.
        tensor: String,
        /// The file it came from.
        file: PathBuf,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored with a dtype that is not a float type.
    #[error("tensor {tensor} in {file} has dtype {dtype}, expected a float type")]
    TensorDtype {
        /// diffusers name of the tensor.
        tensor: String,
        /// The file it came from.
        file: PathBuf,
        /// The dtype found, as candle names it.
        dtype: String,
    },
    /// `sample` is not `[B, in_channels, h, w]`.
    #[error("sample must be [B, {expected_channels}, h, w], got {got:?}")]
    SampleShape {
        /// `in_channels` of the config.
        expected_channels: usize,
        /// The shape passed.
        got: Vec<usize>,
    },
    /// `encoder_hidden_states` is not `[B, L, cross_attention_dim]` with the sample's batch.
    #[error("encoder_hidden_states must be [{batch}, L, {expected_dim}], got {got:?}")]
    EncoderHiddenStatesShape {
        /// Batch size of the sample.
        batch: usize,
        /// `cross_attention_dim` of the config.
        expected_dim: usize,
        /// The shape passed.
        got: Vec<usize>,
    },
    /// Per-token weights are not `[B, L]` matching `encoder_hidden_states`.
    #[error("token weights must be [{batch}, {tokens}], got {got:?}")]
    TokenWeightsShape {
        /// Batch size of the sample.
        batch: usize,
        /// Sequence length of `encoder_hidden_states`.
        tokens: usize,
        /// The shape passed.
        got: Vec<usize>,
    },
    /// The timestep is NaN or infinite.
    #[error("timestep must be finite, got {0}")]
    Timestep(f64),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
