//! What the model predicts, and how each scheduler family turns it into a predicted x0.

use candle_core::Tensor;
use serde::Deserialize;

use crate::Result;

/// The quantity the denoising model outputs (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise epsilon (SD 1.x, SD 2.x base).
    #[default]
    Epsilon,
    /// The velocity v = alpha_t * eps - sigma_t * x0 (Salimans & Ho 2022; SD 2.x 768).
    VPrediction,
    /// The clean sample x0 itself.
    Sample,
}

impl PredictionType {
    /// x0 and eps from `model_output` for x_t = alpha * x0 + sigma * eps (DDPM eq. 4 with
    /// alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar); DPM-Solver's alpha_t, sigma_t).
    pub(crate) fn x0_and_eps(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha: f64,
        sigma: f64,
    ) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Self::Epsilon => {
                let x0 = ((sample - model_output.affine(sigma, 0.0)?)? / alpha)?;
                (x0, model_output.clone())
            }
            Self::Sample => {
                let eps = ((sample - model_output.affine(alpha, 0.0)?)? / sigma)?;
                (model_output.clone(), eps)
            }
            Self::VPrediction => {
                // x0 = alpha x_t - sigma v, eps = alpha v + sigma x_t (Salimans & Ho, sec. 4).
                let x0 = (sample.affine(alpha, 0.0)? - model_output.affine(sigma, 0.0)?)?;
                let eps = (model_output.affine(alpha, 0.0)? + sample.affine(sigma, 0.0)?)?;
                (x0, eps)
            }
        })
    }

    /// x0 for the Karras-style parametrisation x = x0 + sigma * eps, where the model saw
    /// x / sqrt(sigma^2 + 1) (Euler, Euler a, LMS, Heun).
    pub(crate) fn x0_from_sigma(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f64,
    ) -> Result<Tensor> {
        Ok(match self {
            Self::Epsilon => (sample - model_output.affine(sigma, 0.0)?)?,
            Self::Sample => model_output.clone(),
            Self::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                (model_output.affine(c_out, 0.0)? + (sample / (sigma * sigma + 1.0))?)?
            }
        })
    }
}

/// Clamps a predicted x0 to `[-range, range]` (diffusers' `clip_sample`), when `range` is set.
pub(crate) fn clip_sample(x0: Tensor, range: Option<f64>) -> Result<Tensor> {
    Ok(match range {
        Some(r) => x0.clamp(-r, r)?,
        None => x0,
    })
}
