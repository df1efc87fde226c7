#![doc = include_str!("../README.md")]

pub mod batch;
pub mod components;
pub mod conditioning;
pub mod denoise;
pub mod error;
pub mod grid;
pub mod image;
pub mod infotext;
mod lora_branches;
pub mod model_source;
pub mod png;
pub mod preview;
pub mod prompt;
pub mod random_model;
pub mod request;
pub mod rng;
pub mod stable_diffusion;
pub mod taesd;
#[cfg(test)]
mod test_util;
pub mod textual_inversion;
pub mod walk;

pub use components::{Autoencoder, Denoiser, TextEncoder};
pub use denoise::StepProgress;
pub use error::{Error, Result};
pub use infotext::Infotext;
pub use model_source::ModelSource;
pub use request::{Emphasis, GenerateRequest, GuidanceRule, ImageInput};
pub use rng::{randn_per_sample, NormalKernel, TorchRng};
/// The kernels crate, for binaries that opt into its caching allocator or report the ISA.
pub use sd_checkpoint as checkpoint;
pub use sd_kernels;
pub use stable_diffusion::{Generated, Parts, StableDiffusion, StableDiffusionBuilder, Timings};
pub use taesd::{LatentDecoder, Taesd};

// The crates whose types appear in this crate's API, for users of the facade.
pub use ::image as image_crate;
pub use candle_core;
pub use sd_prompt;
pub use sd_scheduler;
pub use sd_tokenize;
pub use sd_unet::{AttentionMode, UNet2DConditionConfig};
