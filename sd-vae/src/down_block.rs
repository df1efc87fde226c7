//! `DownEncoderBlock2D`: resnets, then a strided convolution that halves the resolution.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::activation::Activation;
use crate::error::Result;
use crate::resnet::ResnetBlock;

/// One encoder level.
#[derive(Debug, Clone)]
pub struct DownEncoderBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Conv2d>,
}

impl DownEncoderBlock {
    /// Loads `resnets.N` and, unless this is the last level, `downsamplers.0.conv`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        act: Activation,
        add_downsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { out_channels };
                ResnetBlock::new(cin, out_channels, groups, act, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if add_downsample {
            let cfg = Conv2dConfig {
                stride: 2,
                ..Default::default()
            };
            let vb = vb.pp("downsamplers").pp("0").pp("conv");
            Some(Conv2d::new(out_channels, out_channels, 3, cfg, vb)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsample,
        })
    }

    /// `[B, C_in, H, W]` -> `[B, C_out, H/2, W/2]` (or the same size at the last level).
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        for resnet in &self.resnets {
            x = resnet.forward(x)?;
        }
        if let Some(conv) = &self.downsample {
            // diffusers' Downsample2D with padding=0 pads one zero row and column on the bottom
            // and right only (LDM's asymmetric padding), then convolves 3x3 with stride 2.
            let padded = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            x = conv.forward(&padded)?;
        }
        Ok(x)
    }
}
