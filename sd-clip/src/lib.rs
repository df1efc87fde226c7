#![doc = include_str!("../README.md")]

mod activation;
mod attention;
mod config;
mod embeddings;
mod encoder_layer;
mod error;
mod layer_norm;
mod mlp;
mod text_model;
mod weights;

pub use activation::Activation;
pub use attention::Attention;
pub use config::ClipTextConfig;
pub use embeddings::Embeddings;
pub use encoder_layer::EncoderLayer;
pub use error::{Error, Result};
pub use layer_norm::LayerNorm;
pub use mlp::Mlp;
pub use text_model::ClipTextModel;
pub use weights::{expected_tensors, WeightLayout};
