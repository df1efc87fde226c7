//! 2-D convolution that also runs for bf16 weights on the CPU.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::error::Result;

/// `torch.nn.Conv2d` (weight `[out, in, k, k]`, bias `[out]`).
///
/// candle's CPU convolution has no bf16 kernel, so bf16 runs widen input and weights to f32,
/// convolve with f32 accumulation (as torch's CPU bf16 convolution accumulates) and round the
/// result back to bf16 once.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
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
            inner: candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)?,
        })
    }

    /// Convolves `[B, C_in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::BF16 {
            return Ok(self.inner.forward(x)?);
        }
        let widen = |t: &Tensor| t.to_dtype(DType::F32);
        let bias = self.inner.bias().map(widen).transpose()?;
        let wide = candle_nn::Conv2d::new(widen(self.inner.weight())?, bias, *self.inner.config());
        Ok(wide.forward(&widen(x)?)?.to_dtype(DType::BF16)?)
    }
}
