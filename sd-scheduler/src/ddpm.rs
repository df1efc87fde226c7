//! DDPM: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", ancestral
//! sampling on a subsequence of timesteps, as diffusers' `DDPMScheduler`.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, q_sample, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_step, lin};
use crate::prediction::clip_sample;
use crate::spacing::{spaced_timesteps, Grid};
use crate::{Error, PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// DDPM ancestral sampler; draws noise (passed in) at every step with t > 0.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    clip: Option<f64>,
    /// `fixed_large` uses beta_t as the variance instead of the posterior's beta-tilde.
    fixed_large: bool,
}

impl DdpmScheduler {
    /// `DDPMScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("DDPM")?;
        let fixed_large = match config.variance_type.as_deref().unwrap_or("fixed_small") {
            "fixed_small" => false,
            "fixed_large" => true,
            other => {
                return Err(Error::Unsupported {
                    scheduler: "DDPM",
                    what: format!("variance_type = {other}"),
                })
            }
        };
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let n = config.num_train_timesteps;
        Ok(Self {
            alphas_cumprod: class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?,
            timesteps: spaced_timesteps(spacing, n, steps, config.steps_offset, Grid::Integer)?,
            prediction: config.prediction_type,
            clip: config.clip_range(true),
            fixed_large,
        })
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        Ok(sample.clone())
    }
    fn noise_needed(&self, index: usize) -> bool {
        self.timesteps.get(index).is_some_and(|&t| t > 0.0)
    }

    fn step(
        &mut self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let needs_noise = self.noise_needed(index);
        check_step(
            index,
            self.timesteps.len(),
            model_output,
            sample,
            noise,
            needs_noise,
        )?;
        let a_t = self.alphas_cumprod[self.timesteps[index] as usize];
        // The previous timestep is the schedule's next entry; past the end, alpha_bar = 1.
        let a_prev = match self.timesteps.get(index + 1) {
            Some(&t) => self.alphas_cumprod[t as usize],
            None => 1.0,
        };
        let alpha_t = a_t / a_prev;
        let beta_t = 1.0 - alpha_t;
        let (x0, _) =
            self.prediction
                .x0_and_eps(model_output, sample, a_t.sqrt(), (1.0 - a_t).sqrt())?;
        let x0 = clip_sample(x0, self.clip)?;
        // Posterior mean mu~(x_t, x0) (eq. 7).
        let x0_coeff = a_prev.sqrt() * beta_t / (1.0 - a_t);
        let xt_coeff = alpha_t.sqrt() * (1.0 - a_prev) / (1.0 - a_t);
        let prev = lin(&x0, x0_coeff, sample, xt_coeff)?;
        match noise.filter(|_| needs_noise) {
            Some(z) => {
                // Posterior variance beta~_t = (1 - a_prev) / (1 - a_t) * beta_t (eq. 7), floored.
                let variance = if self.fixed_large {
                    beta_t
                } else {
                    ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20)
                };
                Ok((prev + z.affine(variance.sqrt(), 0.0)?)?)
            }
            None => Ok(prev),
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        q_sample(
            original,
            noise,
            self.alphas_cumprod[self.timesteps[index] as usize],
        )
    }
}
