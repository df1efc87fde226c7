//! `Linear` and `Conv2d` that also run in bf16 on the CPU: candle 0.11's CPU matmul has no bf16
//! kernel, so bf16 layers cast input and weights to f32 for the product and cast the result
//! back (weights stay stored in bf16). f32 and f16 go straight to candle-nn's layers.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

/// The dtype a product runs in for tensors stored in `dtype`.
pub(crate) fn product_dtype(dtype: DType) -> DType {
    if dtype == DType::BF16 {
        DType::F32
    } else {
        dtype
    }
}

fn upcast(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(product_dtype(t.dtype()))
}

/// A fully connected layer, `x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Linear {
    /// Loads `weight` `[out, in]` and `bias` `[out]`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        candle_nn::linear(in_dim, out_dim, vb).map(Self)
    }

    /// Loads `weight` `[out, in]` only.
    pub fn no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        candle_nn::linear_no_bias(in_dim, out_dim, vb).map(Self)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::BF16 {
            return self.0.forward(x);
        }
        let bias = self.0.bias().map(upcast).transpose()?;
        let layer = candle_nn::Linear::new(upcast(self.0.weight())?, bias);
        layer.forward(&upcast(x)?)?.to_dtype(DType::BF16)
    }
}

/// A 2-D convolution with bias.
#[derive(Debug, Clone)]
pub struct Conv2d(candle_nn::Conv2d);

impl Conv2d {
    /// Loads `weight` `[out, in, k, k]` and `bias` `[out]`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb).map(Self)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::BF16 {
            return self.0.forward(x);
        }
        let bias = self.0.bias().map(upcast).transpose()?;
        let layer = candle_nn::Conv2d::new(upcast(self.0.weight())?, bias, *self.0.config());
        layer.forward(&upcast(x)?)?.to_dtype(DType::BF16)
    }
}
