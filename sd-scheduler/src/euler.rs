//! Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn),
//! as diffusers' `EulerDiscreteScheduler`.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_shape, check_step, lin};
use crate::sigmas::{karras_family_init_sigma, karras_family_schedule};
use crate::{PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// Euler sampler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * (x_i - x0) / sigma_i.
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerScheduler {
    /// `EulerDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("Euler")?;
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let (timesteps, sigmas) =
            karras_family_schedule(config, &alphas_cumprod, steps, config.use_karras_sigmas)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        Ok(Self {
            init_noise_sigma: karras_family_init_sigma(&sigmas, spacing),
            timesteps,
            sigmas,
            prediction: config.prediction_type,
        })
    }
}

impl Scheduler for EulerScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        let sigma = self.sigmas[index];
        Ok((sample / (sigma * sigma + 1.0).sqrt())?)
    }
    fn noise_needed(&self, _index: usize) -> bool {
        false
    }

    fn step(
        &mut self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        check_step(
            index,
            self.timesteps.len(),
            model_output,
            sample,
            noise,
            false,
        )?;
        let (sigma, sigma_next) = (self.sigmas[index], self.sigmas[index + 1]);
        let x0 = self.prediction.x0_from_sigma(model_output, sample, sigma)?;
        // d = (x - x0) / sigma (Karras et al. eq. 3's ODE in sigma), then one Euler step.
        let derivative = ((sample - x0)? / sigma)?;
        lin(sample, 1.0, &derivative, sigma_next - sigma)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        check_shape("noise", noise, original)?;
        lin(original, 1.0, noise, self.sigmas[index])
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }
}
