//! `UNet2DConditionConfig`: diffusers' `unet/config.json`, and how it resolves per block.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A config value given once for every block or as one value per down block.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per down block (up blocks use the list reversed).
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    /// The value for every down block, checked against the number of blocks.
    fn resolve(&self, key: &str, blocks: usize) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; blocks]),
            PerBlock::Each(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::InvalidConfig(format!(
                "{key} has {} entries for {blocks} down blocks",
                v.len()
            ))),
        }
    }
}

/// The activation named by `act_fn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// x * sigmoid(x) (every SD 1.x / 2.x model).
    Silu,
    /// diffusers' alias of silu.
    Swish,
    /// x * tanh(softplus(x)).
    Mish,
    /// The exact (erf) GELU.
    Gelu,
}

impl Activation {
    /// Whether this is SiLU (which group norms fuse into their output pass).
    pub(crate) fn is_silu(self) -> bool {
        matches!(self, Activation::Silu | Activation::Swish)
    }

    pub(crate) fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::Silu | Activation::Swish => sd_kernels::nn::silu(x),
            Activation::Mish => x * x.exp()?.affine(1.0, 1.0)?.log()?.tanh()?,
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

/// A down block kind in `down_block_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnDownBlock2D,
    /// Resnets only.
    DownBlock2D,
}

/// An up block kind in `up_block_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnUpBlock2D,
    /// Resnets only.
    UpBlock2D,
}

/// diffusers' `UNet2DConditionModel` config. Keys missing from a file take diffusers' own
/// defaults; [`Default`] is Stable Diffusion 1.5's `unet/config.json`. Keys for features this
/// crate does not implement (SDXL's added embeddings, class embeddings, ...) are read and
/// rejected by [`validate`](Self::validate) when set to anything but their inert value.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default = "UNet2DConditionConfig::diffusers_defaults")]
pub struct UNet2DConditionConfig {
    /// Latent height/width the model was trained on (informational).
    pub sample_size: Option<usize>,
    /// Latent channels in (4; 9 for inpainting: latent, mask, masked-image latent).
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Map the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// Put cosines before sines in the timestep embedding.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the timestep embedding.
    pub freq_shift: f64,
    /// Down block kinds, outermost first.
    pub down_block_types: Vec<DownBlockType>,
    /// Up block kinds, innermost first.
    pub up_block_types: Vec<UpBlockType>,
    /// Output channels of each down block.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Padding of the stride-2 downsampling convolution (0 pads right/bottom by one instead).
    pub downsample_padding: usize,
    /// Output divisor of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// Activation of resnets and the time embedding.
    pub act_fn: Activation,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' and the output's group norms.
    pub norm_eps: f64,
    /// Width of the text encoder's hidden states.
    pub cross_attention_dim: usize,
    /// diffusers' naming quirk: for SD this is the number of heads (see [`heads`](Self::heads)).
    pub attention_head_dim: PerBlock<usize>,
    /// Number of heads, when set (diffusers 0.42 refuses configs that set it).
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Linear instead of 1x1-convolution projections around the transformers (SD 2.x).
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 even when the model runs in f16/bf16 (SD 2.1).
    pub upcast_attention: bool,
    /// Transformer blocks per transformer, per down block.
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Must be `"UNetMidBlock2DCrossAttn"`.
    pub mid_block_type: Option<String>,
    /// Must be `"default"`.
    pub resnet_time_scale_shift: String,
    /// Must be false (or all false).
    pub only_cross_attention: Value,
    /// Must be false.
    pub dual_cross_attention: bool,
    /// Must be null.
    pub class_embed_type: Value,
    /// Must be null.
    pub num_class_embeds: Value,
    /// Must be null.
    pub addition_embed_type: Value,
    /// Must be null.
    pub encoder_hid_dim: Value,
    /// Must be null.
    pub time_cond_proj_dim: Value,
    /// Must be `"positional"`.
    pub time_embedding_type: String,
    /// Must be null.
    pub time_embedding_dim: Value,
    /// Must be null.
    pub time_embedding_act_fn: Value,
    /// Must be null.
    pub timestep_post_act: Value,
    /// Must be 3.
    pub conv_in_kernel: usize,
    /// Must be 3.
    pub conv_out_kernel: usize,
    /// Must be `"default"`.
    pub attention_type: String,
    /// Must be null.
    pub reverse_transformer_layers_per_block: Value,
    /// Must be false.
    pub resnet_skip_time_act: bool,
    /// Must be 1.
    pub resnet_out_scale_factor: f64,
}

impl Default for UNet2DConditionConfig {
    /// Stable Diffusion 1.5's `unet/config.json`.
    fn default() -> Self {
        Self {
            sample_size: Some(64),
            cross_attention_dim: 768,
            ..Self::diffusers_defaults()
        }
    }
}

impl UNet2DConditionConfig {
    /// diffusers' constructor defaults (what a key missing from `config.json` means).
    pub fn diffusers_defaults() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            up_block_types: vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            transformer_layers_per_block: PerBlock::One(1),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            resnet_time_scale_shift: "default".into(),
            only_cross_attention: Value::Bool(false),
            dual_cross_attention: false,
            class_embed_type: Value::Null,
            num_class_embeds: Value::Null,
            addition_embed_type: Value::Null,
            encoder_hid_dim: Value::Null,
            time_cond_proj_dim: Value::Null,
            time_embedding_type: "positional".into(),
            time_embedding_dim: Value::Null,
            time_embedding_act_fn: Value::Null,
            timestep_post_act: Value::Null,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
            reverse_transformer_layers_per_block: Value::Null,
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
        }
    }

    /// Reads and validates a diffusers `unet/config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file_error = |reason: String| Error::ConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the config describes a model this crate implements, consistently.
    pub fn validate(&self) -> Result<()> {
        let unsupported =
            |key: &'static str, value: String| Err(Error::UnsupportedConfig { key, value });
        let nulls = [
            ("class_embed_type", &self.class_embed_type),
            ("num_class_embeds", &self.num_class_embeds),
            ("addition_embed_type", &self.addition_embed_type),
            ("encoder_hid_dim", &self.encoder_hid_dim),
            ("time_cond_proj_dim", &self.time_cond_proj_dim),
            ("time_embedding_dim", &self.time_embedding_dim),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
            (
                "reverse_transformer_layers_per_block",
                &self.reverse_transformer_layers_per_block,
            ),
        ];
        for (key, value) in nulls {
            if !value.is_null() {
                return unsupported(key, value.to_string());
            }
        }
        let only_cross = match &self.only_cross_attention {
            Value::Bool(b) => *b,
            Value::Array(v) => v.iter().any(|x| x != &Value::Bool(false)),
            _ => true,
        };
        if only_cross {
            return unsupported(
                "only_cross_attention",
                self.only_cross_attention.to_string(),
            );
        }
        if self.dual_cross_attention {
            return unsupported("dual_cross_attention", "true".into());
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return unsupported("mid_block_type", format!("{:?}", self.mid_block_type));
        }
        let strings = [
            (
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "default",
            ),
            (
                "time_embedding_type",
                &self.time_embedding_type,
                "positional",
            ),
            ("attention_type", &self.attention_type, "default"),
        ];
        for (key, value, wanted) in strings {
            if value != wanted {
                return unsupported(key, value.clone());
            }
        }
        if self.conv_in_kernel != 3 {
            return unsupported("conv_in_kernel", self.conv_in_kernel.to_string());
        }
        if self.conv_out_kernel != 3 {
            return unsupported("conv_out_kernel", self.conv_out_kernel.to_string());
        }
        if self.resnet_skip_time_act {
            return unsupported("resnet_skip_time_act", "true".into());
        }
        if self.resnet_out_scale_factor != 1.0 {
            return unsupported(
                "resnet_out_scale_factor",
                self.resnet_out_scale_factor.to_string(),
            );
        }
        self.check_shapes()
    }

    fn check_shapes(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        let n = self.block_out_channels.len();
        if n == 0 {
            return invalid("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return invalid(format!(
                "{} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.layers_per_block == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return invalid(
                "layers_per_block, in_channels and out_channels must be positive".into(),
            );
        }
        let groups = self.norm_num_groups;
        for &c in &self.block_out_channels {
            if groups == 0 || c % groups != 0 {
                return invalid(format!(
                    "norm_num_groups {groups} does not divide {c} channels"
                ));
            }
        }
        let heads = self.heads()?;
        for (&c, &h) in self.block_out_channels.iter().zip(&heads) {
            if h == 0 || c % h != 0 {
                return invalid(format!("{h} attention heads do not divide {c} channels"));
            }
        }
        self.transformer_layers()?;
        Ok(())
    }

    /// Attention heads per down block, resolved as diffusers does: `num_attention_heads` when set,
    /// else `attention_head_dim` (which, for every SD config, holds the number of heads; the
    /// per-head width is then `channels / heads`).
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.resolve("num_attention_heads", n),
            None => self.attention_head_dim.resolve("attention_head_dim", n),
        }
    }

    /// Transformer depth per down block.
    pub fn transformer_layers(&self) -> Result<Vec<usize>> {
        self.transformer_layers_per_block.resolve(
            "transformer_layers_per_block",
            self.block_out_channels.len(),
        )
    }

    /// Width of the time embedding (4x the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// How many 2x downsamplings the model does (one per down block but the last).
    pub fn num_downsamplers(&self) -> usize {
        self.block_out_channels.len() - 1
    }
}
