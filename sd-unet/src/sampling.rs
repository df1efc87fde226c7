//! `Downsample2D` (stride-2 3x3 convolution) and `Upsample2D` (nearest-neighbour resize, then a
//! 3x3 convolution).

use candle_core::{Result, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::layers::Conv2d;

/// Halves height and width with a stride-2 convolution (`downsamplers.0.conv`).
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    /// `padding` is `downsample_padding` of the config; diffusers pads right and bottom by one
    /// (and the convolution by nothing) when it is 0.
    pub fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(channels, channels, 3, cfg, vb.pp("conv"))?,
            pad_right_bottom: padding == 0,
        })
    }

    /// `[B, C, h, w]` -> `[B, C, ceil(h/2), ceil(w/2)]` (padding 1) or `floor` (padding 0).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Doubles height and width, or resizes to the skip connection's size when the latent is not a
/// multiple of the model's total downsampling (diffusers' `upsample_size`), then convolves.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `conv` from `vb` (the block's `upsamplers.0`).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(channels, channels, 3, cfg, vb.pp("conv"))?,
        })
    }

    /// Nearest-neighbour resize to `size` (default 2x), as torch's `interpolate(mode="nearest")`:
    /// output index o reads input floor(o * in / out) — candle's `upsample_nearest2d` computes the
    /// same indices (checked on odd sizes by the 9x5 fixture).
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        if (oh, ow) == (2 * h, 2 * w) {
            // Exactly 2x: upsampled as the convolution reads its input, never stored.
            return self.conv.forward_upsampled(x);
        }
        self.conv.forward(&x.upsample_nearest2d(oh, ow)?)
    }
}
