//! Group normalisation with its statistics and affine step in f32.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;

/// `torch.nn.GroupNorm(num_groups, channels, eps, affine=True)` over `[B, C, ...]`.
///
/// y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c, with the mean and the (biased)
/// variance taken over each group of C/G channels and all spatial positions. Half-precision
/// inputs are upcast for the whole computation and rounded once at the end, as torch's CPU
/// kernel does; in f16 the sum of squares of a large activation map would overflow otherwise.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of shape `[channels]` from `vb`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(channels, "weight")?.to_dtype(DType::F32)?;
        let bias = vb.get(channels, "bias")?.to_dtype(DType::F32)?;
        Ok(Self {
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// Normalises `x` of shape `[B, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let x32 = x.to_dtype(DType::F32)?.reshape((b, self.groups, ()))?;
        let mean = x32.mean_keepdim(2)?;
        let centred = x32.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut affine_shape = vec![1; dims.len()];
        affine_shape[1] = c;
        let y = normed
            .reshape(dims.as_slice())?
            .broadcast_mul(&self.weight.reshape(affine_shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(affine_shape.as_slice())?)?;
        Ok(y.to_dtype(x.dtype())?)
    }
}
