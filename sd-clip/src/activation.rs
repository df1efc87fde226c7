//! The MLP's activation function, `hidden_act` in the config.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::{bf16, f16};
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
            Self::QuickGelu if xs.device().is_cpu() => {
                xs.contiguous()?.apply_op1_no_bwd(&QuickGelu)?
            }
            Self::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Self::Gelu => xs.gelu_erf()?,
            Self::GeluTanh => xs.gelu()?,
        })
    }
}

/// Hendrycks & Gimpel (2016), sec. 2: GELU(x) ~ x * sigmoid(1.702 x) = x / (1 + exp(-1.702 x)).
fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

/// quick_gelu in one pass on the CPU (f32 arithmetic for every dtype): the composite
/// `x * sigmoid(1.702 x)` walks the `[B, S, intermediate]` tensor three times.
struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quick-gelu: input must be contiguous");
        };
        let out = match storage {
            CpuStorage::F32(v) => {
                CpuStorage::F32(v[start..end].iter().map(|&x| quick_gelu(x)).collect())
            }
            CpuStorage::F16(v) => CpuStorage::F16(
                v[start..end]
                    .iter()
                    .map(|x| f16::from_f32(quick_gelu(x.to_f32())))
                    .collect(),
            ),
            CpuStorage::BF16(v) => CpuStorage::BF16(
                v[start..end]
                    .iter()
                    .map(|x| bf16::from_f32(quick_gelu(x.to_f32())))
                    .collect(),
            ),
            CpuStorage::F64(v) => CpuStorage::F64(
                v[start..end]
                    .iter()
                    .map(|&x| x / (1.0 + (-1.702 * x).exp()))
                    .collect(),
            ),
            _ => candle_core::bail!("quick-gelu: not a float tensor"),
        };
        Ok((out, layout.shape().clone()))
    }
}
