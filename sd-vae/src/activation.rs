//! The non-linearity named by the config's `act_fn`.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// An activation diffusers' `get_activation` knows and this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// x * sigmoid(x) (`silu` or `swish`; every Stable Diffusion VAE).
    Silu,
    /// Exact (erf) GELU, as `torch.nn.GELU()`.
    Gelu,
    /// max(x, 0).
    Relu,
}

impl Activation {
    /// Parses a diffusers `act_fn` string.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            "relu" => Ok(Self::Relu),
            other => Err(Error::UnsupportedConfig {
                field: "act_fn",
                value: other.to_string(),
                reason: "supported: silu, swish, gelu, relu".to_string(),
            }),
        }
    }

    /// Applies the activation elementwise.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => sd_kernels::nn::silu(x)?,
            Self::Gelu => x.gelu_erf()?,
            Self::Relu => x.relu()?,
        })
    }
}
