//! Euler ancestral sampler ("Euler a", k-diffusion's `sample_euler_ancestral`), as diffusers'
//! `EulerAncestralDiscreteScheduler`: an Euler step down to sigma_down, then fresh noise of
//! scale sigma_up, so that sigma_down^2 + sigma_up^2 = sigma_next^2.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_shape, check_step, lin};
use crate::sigmas::{karras_family_init_sigma, karras_family_schedule};
use crate::{Error, PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// Euler ancestral sampler; needs noise at every step.
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerAncestralScheduler {
    /// `EulerAncestralDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    /// diffusers' class has no Karras sigmas: `use_karras_sigmas` is ignored, as there.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("Euler a")?;
        if config.prediction_type == PredictionType::Sample {
            return Err(Error::Unsupported {
                scheduler: "Euler a",
                what: "prediction_type = sample".into(),
            });
        }
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let (timesteps, sigmas) = karras_family_schedule(config, &alphas_cumprod, steps, false)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        Ok(Self {
            init_noise_sigma: karras_family_init_sigma(&sigmas, spacing),
            timesteps,
            sigmas,
            prediction: config.prediction_type,
        })
    }
}

impl Scheduler for EulerAncestralScheduler {
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
        true
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
            true,
        )?;
        let noise = noise.ok_or(Error::MissingNoise { index })?;
        let (sigma, sigma_to) = (self.sigmas[index], self.sigmas[index + 1]);
        let x0 = self.prediction.x0_from_sigma(model_output, sample, sigma)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = ((sample - x0)? / sigma)?;
        let prev = lin(sample, 1.0, &derivative, sigma_down - sigma)?;
        lin(&prev, 1.0, noise, sigma_up)
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
