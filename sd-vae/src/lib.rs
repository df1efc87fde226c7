#![doc = include_str!("../README.md")]

mod activation;
mod attention;
mod autoencoder;
mod config;
mod conv;
mod decoder;
mod down_block;
mod encoder;
mod error;
mod gaussian;
mod group_norm;
mod loader;
mod mid_block;
mod resnet;
mod tiling;
mod tiny_autoencoder;
mod tiny_config;
mod up_block;
mod upcast;

pub use activation::Activation;
pub use attention::MidAttention;
pub use autoencoder::{AutoencoderKl, Decoded, Encoded};
pub use config::{AutoencoderKlConfig, DOWN_ENCODER_BLOCK, UP_DECODER_BLOCK};
pub use conv::Conv2d;
pub use decoder::Decoder;
pub use down_block::DownEncoderBlock;
pub use encoder::Encoder;
pub use error::{Error, Result};
pub use gaussian::DiagonalGaussian;
pub use group_norm::GroupNorm;
pub use mid_block::MidBlock;
pub use resnet::{ResnetBlock, VAE_NORM_EPS};
pub use tiling::TileOptions;
pub use tiny_autoencoder::AutoencoderTiny;
pub use tiny_config::AutoencoderTinyConfig;
pub use up_block::UpDecoderBlock;
