#![doc = include_str!("../README.md")]

pub mod attention;
pub mod config;
pub mod down_block;
pub mod error;
pub mod layers;
pub mod mid_block;
pub mod resnet;
pub mod sampling;
pub mod timestep_embedding;
pub mod transformer;
pub mod unet;
pub mod up_block;
mod weights;

pub use attention::AttentionMode;
pub use config::{Activation, DownBlockType, PerBlock, UNet2DConditionConfig, UpBlockType};
pub use error::{Error, Result};
pub use unet::UNet2DConditionModel;
