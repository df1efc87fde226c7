//! 2-D convolution: sd-kernels' packed convolution on the CPU for f32 / bf16 weights (bf16
//! products, f32 sums and activations), candle's elsewhere.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::error::Result;

/// `torch.nn.Conv2d` (weight `[out, in, k, k]`, bias `[out]`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: sd_kernels::nn::Conv2d,
}

impl Conv2d {
    /// Loads `weight` and `bias` under `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            inner: sd_kernels::nn::Conv2d::new(in_channels, out_channels, kernel, config, vb)?,
        })
    }

    /// Loads `weight` only (a convolution made with `bias=False`).
    pub fn no_bias(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            inner: sd_kernels::nn::Conv2d::no_bias(in_channels, out_channels, kernel, config, vb)?,
        })
    }

    /// Convolves `[B, C_in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward(x)?)
    }

    /// `conv(x) + residual`, the add fused into the convolution's output pass on the CPU.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward_with(x, None, Some(residual))?)
    }
}
