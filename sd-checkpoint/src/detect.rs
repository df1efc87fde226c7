//! What a single file holds, read from its tensor names and shapes alone.
//!
//! Shapes give channels, block counts, layers, input channels (9 = inpainting), the
//! cross-attention width and whether the transformers project linearly (SD 2.x). They cannot
//! give attention head counts or norm group counts: those take Stable Diffusion's real values
//! (SD 1.x: 8 heads per block; SD 2.x: heads of width 64; CLIP heads of width 64; 32 groups),
//! which is right for every real SD 1.x / 2.x file and wrong for toy models, whose configs
//! must be passed in (see [`ConfigOverride`](super::ConfigOverride)).
//!
//! Like diffusers' `infer_diffusers_model_type`, an SD 2.x file that is not an inpainting
//! model is taken to be the 768-pixel v-prediction model (SD 2.0-base / 2.1-base files look
//! the same; say so with [`LoadOptions::prediction`](super::LoadOptions::prediction)).

use std::collections::{BTreeMap, BTreeSet};

use candle_core::DType;
use sd_clip::ClipTextConfig;
use sd_scheduler::{PredictionType, SchedulerConfig};
use sd_unet::{DownBlockType, PerBlock, UNet2DConditionConfig, UpBlockType};
use sd_vae::AutoencoderKlConfig;

use super::ldm_names::{TextEncoderLayout, CLIP_PREFIX, OPEN_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};

/// A tensor's stored dtype and shape, known without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type on disk.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
}

/// The Stable Diffusion generation a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: openai CLIP ViT-L/14 text encoder, 768-wide cross-attention.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder, 1024-wide cross-attention, linear projections.
    Sd2,
}

/// What kind of model a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelKind {
    /// SD 1.x or 2.x.
    pub family: Family,
    /// The UNet takes 9 input channels (latent, mask, masked-image latent).
    pub inpainting: bool,
    /// What the UNet predicts.
    pub prediction: PredictionType,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
        };
        let prediction = match self.prediction {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v-prediction",
            PredictionType::Sample => "sample",
        };
        let inpainting = if self.inpainting { " inpainting" } else { "" };
        write!(f, "{family}{inpainting}, {prediction}")
    }
}

/// Everything detected from one file's names and shapes.
#[derive(Debug, Clone)]
pub struct Detected {
    /// What the model is.
    pub kind: ModelKind,
    /// The UNet's config.
    pub unet: UNet2DConditionConfig,
    /// The VAE's config.
    pub vae: AutoencoderKlConfig,
    /// The text encoder's config.
    pub text_encoder: ClipTextConfig,
    /// How the text encoder is stored.
    pub text_layout: TextEncoderLayout,
    /// SD's scheduler defaults for this kind (the file has none).
    pub scheduler: SchedulerConfig,
}

type Infos = BTreeMap<String, TensorInfo>;

fn shape<'a>(infos: &'a Infos, key: &str) -> Result<&'a [usize], String> {
    infos
        .get(key)
        .map(|i| i.shape.as_slice())
        .ok_or_else(|| format!("missing tensor {key}"))
}

fn dim(infos: &Infos, key: &str, d: usize) -> Result<usize, String> {
    let s = shape(infos, key)?;
    s.get(d)
        .copied()
        .ok_or_else(|| format!("tensor {key} has shape {s:?}, expected more dimensions"))
}

/// Block indices from this on are refused: SD's UNets use 0..12, and a larger index would
/// build a UNet of thousands of layers from one hostile tensor name.
const MAX_BLOCK_INDEX: usize = 64;

/// Distinct values of the number right after `prefix` in keys that start with it.
fn indices(infos: &Infos, prefix: &str) -> BTreeSet<usize> {
    infos
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

fn has_prefix(infos: &Infos, prefix: &str) -> bool {
    infos
        .range(prefix.to_string()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

/// Reads the model's kind and configs from the single file's tensor infos (LDM names).
/// `prediction` overrides the guess for SD 2.x.
pub fn detect(infos: &Infos, prediction: Option<PredictionType>) -> Result<Detected, String> {
    let open_clip = has_prefix(infos, OPEN_CLIP_PREFIX);
    let mut unet = detect_unet(infos)?;
    let family =
        if open_clip || (!has_prefix(infos, CLIP_PREFIX) && unet.cross_attention_dim == 1024) {
            Family::Sd2
        } else {
            Family::Sd1
        };
    let inpainting = unet.in_channels == 9;
    let v_default = family == Family::Sd2 && !inpainting;
    let prediction = prediction.unwrap_or(if v_default {
        PredictionType::VPrediction
    } else {
        PredictionType::Epsilon
    });
    let channels = unet.block_out_channels.clone();
    if family == Family::Sd2 {
        // SD 2.x's head width is 64; diffusers' config stores the head counts [5, 10, 20, 20].
        unet.attention_head_dim =
            PerBlock::Each(channels.iter().map(|c| (c / 64).max(1)).collect());
        // stabilityai/stable-diffusion-2-1's unet config (what diffusers picks for such files).
        unet.upcast_attention = v_default;
    }
    unet.sample_size = Some(if v_default { 96 } else { 64 });
    let mut vae = detect_vae(infos)?;
    vae.sample_size = if v_default { 768 } else { 512 };
    let (text_encoder, text_layout) = if open_clip {
        detect_open_clip(infos)?
    } else {
        (detect_clip(infos)?, TextEncoderLayout::Clip)
    };
    let scheduler = SchedulerConfig {
        prediction_type: prediction,
        ..if prediction == PredictionType::VPrediction {
            SchedulerConfig::sd2_v_prediction()
        } else {
            SchedulerConfig::default()
        }
    };
    Ok(Detected {
        kind: ModelKind {
            family,
            inpainting,
            prediction,
        },
        unet,
        vae,
        text_encoder,
        text_layout,
        scheduler,
    })
}

fn detect_unet(infos: &Infos) -> Result<UNet2DConditionConfig, String> {
    let u = |s: &str| format!("{UNET_PREFIX}{s}");
    let conv_in = shape(infos, &u("input_blocks.0.0.weight"))
        .map_err(|_| "no UNet (model.diffusion_model.*) in the file")?;
    if conv_in.len() != 4 {
        return Err(format!(
            "the UNet's input convolution has shape {conv_in:?}"
        ));
    }
    let inputs = indices(infos, &u("input_blocks."));
    let total = match inputs.iter().max() {
        // SD's UNets have 12 input blocks; an index this far out is a corrupt name.
        Some(&m) if m >= MAX_BLOCK_INDEX => {
            return Err(format!("the UNet's input block index {m} is out of range"))
        }
        Some(&m) => m + 1,
        None => 0,
    };
    let downsamplers: Vec<usize> = inputs
        .iter()
        .copied()
        .filter(|i| infos.contains_key(&u(&format!("input_blocks.{i}.0.op.weight"))))
        .collect();
    let per = match downsamplers.first() {
        Some(first) => first.saturating_sub(1),
        None => total.saturating_sub(1),
    };
    if per == 0 || !total.is_multiple_of(per + 1) {
        return Err(format!(
            "cannot read the UNet's block layout from {total} input blocks"
        ));
    }
    let blocks = total / (per + 1);
    let mut block_out_channels = Vec::new();
    let mut down_block_types = Vec::new();
    let mut layers = Vec::new();
    for b in 0..blocks {
        let i = 1 + b * (per + 1);
        block_out_channels.push(dim(
            infos,
            &u(&format!("input_blocks.{i}.0.out_layers.3.weight")),
            0,
        )?);
        let attention = u(&format!("input_blocks.{i}.1.transformer_blocks."));
        if has_prefix(infos, &attention) {
            down_block_types.push(DownBlockType::CrossAttnDownBlock2D);
            layers.push(indices(infos, &attention).len());
        } else {
            down_block_types.push(DownBlockType::DownBlock2D);
        }
    }
    let up_block_types = (0..blocks)
        .map(|b| {
            let i = b * (per + 1);
            if has_prefix(
                infos,
                &u(&format!("output_blocks.{i}.1.transformer_blocks.")),
            ) {
                UpBlockType::CrossAttnUpBlock2D
            } else {
                UpBlockType::UpBlock2D
            }
        })
        .collect();
    let to_k = infos
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with("attn2.to_k.weight"))
        .map(|(_, i)| i.shape.clone());
    let cross_attention_dim = to_k.and_then(|s| s.get(1).copied()).unwrap_or(768);
    let use_linear_projection = infos
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with(".proj_in.weight"))
        .is_some_and(|(_, i)| i.shape.len() == 2);
    let transformer_layers_per_block = match layers.first() {
        Some(first) if layers.iter().all(|l| l == first) => PerBlock::One(*first),
        Some(_) => PerBlock::Each(
            down_block_types
                .iter()
                .scan(layers.iter(), |it, t| {
                    Some(if *t == DownBlockType::CrossAttnDownBlock2D {
                        *it.next()?
                    } else {
                        1
                    })
                })
                .collect(),
        ),
        None => PerBlock::One(1),
    };
    Ok(UNet2DConditionConfig {
        in_channels: conv_in[1],
        out_channels: dim(infos, &u("out.2.weight"), 0)?,
        down_block_types,
        up_block_types,
        block_out_channels,
        layers_per_block: per,
        cross_attention_dim,
        attention_head_dim: PerBlock::One(8),
        use_linear_projection,
        transformer_layers_per_block,
        ..UNet2DConditionConfig::default()
    })
}

fn detect_vae(infos: &Infos) -> Result<AutoencoderKlConfig, String> {
    let v = |s: &str| format!("{VAE_PREFIX}{s}");
    let conv_in = shape(infos, &v("encoder.conv_in.weight"))
        .map_err(|_| "no VAE (first_stage_model.*) in the file")?;
    let blocks = indices(infos, &v("encoder.down.")).len();
    if blocks == 0 {
        return Err("the VAE has no encoder blocks".into());
    }
    let layers_per_block = indices(infos, &v("encoder.down.0.block.")).len();
    let block_out_channels = (0..blocks)
        .map(|i| {
            dim(
                infos,
                &v(&format!("encoder.down.{i}.block.0.conv2.weight")),
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AutoencoderKlConfig {
        in_channels: conv_in.get(1).copied().unwrap_or(3),
        out_channels: dim(infos, &v("decoder.conv_out.weight"), 0)?,
        down_block_types: vec![sd_vae::DOWN_ENCODER_BLOCK.to_string(); blocks],
        up_block_types: vec![sd_vae::UP_DECODER_BLOCK.to_string(); blocks],
        block_out_channels,
        layers_per_block,
        latent_channels: dim(infos, &v("decoder.conv_in.weight"), 1)?,
        ..AutoencoderKlConfig::default()
    })
}

fn detect_clip(infos: &Infos) -> Result<ClipTextConfig, String> {
    let with = format!("{CLIP_PREFIX}text_model.");
    let p = if has_prefix(infos, &with) {
        with
    } else {
        CLIP_PREFIX.to_string()
    };
    let token = shape(infos, &format!("{p}embeddings.token_embedding.weight"))
        .map_err(|_| "no text encoder (cond_stage_model.*) in the file")?;
    let (vocab_size, hidden_size) = match token {
        [v, h] => (*v, *h),
        s => return Err(format!("token embedding has shape {s:?}")),
    };
    Ok(ClipTextConfig {
        vocab_size,
        hidden_size,
        max_position_embeddings: dim(
            infos,
            &format!("{p}embeddings.position_embedding.weight"),
            0,
        )?,
        num_hidden_layers: indices(infos, &format!("{p}encoder.layers.")).len(),
        intermediate_size: dim(infos, &format!("{p}encoder.layers.0.mlp.fc1.weight"), 0)?,
        num_attention_heads: (hidden_size / 64).max(1),
        ..ClipTextConfig::sd1()
    })
}

fn detect_open_clip(infos: &Infos) -> Result<(ClipTextConfig, TextEncoderLayout), String> {
    let o = |s: &str| format!("{OPEN_CLIP_PREFIX}{s}");
    let (vocab_size, hidden_size) = match shape(infos, &o("token_embedding.weight"))? {
        [v, h] => (*v, *h),
        s => return Err(format!("OpenCLIP token embedding has shape {s:?}")),
    };
    let in_file = indices(infos, &o("transformer.resblocks.")).len();
    // ViT-H/14 has 24 resblocks; SD 2.x reads the penultimate one's output (diffusers' text
    // encoder config keeps 23 layers and its converter drops resblock 23).
    let layers = if in_file == 24 { 23 } else { in_file };
    let config = ClipTextConfig {
        vocab_size,
        hidden_size,
        max_position_embeddings: dim(infos, &o("positional_embedding"), 0)?,
        num_hidden_layers: layers,
        intermediate_size: dim(infos, &o("transformer.resblocks.0.mlp.c_fc.weight"), 0)?,
        num_attention_heads: (hidden_size / 64).max(1),
        ..ClipTextConfig::sd2()
    };
    Ok((config, TextEncoderLayout::OpenClip { layers, in_file }))
}
