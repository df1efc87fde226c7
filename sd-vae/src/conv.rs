//! 2-D convolution: sd-kernels' packed convolution on the CPU for f32 / bf16 weights (bf16
//! products, f32 sums and activations), candle's elsewhere.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::activation::Activation;
use crate::error::Result;
use crate::group_norm::GroupNorm;

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

    /// `conv(act(norm(x))) (+ residual)`; with SiLU on the CPU the normalised tensor is never
    /// stored (the convolution normalises its input as it reads it).
    pub fn forward_normalized(
        &self,
        norm: &GroupNorm,
        act: Activation,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        match act {
            Activation::Silu => {
                Ok(self
                    .inner
                    .forward_normalized(norm.inner(), true, x, None, residual)?)
            }
            other => {
                let y = other.forward(&norm.forward(x)?)?;
                Ok(self.inner.forward_with(&y, None, residual)?)
            }
        }
    }

    /// `conv(upsample(x))`, nearest-neighbour 2x; on the CPU the upsampled tensor is never
    /// stored.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward_upsampled(x)?)
    }
}
