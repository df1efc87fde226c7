//! `ResnetBlock2D` without a time embedding, as the VAE uses it.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::activation::Activation;
use crate::error::Result;
use crate::group_norm::GroupNorm;

/// The VAE's group norms all use this epsilon (`resnet_eps=1e-6` in diffusers' Encoder/Decoder).
pub const VAE_NORM_EPS: f64 = 1e-6;

/// norm1 -> act -> conv1 -> norm2 -> act -> conv2, plus a (1x1-projected when the channel count
/// changes) skip connection. diffusers' `output_scale_factor` is 1 everywhere in the VAE.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
}

impl ResnetBlock {
    /// Loads the block under `vb` (diffusers names `norm1`, `conv1`, `norm2`, `conv2`,
    /// `conv_shortcut`).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_shortcut = if in_channels != out_channels {
            Some(Conv2d::new(
                in_channels,
                out_channels,
                1,
                Conv2dConfig::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(groups, in_channels, VAE_NORM_EPS, vb.pp("norm1"))?,
            conv1: Conv2d::new(in_channels, out_channels, 3, same, vb.pp("conv1"))?,
            norm2: GroupNorm::new(groups, out_channels, VAE_NORM_EPS, vb.pp("norm2"))?,
            conv2: Conv2d::new(out_channels, out_channels, 3, same, vb.pp("conv2"))?,
            conv_shortcut,
            act,
        })
    }

    /// Runs the block on `[B, C_in, H, W]`, giving `[B, C_out, H, W]`.
    /// Takes `x` by value so it is freed as soon as it is no longer needed (before `conv2`
    /// when there is a shortcut convolution): at 512² the decoder's first full-size resnet
    /// would otherwise hold its 256 MiB input through the whole block.
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward_normalized(&self.norm1, self.act, &x, None)?;
        let skip = match &self.conv_shortcut {
            Some(conv) => {
                let skip = conv.forward(&x)?;
                drop(x);
                skip
            }
            None => x,
        };
        self.conv2
            .forward_normalized(&self.norm2, self.act, &h, Some(&skip))
    }
}
