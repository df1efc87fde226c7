//! `AutoencoderTinyConfig`: diffusers' `config.json` for TAESD, the tiny autoencoder.

use std::path::Path;

use serde::Deserialize;

use crate::activation::Activation;
use crate::error::{Error, Result};

/// diffusers' `AutoencoderTiny` config. Missing keys take diffusers' defaults, which are those of
/// the published TAESD for SD 1.x / 2.x (`madebyollin/taesd`): 64 channels everywhere, encoder
/// blocks (1, 3, 3, 3), decoder blocks (3, 3, 3, 1), ReLU, nearest ×2 upsampling, 4 latent
/// channels and a scaling factor of 1 (TAESD works on the latents the UNet sees).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AutoencoderTinyConfig {
    /// Image channels in (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Channels of each encoder level; every entry must be the same, as in diffusers' layers.
    pub encoder_block_out_channels: Vec<usize>,
    /// Channels of each decoder level; every entry must be the same.
    pub decoder_block_out_channels: Vec<usize>,
    /// The activation inside the blocks (`relu`); a block's output always goes through ReLU.
    pub act_fn: String,
    /// How the decoder upsamples (`nearest`, the only mode TAESD uses).
    pub upsample_fn: String,
    /// Channels of the latent space (4).
    pub latent_channels: usize,
    /// Factor of each decoder upsampling (2).
    pub upsampling_scaling_factor: usize,
    /// Residual blocks per encoder level.
    pub num_encoder_blocks: Vec<usize>,
    /// Residual blocks per decoder level.
    pub num_decoder_blocks: Vec<usize>,
    /// Latents are divided by `2 * latent_magnitude` to store them as 8-bit images (3).
    pub latent_magnitude: f64,
    /// ... and shifted by this (0.5).
    pub latent_shift: f64,
    /// Latents are multiplied by this after encoding and divided before decoding (1).
    pub scaling_factor: f64,
}

impl Default for AutoencoderTinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: "relu".to_string(),
            upsample_fn: "nearest".to_string(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            scaling_factor: 1.0,
        }
    }
}

impl AutoencoderTinyConfig {
    /// Reads a diffusers `AutoencoderTiny` `config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        crate::config::read_json(path.as_ref())
    }

    /// How many times the encoder halves the image (and the decoder doubles it).
    pub fn downsample_factor(&self) -> usize {
        self.upsampling_scaling_factor
            .pow(self.num_decoder_blocks.len().saturating_sub(1) as u32)
    }

    /// Checks that the config describes a model this crate (and diffusers) can build.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: String, reason: &str| {
            Err(Error::UnsupportedConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        for (field, channels, blocks) in [
            (
                "encoder_block_out_channels",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder_block_out_channels",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() || channels.len() != blocks.len() {
                return bad(
                    field,
                    format!("{channels:?}"),
                    &format!("needs one entry per block count ({blocks:?})"),
                );
            }
            if channels[0] == 0 || channels.iter().any(|c| *c != channels[0]) {
                return bad(
                    field,
                    format!("{channels:?}"),
                    "every level must have the same positive width (the layers chain them)",
                );
            }
        }
        if self.num_encoder_blocks.len() != self.num_decoder_blocks.len() {
            return bad(
                "num_encoder_blocks",
                format!("{:?}", self.num_encoder_blocks),
                "the encoder and decoder need as many levels",
            );
        }
        Activation::parse(&self.act_fn)?;
        if self.upsample_fn != "nearest" {
            return bad(
                "upsample_fn",
                self.upsample_fn.clone(),
                "only nearest is supported",
            );
        }
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("upsampling_scaling_factor", self.upsampling_scaling_factor),
        ] {
            if v == 0 {
                return bad(field, "0".into(), "must be positive");
            }
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return bad(
                "scaling_factor",
                self.scaling_factor.to_string(),
                "must be a positive number",
            );
        }
        Ok(())
    }
}
