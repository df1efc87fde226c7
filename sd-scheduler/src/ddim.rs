//! DDIM: Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", as diffusers'
//! `DDIMScheduler`. eta = 0 is the deterministic sampler; eta = 1 has DDPM's variance.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, q_sample, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_step, lin};
use crate::prediction::clip_sample;
use crate::spacing::{spaced_timesteps, Grid};
use crate::{Error, PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// DDIM sampler (eq. 12 of the paper), with `eta` from [`SchedulerConfig::eta`].
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f64>,
    /// alpha_bar "after" t = 0: 1 with `set_alpha_to_one`, else alpha_bar_0.
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    /// diffusers steps back by T // N whatever the spacing.
    step_ratio: i64,
    prediction: PredictionType,
    clip: Option<f64>,
    eta: f64,
}

impl DdimScheduler {
    /// `DDIMScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("DDIM")?;
        if config.eta.is_nan() || config.eta < 0.0 {
            return Err(Error::InvalidConfig(format!(
                "eta must be >= 0, got {}",
                config.eta
            )));
        }
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let t = config.num_train_timesteps;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let timesteps = spaced_timesteps(spacing, t, steps, config.steps_offset, Grid::Integer)?;
        let set_alpha_to_one = config.set_alpha_to_one.unwrap_or(true);
        Ok(Self {
            final_alpha_cumprod: if set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            timesteps,
            step_ratio: (t / steps) as i64,
            prediction: config.prediction_type,
            clip: config.clip_range(true),
            eta: config.eta,
        })
    }

    fn alpha_bar(&self, t: i64) -> f64 {
        usize::try_from(t)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t).copied())
            .unwrap_or(self.final_alpha_cumprod)
    }
}

impl Scheduler for DdimScheduler {
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
    fn noise_needed(&self, _index: usize) -> bool {
        self.eta > 0.0
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
            self.eta > 0.0,
        )?;
        let t = self.timesteps[index] as i64;
        let (a_t, a_prev) = (self.alpha_bar(t), self.alpha_bar(t - self.step_ratio));
        let (x0, eps) =
            self.prediction
                .x0_and_eps(model_output, sample, a_t.sqrt(), (1.0 - a_t).sqrt())?;
        let x0 = clip_sample(x0, self.clip)?;
        // sigma_t(eta) = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)   (eq. 16)
        let sigma = self.eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).sqrt();
        // x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z   (eq. 12)
        let prev = lin(
            &x0,
            a_prev.sqrt(),
            &eps,
            (1.0 - a_prev - sigma * sigma).sqrt(),
        )?;
        match noise.filter(|_| self.eta > 0.0) {
            Some(z) => Ok((prev + z.affine(sigma, 0.0)?)?),
            None => Ok(prev),
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        q_sample(
            original,
            noise,
            self.alpha_bar(self.timesteps[index] as i64),
        )
    }
}
