//! The MLP's activation function, `hidden_act` in the config.

use candle_core::Tensor;
use serde::Deserialize;

use crate::Result;

/// `hidden_act` of `CLIPTextConfig`, with transformers' meaning of each name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, the approximation openai CLIP was trained with (SD 1.x).
    #[default]
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact GELU, `x * Phi(x)` with the normal CDF through erf (SD 2.x / OpenCLIP).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast` in transformers).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
}

impl Activation {
    /// Applies the activation elementwise in the tensor's dtype.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            // Hendrycks & Gimpel (2016), sec. 2: GELU(x) ~ x * sigmoid(1.702 x).
            Self::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Self::Gelu => xs.gelu_erf()?,
            Self::GeluTanh => xs.gelu()?,
        })
    }
}
