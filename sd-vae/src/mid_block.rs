//! `UNetMidBlock2D` as the VAE uses it: resnet, (attention, resnet) once.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::attention::MidAttention;
use crate::error::Result;
use crate::resnet::ResnetBlock;

/// resnet -> attention -> resnet at the lowest resolution; the attention is left out when the
/// config's `mid_block_add_attention` is false.
#[derive(Debug, Clone)]
pub struct MidBlock {
    first: ResnetBlock,
    attention: Option<MidAttention>,
    second: ResnetBlock,
}

impl MidBlock {
    /// Loads `resnets.0`, `attentions.0`, `resnets.1` under `vb`.
    pub fn new(
        channels: usize,
        groups: usize,
        act: Activation,
        add_attention: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = vb.pp("resnets");
        let attention = if add_attention {
            Some(MidAttention::new(
                channels,
                groups,
                vb.pp("attentions").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            first: ResnetBlock::new(channels, channels, groups, act, resnets.pp("0"))?,
            attention,
            second: ResnetBlock::new(channels, channels, groups, act, resnets.pp("1"))?,
        })
    }

    /// Runs the block on `[B, C, h, w]`.
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let mut x = self.first.forward(x)?;
        if let Some(attention) = &self.attention {
            x = attention.forward(&x)?;
        }
        self.second.forward(x)
    }
}
