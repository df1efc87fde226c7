//! `ResnetBlock2D`: two group-norm / activation / 3x3-convolution stages with the time embedding
//! added in between, and a (1x1-projected when the width changes) skip connection.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::config::Activation;
use crate::layers::{norm_act_conv, Conv2d, GroupNorm, Linear};

/// The shape-independent settings of a resnet.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSettings {
    /// Group-norm groups.
    pub groups: usize,
    /// Group-norm epsilon.
    pub eps: f64,
    /// Width of the time embedding.
    pub temb_channels: usize,
    /// Nonlinearity.
    pub act: Activation,
    /// The output is divided by this (`mid_block_scale_factor` in the mid block, else 1).
    pub output_scale_factor: f64,
}

/// One diffusers `ResnetBlock2D` (`resnet_time_scale_shift = "default"`).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads a resnet mapping `in_channels` to `out_channels` from `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        s: ResnetSettings,
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
                Default::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(s.groups, in_channels, s.eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(in_channels, out_channels, 3, same, vb.pp("conv1"))?,
            time_emb_proj: Linear::new(s.temb_channels, out_channels, vb.pp("time_emb_proj"))?,
            norm2: GroupNorm::new(s.groups, out_channels, s.eps, vb.pp("norm2"))?,
            conv2: Conv2d::new(out_channels, out_channels, 3, same, vb.pp("conv2"))?,
            conv_shortcut,
            act: s.act,
            output_scale_factor: s.output_scale_factor,
        })
    }

    /// `(skip(x) + conv2(act(norm2(conv1(act(norm1(x))) + proj(act(temb)))))) / scale`.
    /// The time embedding rides in conv1's bias and the skip in conv2's output pass.
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let t = self.time_emb_proj.forward(&self.act.apply(temb)?)?;
        let h = norm_act_conv(&self.norm1, self.act, &self.conv1, x, Some(&t), None)?;
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = norm_act_conv(&self.norm2, self.act, &self.conv2, &h, None, Some(&skip))?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out.affine(1.0 / self.output_scale_factor, 0.0)
        }
    }
}
