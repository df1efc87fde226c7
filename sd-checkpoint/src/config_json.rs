//! The model configs written back as diffusers / transformers `config.json` files, so a merged
//! or converted model saved as a folder loads in diffusers and here alike.

use sd_clip::ClipTextConfig;
use sd_scheduler::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use sd_unet::{PerBlock, UNet2DConditionConfig};
use sd_vae::AutoencoderKlConfig;
use serde_json::{json, Value};

fn per_block(v: &PerBlock<usize>) -> Value {
    match v {
        PerBlock::One(x) => json!(x),
        PerBlock::Each(xs) => json!(xs),
    }
}

/// `unet/config.json`.
pub(crate) fn unet(c: &UNet2DConditionConfig) -> Value {
    let act = format!("{:?}", c.act_fn).to_lowercase();
    json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": act,
        "attention_head_dim": per_block(&c.attention_head_dim),
        "block_out_channels": c.block_out_channels,
        "center_input_sample": c.center_input_sample,
        "cross_attention_dim": c.cross_attention_dim,
        "down_block_types": c.down_block_types.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>(),
        "downsample_padding": c.downsample_padding,
        "flip_sin_to_cos": c.flip_sin_to_cos,
        "freq_shift": c.freq_shift,
        "in_channels": c.in_channels,
        "layers_per_block": c.layers_per_block,
        "mid_block_scale_factor": c.mid_block_scale_factor,
        "norm_eps": c.norm_eps,
        "norm_num_groups": c.norm_num_groups,
        "out_channels": c.out_channels,
        "sample_size": c.sample_size,
        "transformer_layers_per_block": per_block(&c.transformer_layers_per_block),
        "up_block_types": c.up_block_types.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>(),
        "upcast_attention": c.upcast_attention,
        "use_linear_projection": c.use_linear_projection,
    })
}

/// `vae/config.json`.
pub(crate) fn vae(c: &AutoencoderKlConfig) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "act_fn": c.act_fn,
        "block_out_channels": c.block_out_channels,
        "down_block_types": c.down_block_types,
        "force_upcast": c.force_upcast,
        "in_channels": c.in_channels,
        "latent_channels": c.latent_channels,
        "latents_mean": c.latents_mean,
        "latents_std": c.latents_std,
        "layers_per_block": c.layers_per_block,
        "mid_block_add_attention": c.mid_block_add_attention,
        "norm_num_groups": c.norm_num_groups,
        "out_channels": c.out_channels,
        "sample_size": c.sample_size,
        "scaling_factor": c.scaling_factor,
        "shift_factor": c.shift_factor,
        "up_block_types": c.up_block_types,
        "use_post_quant_conv": c.use_post_quant_conv,
        "use_quant_conv": c.use_quant_conv,
    })
}

/// `text_encoder/config.json`.
pub(crate) fn text_encoder(c: &ClipTextConfig) -> Value {
    let act = match c.hidden_act {
        sd_clip::Activation::QuickGelu => "quick_gelu",
        sd_clip::Activation::Gelu => "gelu",
        sd_clip::Activation::GeluTanh => "gelu_new",
    };
    json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "hidden_act": act,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "layer_norm_eps": c.layer_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "pad_token_id": c.pad_token_id,
        "projection_dim": c.projection_dim,
        "vocab_size": c.vocab_size,
    })
}

/// `scheduler/scheduler_config.json`: the keys Stable Diffusion's files set.
pub(crate) fn scheduler(c: &SchedulerConfig) -> Value {
    let beta_schedule = match c.beta_schedule {
        BetaSchedule::Linear => "linear",
        BetaSchedule::ScaledLinear => "scaled_linear",
        BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2",
    };
    let prediction = match c.prediction_type {
        PredictionType::Epsilon => "epsilon",
        PredictionType::VPrediction => "v_prediction",
        PredictionType::Sample => "sample",
    };
    let spacing = c.timestep_spacing.map(|s| match s {
        TimestepSpacing::Leading => "leading",
        TimestepSpacing::Trailing => "trailing",
        TimestepSpacing::Linspace => "linspace",
    });
    let mut v = json!({
        "_class_name": c.class_name,
        "beta_end": c.beta_end,
        "beta_schedule": beta_schedule,
        "beta_start": c.beta_start,
        "clip_sample": c.clip_sample,
        "num_train_timesteps": c.num_train_timesteps,
        "prediction_type": prediction,
        "set_alpha_to_one": c.set_alpha_to_one,
        "skip_prk_steps": c.skip_prk_steps,
        "steps_offset": c.steps_offset,
        "trained_betas": c.trained_betas,
    });
    if let (Some(spacing), Value::Object(map)) = (spacing, &mut v) {
        map.insert("timestep_spacing".into(), json!(spacing));
    }
    v
}
