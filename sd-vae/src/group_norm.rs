//! Group normalisation with its statistics and affine step in f32.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::error::Result;

/// `torch.nn.GroupNorm(num_groups, channels, eps, affine=True)` over `[B, C, ...]`.
///
/// y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c, with the mean and the (biased)
/// variance taken over each group of C/G channels and all spatial positions. Half-precision
/// inputs are upcast for the whole computation and rounded once at the end, as torch's CPU
/// kernel does; in f16 the sum of squares of a large activation map would overflow otherwise.
/// (sd-kernels' `GroupNorm`, which also fuses a following SiLU.)
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: sd_kernels::nn::GroupNorm,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of shape `[channels]` from `vb`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner: sd_kernels::nn::GroupNorm::new(groups, channels, eps, vb)?,
        })
    }

    /// Normalises `x` of shape `[B, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward(x)?)
    }

    /// The sd-kernels layer, for convolutions that normalise their input themselves.
    pub(crate) fn inner(&self) -> &sd_kernels::nn::GroupNorm {
        &self.inner
    }

    /// `act(norm(x))`, SiLU fused into the normalisation's output pass.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Silu => Ok(self.inner.forward_act(x, true)?),
            other => other.forward(&self.forward(x)?),
        }
    }
}
