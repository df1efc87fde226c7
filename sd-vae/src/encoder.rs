//! The encoder: image `[B, 3, H, W]` -> moments `[B, 2 * latent_channels, H/8, W/8]`.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::activation::Activation;
use crate::config::AutoencoderKlConfig;
use crate::down_block::DownEncoderBlock;
use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::mid_block::MidBlock;
use crate::resnet::VAE_NORM_EPS;

/// diffusers' `Encoder` with `double_z=True`: the output holds the mean and the log-variance of
/// the latent distribution stacked along channels (before `quant_conv`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Encoder {
    /// Loads the encoder under `vb` (the `encoder.` prefix already pushed).
    pub fn new(config: &AutoencoderKlConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let act = Activation::parse(&config.act_fn)?;
        let groups = config.norm_num_groups;
        let channels = &config.block_out_channels;
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = Conv2d::new(config.in_channels, channels[0], 3, same, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut cin = channels[0];
        for (i, &cout) in channels.iter().enumerate() {
            let last = i + 1 == channels.len();
            down_blocks.push(DownEncoderBlock::new(
                cin,
                cout,
                config.layers_per_block,
                groups,
                act,
                !last,
                vb.pp("down_blocks").pp(i),
            )?);
            cin = cout;
        }
        let top = channels[channels.len() - 1];
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: MidBlock::new(
                top,
                groups,
                act,
                config.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            conv_norm_out: GroupNorm::new(groups, top, VAE_NORM_EPS, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(top, 2 * config.latent_channels, 3, same, vb.pp("conv_out"))?,
            act,
        })
    }

    /// Runs the encoder.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            x = block.forward(x)?;
        }
        let x = self.mid_block.forward(x)?;
        self.conv_out
            .forward_normalized(&self.conv_norm_out, self.act, &x, None)
    }
}
