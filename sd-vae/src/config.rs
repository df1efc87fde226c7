//! `AutoencoderKlConfig`: diffusers' `vae/config.json`.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::activation::Activation;
use crate::error::{Error, Result};

/// The only down block type of the Stable Diffusion VAE.
pub const DOWN_ENCODER_BLOCK: &str = "DownEncoderBlock2D";
/// The only up block type of the Stable Diffusion VAE.
pub const UP_DECODER_BLOCK: &str = "UpDecoderBlock2D";

/// diffusers' `AutoencoderKL` config.
///
/// Deserializing takes a diffusers `vae/config.json`: unknown keys are ignored and missing keys
/// take diffusers' own defaults (a one-block, 64-channel model). `Default` is instead SD 1.5's
/// real VAE (`stable-diffusion-v1-5/vae/config.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKlConfig {
    /// Image channels in (3).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out (3).
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Encoder block types, one per entry of `block_out_channels`.
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    /// Decoder block types, one per entry of `block_out_channels`.
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    /// Channels of each resolution level, from the image side inwards.
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (the decoder has one more per block).
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Activation name (`silu`).
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Channels of the latent space (4).
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// Groups of every group norm.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Image size the model was trained at; the default tile size. diffusers also accepts a
    /// `[h, w]` list here; its tiling code then uses the first entry, and so do we.
    #[serde(default = "default_sample_size", deserialize_with = "int_or_first")]
    pub sample_size: usize,
    /// Latents are multiplied by this after encoding and divided by it before decoding
    /// (LDM paper, sections 4.3.2 and D.1). 0.18215 for SD 1.x / 2.x.
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// Subtracted from latents before scaling (SD 3 / Flux VAEs; `null` for SD 1.x / 2.x).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Per-channel latent means (SDXL-era VAEs only).
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent standard deviations (SDXL-era VAEs only).
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    /// diffusers runs this VAE in f32 even in f16 pipelines when set.
    #[serde(default = "yes")]
    pub force_upcast: bool,
    /// Whether the 1x1 `quant_conv` follows the encoder.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// Whether the 1x1 `post_quant_conv` precedes the decoder.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Whether the encoder's and decoder's mid blocks have their self-attention.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

/// Reads a JSON config file into `T`; errors name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
        path: path.to_path_buf(),
        source,
    })
}

impl Default for AutoencoderKlConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DOWN_ENCODER_BLOCK.to_string(); 4],
            up_block_types: vec![UP_DECODER_BLOCK.to_string(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".to_string(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 512,
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKlConfig {
    /// Reads a diffusers `vae/config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// How many times the encoder halves the image: one less than the number of blocks.
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks that this crate can build the model the config describes.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: String, reason: &str| {
            Err(Error::UnsupportedConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return bad(
                "block_out_channels",
                "[]".into(),
                "needs at least one block",
            );
        }
        if self.down_block_types.len() != blocks {
            return bad(
                "down_block_types",
                format!("{:?}", self.down_block_types),
                "needs one entry per block_out_channels entry",
            );
        }
        if self.up_block_types.len() != blocks {
            return bad(
                "up_block_types",
                format!("{:?}", self.up_block_types),
                "needs one entry per block_out_channels entry",
            );
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != DOWN_ENCODER_BLOCK)
        {
            return bad(
                "down_block_types",
                t.clone(),
                "only DownEncoderBlock2D is supported",
            );
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != UP_DECODER_BLOCK) {
            return bad(
                "up_block_types",
                t.clone(),
                "only UpDecoderBlock2D is supported",
            );
        }
        Activation::parse(&self.act_fn)?;
        let groups = self.norm_num_groups;
        if groups == 0 {
            return bad("norm_num_groups", "0".into(), "must be positive");
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c == 0 || *c % groups != 0)
        {
            return bad(
                "norm_num_groups",
                groups.to_string(),
                &format!("must divide every block_out_channels entry, not {c}"),
            );
        }
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
        ] {
            if v == 0 {
                return bad(field, "0".into(), "must be positive");
            }
        }
        Ok(())
    }
}

fn int_or_first<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrList {
        Int(usize),
        List(Vec<usize>),
    }
    match IntOrList::deserialize(d)? {
        IntOrList::Int(v) => Ok(v),
        IntOrList::List(v) => v
            .first()
            .copied()
            .ok_or_else(|| serde::de::Error::custom("sample_size list is empty")),
    }
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".to_string()
}
fn default_sample_size() -> usize {
    32
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_down_blocks() -> Vec<String> {
    vec![DOWN_ENCODER_BLOCK.to_string()]
}
fn default_up_blocks() -> Vec<String> {
    vec![UP_DECODER_BLOCK.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_diffusers_defaults() {
        let c: AutoencoderKlConfig = serde_json::from_str(r#"{"unknown_key": 1}"#).unwrap();
        assert_eq!(c.block_out_channels, vec![64]);
        assert_eq!(c.layers_per_block, 1);
        assert_eq!(c.sample_size, 32);
        assert_eq!(c.down_block_types, vec![DOWN_ENCODER_BLOCK]);
        assert!(c.use_quant_conv && c.mid_block_add_attention);
        assert_eq!(c.shift_factor, None);
    }

    #[test]
    fn sample_size_may_be_a_list() {
        let c: AutoencoderKlConfig =
            serde_json::from_str(r#"{"sample_size": [768, 512]}"#).unwrap();
        assert_eq!(c.sample_size, 768);
    }

    #[test]
    fn default_is_sd15_and_valid() {
        let c = AutoencoderKlConfig::default();
        c.validate().unwrap();
        assert_eq!(c.downsample_factor(), 8);
        assert_eq!(c.block_out_channels, vec![128, 256, 512, 512]);
    }

    #[test]
    fn unsupported_values_are_named() {
        let c = AutoencoderKlConfig {
            up_block_types: vec!["AttnUpDecoderBlock2D".into(); 4],
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("up_block_types") && err.contains("AttnUpDecoderBlock2D"),
            "{err}"
        );
        let c = AutoencoderKlConfig {
            norm_num_groups: 24,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::UnsupportedConfig {
                field: "norm_num_groups",
                ..
            })
        ));
    }
}
