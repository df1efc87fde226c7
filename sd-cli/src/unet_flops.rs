//! An analytic count of the arithmetic in one UNet call, from the model's config: the
//! multiply-adds of its convolutions, linear layers and attention matmuls (norms, activations,
//! softmax and additions are left out: they are a few percent and bandwidth-bound).
//!
//! Per sample, for a latent of `n = h * w` positions and `c` channels (diffusers'
//! `UNet2DConditionModel`, `inner_dim = c` as in every SD config):
//! - 3x3 convolution `cin -> cout`: `9 n cin cout` (stride 2: at the output's `n`);
//! - resnet: two 3x3 convolutions, the time-embedding projection, a 1x1 shortcut when
//!   `cin != cout`;
//! - transformer: `proj_in` + `proj_out` (`2 n c^2`), and per block self-attention
//!   (`q, k, v, out`: `4 n c^2`; `QK^T` and `AV`: `2 n^2 c`), cross-attention over `L` text
//!   tokens of width `d` (`q, out`: `2 n c^2`; `k, v`: `2 L d c`; `QK^T`, `AV`: `2 n L c`) and
//!   the GEGLU feed-forward (`c -> 8c`, `4c -> c`: `12 n c^2`).

use anyhow::{anyhow, Result};
use sd_pipeline::UNet2DConditionConfig;

/// What a UNet's cost depends on, read from its `UNet2DConditionConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetShape {
    /// Channels of the sample (4, or 9 for inpainting).
    pub in_channels: usize,
    /// Channels predicted.
    pub out_channels: usize,
    /// Output channels of each down block, outermost first.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Whether each down block (outermost first) has cross-attention transformers.
    pub down_attention: Vec<bool>,
    /// Whether each up block (innermost first) has cross-attention transformers.
    pub up_attention: Vec<bool>,
    /// Transformer blocks per transformer, per down block (up blocks use the list reversed).
    pub transformer_layers: Vec<usize>,
    /// Width of the text encoder's hidden states.
    pub cross_attention_dim: usize,
}

impl UnetShape {
    /// The shape of the UNet `weights` describe (its config as loaded).
    pub fn of(config: &UNet2DConditionConfig) -> Result<Self> {
        // sd-pipeline does not re-export sd-unet's block-type enums, so they cannot be named
        // here; their Debug text is diffusers' class name (`CrossAttnDownBlock2D`, ...).
        let attention = |kind: &dyn std::fmt::Debug| format!("{kind:?}").starts_with("CrossAttn");
        Ok(Self {
            in_channels: config.in_channels,
            out_channels: config.out_channels,
            block_out_channels: config.block_out_channels.clone(),
            layers_per_block: config.layers_per_block,
            down_attention: config
                .down_block_types
                .iter()
                .map(|t| attention(t))
                .collect(),
            up_attention: config.up_block_types.iter().map(|t| attention(t)).collect(),
            transformer_layers: config
                .transformer_layers()
                .map_err(|e| anyhow!("the UNet config: {e}"))?,
            cross_attention_dim: config.cross_attention_dim,
        })
    }

    /// Floating-point operations (2 per multiply-add) of one call on `batch` latents of
    /// `height x width` attending to `context_tokens` text tokens.
    pub fn flops(
        &self,
        batch: usize,
        (height, width): (usize, usize),
        context_tokens: usize,
    ) -> u64 {
        2 * batch as u64 * self.multiply_adds_per_sample((height, width), context_tokens)
    }

    /// Multiply-adds of one sample (see the module docs for each layer's count).
    pub fn multiply_adds_per_sample(&self, (height, width): (usize, usize), tokens: usize) -> u64 {
        let channels = &self.block_out_channels;
        let (Some(&first), Some(&last)) = (channels.first(), channels.last()) else {
            return 0;
        };
        let blocks = channels.len();
        // Positions at each level: a stride-2 convolution with padding 1 gives ceil(side / 2),
        // and upsampling restores the size of the skip it is concatenated with.
        let positions: Vec<u64> = (0..blocks)
            .map(|level| (side(height, level) * side(width, level)) as u64)
            .collect();
        let text = Text {
            tokens: tokens as u64,
            width: self.cross_attention_dim as u64,
        };
        let depth = |i: usize| self.transformer_layers.get(i).copied().unwrap_or(1);
        let temb = 4 * first as u64;

        // Time embedding: linear c0 -> 4 c0, linear 4 c0 -> 4 c0.
        let mut total = first as u64 * temb + temb * temb;
        total += conv3x3(positions[0], self.in_channels, first);

        // Down blocks; `skips` holds the channels of every output the up blocks concatenate.
        let mut skips = vec![first];
        let mut ch = first;
        for (i, &c) in channels.iter().enumerate() {
            for _ in 0..self.layers_per_block {
                total += resnet(positions[i], ch, c, temb);
                ch = c;
                if self.down_attention.get(i).copied().unwrap_or(false) {
                    total += transformer(positions[i], c, depth(i), text);
                }
                skips.push(c);
            }
            if i + 1 < blocks {
                total += conv3x3(positions[i + 1], c, c);
                skips.push(c);
            }
        }

        // Mid block: resnet, transformer, resnet at the innermost level.
        let inner = positions[blocks - 1];
        total +=
            2 * resnet(inner, last, last, temb) + transformer(inner, last, depth(blocks - 1), text);

        // Up blocks, innermost first: layers + 1 resnets, each taking one skip.
        for i in 0..blocks {
            let level = blocks - 1 - i;
            let c = channels[level];
            for _ in 0..=self.layers_per_block {
                let skip = skips.pop().unwrap_or(0);
                total += resnet(positions[level], ch + skip, c, temb);
                ch = c;
                if self.up_attention.get(i).copied().unwrap_or(false) {
                    total += transformer(positions[level], c, depth(level), text);
                }
            }
            if level > 0 {
                // Nearest 2x upsampling, then a 3x3 convolution at the larger size.
                total += conv3x3(positions[level - 1], c, c);
            }
        }

        total + conv3x3(positions[0], first, self.out_channels)
    }
}

/// The text the cross-attention layers attend to.
#[derive(Debug, Clone, Copy)]
struct Text {
    tokens: u64,
    width: u64,
}

/// A latent side after `level` stride-2 downsamplings.
fn side(pixels: usize, level: usize) -> usize {
    (0..level).fold(pixels, |s, _| s.div_ceil(2))
}

fn conv3x3(positions: u64, cin: usize, cout: usize) -> u64 {
    positions * 9 * cin as u64 * cout as u64
}

/// diffusers' `ResnetBlock2D` (time embedding of width `temb`).
fn resnet(positions: u64, cin: usize, cout: usize, temb: u64) -> u64 {
    let shortcut = if cin == cout {
        0
    } else {
        positions * cin as u64 * cout as u64
    };
    conv3x3(positions, cin, cout) + temb * cout as u64 + conv3x3(positions, cout, cout) + shortcut
}

/// diffusers' `Transformer2DModel` with `depth` `BasicTransformerBlock`s of width `c`.
fn transformer(n: u64, c: usize, depth: usize, text: Text) -> u64 {
    let c = c as u64;
    let self_attention = 4 * n * c * c + 2 * n * n * c;
    let cross_attention =
        2 * n * c * c + 2 * text.tokens * text.width * c + 2 * n * text.tokens * c;
    let feed_forward = 12 * n * c * c;
    2 * n * c * c + depth as u64 * (self_attention + cross_attention + feed_forward)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable Diffusion 1.5's `unet/config.json` (stable-diffusion-v1-5/stable-diffusion-v1-5),
    /// the keys that differ from diffusers' defaults.
    const SD15_UNET: &str = r#"{"sample_size": 64, "cross_attention_dim": 768}"#;

    /// stabilityai/stable-diffusion-2-1's `unet/config.json`, the keys that differ from
    /// diffusers' defaults.
    const SD21_UNET: &str = r#"{"sample_size": 96, "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": true,
        "upcast_attention": true}"#;

    /// The shape of a real `UNet2DConditionConfig`, read as sd-unet reads config.json.
    fn shape_for(config_json: &str) -> UnetShape {
        let config: UNet2DConditionConfig = serde_json::from_str(config_json).unwrap();
        UnetShape::of(&config).unwrap()
    }

    #[test]
    fn sd15_at_64x64_latents_batch_2_is_about_1_6_tflop() {
        let shape = shape_for(SD15_UNET);
        assert_eq!(shape.block_out_channels, [320, 640, 1280, 1280]);
        assert_eq!(shape.down_attention, [true, true, true, false]);
        assert_eq!(shape.up_attention, [false, true, true, true]);
        let flops = shape.flops(2, (64, 64), 77);
        println!("SD 1.5, 64x64 latents, batch 2: {flops} FLOP");
        assert!((1.5e12..1.7e12).contains(&(flops as f64)), "{flops}");
    }

    #[test]
    fn sd21_counts_the_same_layers_with_wider_text() {
        let sd15 = shape_for(SD15_UNET);
        let sd21 = shape_for(SD21_UNET);
        assert_eq!(sd21.cross_attention_dim, 1024);
        let (a, b) = (sd15.flops(2, (64, 64), 77), sd21.flops(2, (64, 64), 77));
        println!(
            "SD 2.1, 64x64 latents, batch 2: {b} FLOP; 96x96: {}",
            sd21.flops(2, (96, 96), 77)
        );
        // Only the k / v projections of the text differ: 2 L (1024 - 768) c per transformer.
        assert!(b > a && (b - a) as f64 / (a as f64) < 0.01, "{a} {b}");
    }

    #[test]
    fn odd_latent_sides_and_empty_configs_do_not_panic() {
        let shape = shape_for(SD15_UNET);
        assert!(shape.flops(1, (5, 7), 77) > 0);
        let empty = UnetShape {
            block_out_channels: Vec::new(),
            ..shape
        };
        assert_eq!(empty.flops(2, (64, 64), 77), 0);
    }
}
