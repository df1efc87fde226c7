//! Config parsing: SD 1.5 / SD 2.1 `unet/config.json` and diffusers' head-count quirk.

use anyhow::Result;
use sd_unet::{PerBlock, UNet2DConditionConfig};

/// The keys of stable-diffusion-v1-5's `unet/config.json` (diffusers 0.6 era file).
const SD15: &str = r#"{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
  "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// The SD 2.1 (768-v) keys that differ.
const SD21: &str = r#"{
  "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024, "dual_cross_attention": false,
  "num_class_embeds": null, "only_cross_attention": false, "resnet_time_scale_shift": "default",
  "upcast_attention": true, "use_linear_projection": true, "sample_size": 96
}"#;

#[test]
fn sd15_config_is_the_default() -> Result<()> {
    let parsed: UNet2DConditionConfig = serde_json::from_str(SD15)?;
    parsed.validate()?;
    assert_eq!(parsed, UNet2DConditionConfig::default());
    assert_eq!(parsed.heads()?, vec![8, 8, 8, 8]);
    assert_eq!(parsed.time_embed_dim(), 1280);
    Ok(())
}

#[test]
fn sd21_head_counts_come_from_attention_head_dim() -> Result<()> {
    let parsed: UNet2DConditionConfig = serde_json::from_str(SD21)?;
    parsed.validate()?;
    // diffusers: num_attention_heads = num_attention_heads or attention_head_dim, so SD 2.x has
    // 5, 10, 20, 20 heads of width 64.
    assert_eq!(parsed.heads()?, vec![5, 10, 20, 20]);
    assert!(parsed.use_linear_projection && parsed.upcast_attention);
    // Keys missing from a file take diffusers' defaults, not SD 1.5's.
    let empty: UNet2DConditionConfig = serde_json::from_str("{}")?;
    assert_eq!(empty.cross_attention_dim, 1280);
    assert_eq!(empty.sample_size, None);
    Ok(())
}

#[test]
fn num_attention_heads_wins_when_set() -> Result<()> {
    let c = UNet2DConditionConfig {
        num_attention_heads: Some(PerBlock::Each(vec![5, 10, 20, 20])),
        ..Default::default()
    };
    assert_eq!(c.heads()?, vec![5, 10, 20, 20]);
    Ok(())
}
