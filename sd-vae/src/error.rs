//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong building or running the autoencoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The config file could not be read.
    #[error("cannot read VAE config {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The config file is not a valid diffusers `AutoencoderKL` config.
    #[error("cannot parse VAE config {path}: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },

    /// The config asks for something this crate does not implement, or is inconsistent.
    #[error("unsupported VAE config: {field} = {value} ({reason})")]
    UnsupportedConfig {
        /// The config key.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file could not be opened or memory-mapped.
    #[error("cannot open weights file {path}: {source}")]
    WeightFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: candle_core::Error,
    },

    /// The model needs a tensor that none of the weight files holds.
    #[error("tensor `{name}` is missing from {}", display_paths(.files))]
    MissingTensor {
        /// The tensor's diffusers name, e.g. `decoder.conv_in.weight`.
        name: String,
        /// The files that were searched.
        files: Vec<PathBuf>,
    },

    /// A tensor in a weights file has the wrong shape for the config.
    #[error("tensor `{name}` in {file} has shape {found:?}, the config needs {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape on disk.
        found: Vec<usize>,
    },

    /// A tensor in a weights file has a dtype that cannot hold weights (not a float type).
    #[error("tensor `{name}` in {file} has unsupported dtype {dtype}")]
    TensorDtype {
        /// The tensor's name.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The dtype on disk, as safetensors names it.
        dtype: String,
    },

    /// The latents given to `decode` have the wrong shape.
    #[error("latents must be [batch, {channels}, h, w] with h, w >= 1; got {shape:?}")]
    LatentShape {
        /// `latent_channels` of the config.
        channels: usize,
        /// The shape given.
        shape: Vec<usize>,
    },

    /// The image given to `encode` has the wrong shape.
    #[error(
        "images must be [batch, {channels}, H, W] with H and W positive multiples of {multiple}; got {shape:?}"
    )]
    ImageShape {
        /// `in_channels` of the config.
        channels: usize,
        /// The factor by which the encoder downsamples (8 for Stable Diffusion).
        multiple: usize,
        /// The shape given.
        shape: Vec<usize>,
    },

    /// The noise given to `DiagonalGaussian::sample` does not match the distribution's shape.
    #[error("noise has shape {got:?}, the latent distribution has shape {expected:?}")]
    NoiseShape {
        /// The distribution's shape.
        expected: Vec<usize>,
        /// The noise's shape.
        got: Vec<usize>,
    },

    /// The tiny autoencoder was loaded without the half a call needs (e.g. a TAESD decoder
    /// file alone cannot encode).
    #[error("this TAESD has no {half} weights")]
    MissingHalf {
        /// `encoder` or `decoder`.
        half: &'static str,
    },

    /// Tile sizes that cannot tile anything.
    #[error("invalid tile options: {0}")]
    TileOptions(String),
}

fn display_paths(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
