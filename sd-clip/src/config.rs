//! `CLIPTextConfig`: the shape of the text encoder, read from `text_encoder/config.json`.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::{Activation, Error, Result};

/// transformers' `CLIPTextConfig` (the fields this model uses; unknown keys are ignored).
///
/// A key missing from the JSON takes transformers' own default (the openai ViT-B/32 text tower,
/// as `CLIPTextConfig()` does), while [`Default`] is Stable Diffusion 1.5's text encoder
/// (ViT-L/14). Real SD configs name every field, so the two never meet in practice.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Number of token embeddings (49408 for every SD model).
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Width C of the residual stream (768 for SD 1.x, 1024 for SD 2.x).
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    /// Number of encoder layers (12 for SD 1.x, 23 for SD 2.x).
    #[serde(default = "defaults::num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    /// Length of the position embedding table, the longest sequence (77).
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// MLP activation (`quick_gelu` for SD 1.x, `gelu` for SD 2.x).
    #[serde(default)]
    pub hidden_act: Activation,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_eps", deserialize_with = "null_as_eps")]
    pub layer_norm_eps: f64,
    /// Width of the text projection of `CLIPTextModelWithProjection`; unused by this model.
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: Option<usize>,
    /// Padding id the config records (the tokenizer decides what padding really is).
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    /// Start-of-text id the config records.
    #[serde(default = "defaults::bos_token_id")]
    pub bos_token_id: Option<u32>,
    /// End-of-text id the config records (the first one when the JSON holds a list).
    #[serde(default = "defaults::eos_token_id", deserialize_with = "one_or_first")]
    pub eos_token_id: Option<u32>,
}

/// transformers 5.23 `CLIPTextConfig` defaults.
mod defaults {
    pub fn vocab_size() -> usize {
        49408
    }
    pub fn hidden_size() -> usize {
        512
    }
    pub fn intermediate_size() -> usize {
        2048
    }
    pub fn num_hidden_layers() -> usize {
        12
    }
    pub fn num_attention_heads() -> usize {
        8
    }
    pub fn max_position_embeddings() -> usize {
        77
    }
    pub fn layer_norm_eps() -> f64 {
        1e-5
    }
    pub fn projection_dim() -> Option<usize> {
        Some(512)
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(1)
    }
    pub fn bos_token_id() -> Option<u32> {
        Some(49406)
    }
    pub fn eos_token_id() -> Option<u32> {
        Some(49407)
    }
}

fn null_as_eps<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or_else(defaults::layer_norm_eps))
}

fn one_or_first<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(id)) => Some(id),
        Some(OneOrMany::Many(ids)) => ids.first().copied(),
    })
}

impl Default for ClipTextConfig {
    /// Stable Diffusion 1.5's `text_encoder/config.json` (openai CLIP ViT-L/14 text tower).
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: Some(768),
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            eos_token_id: Some(2),
        }
    }
}

impl ClipTextConfig {
    /// Stable Diffusion 1.x's text encoder, the same as [`Default`].
    pub fn sd1() -> Self {
        Self::default()
    }

    /// Stable Diffusion 2.x's text encoder (OpenCLIP ViT-H/14 text tower as transformers holds
    /// it: 23 of its 24 layers, exact gelu), from `stabilityai/stable-diffusion-2-1`.
    pub fn sd2() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: Activation::Gelu,
            projection_dim: Some(512),
            ..Self::default()
        }
    }

    /// Reads and checks a `config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the sizes describe a model that can be built.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be positive")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::InvalidConfig(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "layer_norm_eps {} must be a positive number",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}
