//! Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1), as diffusers'
//! `HeunDiscreteScheduler`: every step but the last is an Euler predictor followed by a
//! trapezoidal corrector, each needing a model call.

use candle_core::Tensor;

use crate::checks::{check_index, check_shape, check_step, lin};
use crate::prediction::clip_sample;
use crate::sigmas::{karras_family_init_sigma, karras_family_schedule};
use crate::{alphas_cumprod, PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// Heun sampler. Timesteps are `t0, t1, t1, t2, t2, ...` (2N - 1 model calls).
#[derive(Debug, Clone)]
pub struct HeunScheduler {
    timesteps: Vec<f64>,
    /// Aligned with `timesteps`, plus the final 0: `s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0`.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    clip: Option<f64>,
    /// After a predictor step: its derivative, its step size and the sample it started from.
    pending: Option<(Tensor, f64, Tensor)>,
}

impl HeunScheduler {
    /// `HeunDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("Heun")?;
        // Heun's class defaults are SD's betas, unlike every other class.
        let start = config.beta_start.unwrap_or(0.00085);
        let end = config.beta_end.unwrap_or(0.012);
        let alphas_cumprod = alphas_cumprod(config, start, end)?;
        let (ts, sigmas) =
            karras_family_schedule(config, &alphas_cumprod, steps, config.use_karras_sigmas)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let init_noise_sigma = karras_family_init_sigma(&sigmas, spacing);
        let doubled = |v: &[f64]| {
            v.iter()
                .take(1)
                .chain(v[1..].iter().flat_map(|x| [x, x]))
                .copied()
                .collect()
        };
        let timesteps = doubled(&ts);
        let last = sigmas.len() - 1;
        let mut sigmas: Vec<f64> = doubled(&sigmas[..last]);
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: config.prediction_type,
            clip: config.clip_range(false),
            pending: None,
        })
    }
}

impl Scheduler for HeunScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        2
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
        // Predictor or corrector follows the state, not the index, as in diffusers: a run
        // started at any index begins with a predictor.
        match self.pending.take() {
            None => {
                let (sigma, sigma_next) = (self.sigmas[index], self.sigmas[index + 1]);
                let x0 = self.prediction.x0_from_sigma(model_output, sample, sigma)?;
                let x0 = clip_sample(x0, self.clip)?;
                let derivative = ((sample - x0)? / sigma)?;
                let dt = sigma_next - sigma;
                let prev = lin(sample, 1.0, &derivative, dt)?;
                self.pending = Some((derivative, dt, sample.clone()));
                Ok(prev)
            }
            Some((first_derivative, dt, start)) => {
                // The model was called at the predicted point, whose sigma is sigmas[index].
                let sigma_next = self.sigmas[index];
                let x0 = self
                    .prediction
                    .x0_from_sigma(model_output, sample, sigma_next)?;
                let x0 = clip_sample(x0, self.clip)?;
                let derivative = ((sample - x0)? / sigma_next)?;
                let derivative = ((first_derivative + derivative)? / 2.0)?;
                lin(&start, 1.0, &derivative, dt)
            }
        }
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
