//! The decoder: latents `[B, latent_channels, h, w]` -> image `[B, 3, 8h, 8w]`.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::activation::Activation;
use crate::config::AutoencoderKlConfig;
use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::mid_block::MidBlock;
use crate::resnet::VAE_NORM_EPS;
use crate::up_block::UpDecoderBlock;

/// diffusers' `Decoder` with group norms (`norm_type="group"`); runs after `post_quant_conv`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Decoder {
    /// Loads the decoder under `vb` (the `decoder.` prefix already pushed).
    pub fn new(config: &AutoencoderKlConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let act = Activation::parse(&config.act_fn)?;
        let groups = config.norm_num_groups;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let top = reversed[0];
        let conv_in = Conv2d::new(config.latent_channels, top, 3, same, vb.pp("conv_in"))?;
        let mid_block = MidBlock::new(
            top,
            groups,
            act,
            config.mid_block_add_attention,
            vb.pp("mid_block"),
        )?;
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut cin = top;
        for (i, &cout) in reversed.iter().enumerate() {
            let last = i + 1 == reversed.len();
            // The decoder has one resnet more per level than the encoder (diffusers:
            // num_layers=layers_per_block + 1).
            up_blocks.push(UpDecoderBlock::new(
                cin,
                cout,
                config.layers_per_block + 1,
                groups,
                act,
                !last,
                vb.pp("up_blocks").pp(i),
            )?);
            cin = cout;
        }
        let bottom = config.block_out_channels[0];
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, bottom, VAE_NORM_EPS, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(bottom, config.out_channels, 3, same, vb.pp("conv_out"))?,
            act,
        })
    }

    /// Runs the decoder.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let x = self.conv_in.forward(z)?;
        let mut x = self.mid_block.forward(x)?;
        for block in &self.up_blocks {
            x = block.forward(x)?;
        }
        self.conv_out
            .forward_normalized(&self.conv_norm_out, self.act, &x, None)
    }
}
