//! Layer norm over the channel axis, computed in f32 whatever the model's dtype.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

/// `torch.nn.LayerNorm(C)`: y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over
/// the last axis (Ba, Kiros & Hinton 2016, eq. 4).
///
/// Statistics are taken in f32 with the mean subtracted before squaring: CLIP's residual stream
/// carries a few large channels, where the one-pass `E[x^2] - E[x]^2` loses digits, and f16 / bf16
/// sums lose more. torch's CPU kernel also accumulates in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of shape `[size]`, kept in f32.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(DType::F32)?,
            bias: vb.get(size, "bias")?.to_dtype(DType::F32)?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?
            .to_dtype(dtype)
    }
}
