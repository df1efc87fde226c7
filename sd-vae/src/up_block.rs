//! `UpDecoderBlock2D`: resnets, then nearest-neighbour 2x upsampling and a convolution.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::activation::Activation;
use crate::error::Result;
use crate::resnet::ResnetBlock;

/// One decoder level.
#[derive(Debug, Clone)]
pub struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Conv2d>,
}

impl UpDecoderBlock {
    /// Loads `resnets.N` and, unless this is the last level, `upsamplers.0.conv`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        act: Activation,
        add_upsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { out_channels };
                ResnetBlock::new(cin, out_channels, groups, act, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = if add_upsample {
            let cfg = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            let vb = vb.pp("upsamplers").pp("0").pp("conv");
            Some(Conv2d::new(out_channels, out_channels, 3, cfg, vb)?)
        } else {
            None
        };
        Ok(Self { resnets, upsample })
    }

    /// `[B, C_in, h, w]` -> `[B, C_out, 2h, 2w]` (or the same size at the last level).
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        for resnet in &self.resnets {
            x = resnet.forward(x)?;
        }
        if let Some(conv) = &self.upsample {
            x = conv.forward_upsampled(&x)?;
        }
        Ok(x)
    }
}
