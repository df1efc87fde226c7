//! The layers every block is made of, from sd-kernels: on the CPU with f32 or bf16 weights they
//! run the packed fast kernels (activations in f32), elsewhere candle's ops.

use candle_core::{Module, Result, Tensor};

pub use sd_kernels::nn::{Conv2d, GroupNorm, LayerNorm, Linear};

use crate::config::Activation;

/// `act(norm(x))`, with SiLU fused into the norm's output pass.
pub(crate) fn norm_act(norm: &GroupNorm, act: Activation, x: &Tensor) -> Result<Tensor> {
    if act.is_silu() {
        norm.forward_act(x, true)
    } else {
        act.apply(&norm.forward(x)?)
    }
}

/// `conv(act(norm(x)))` (+ per-image channel bias, + residual): with SiLU on the CPU the
/// normalised tensor is never stored (the convolution normalises its input as it reads it).
pub(crate) fn norm_act_conv(
    norm: &GroupNorm,
    act: Activation,
    conv: &Conv2d,
    x: &Tensor,
    channel_bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    if act.is_silu() {
        conv.forward_normalized(norm, true, x, channel_bias, residual)
    } else {
        conv.forward_with(&norm_act(norm, act, x)?, channel_bias, residual)
    }
}
