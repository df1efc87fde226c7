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
