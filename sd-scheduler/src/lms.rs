//! Linear multistep (LMS) sampler of Karras et al. (2022) / k-diffusion, as diffusers'
//! `LMSDiscreteScheduler` (order 4).

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_shape, check_step, lin};
use crate::sigmas::{karras_family_init_sigma, karras_family_schedule};
use crate::{PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// The order diffusers' `step` uses by default.
const ORDER: usize = 4;

/// LMS sampler on the probability-flow ODE dx/dsigma = (x - x0) / sigma.
#[derive(Debug, Clone)]
pub struct LmsScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    /// The last (up to) four derivatives, oldest first.
    derivatives: Vec<Tensor>,
}

impl LmsScheduler {
    /// `LMSDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.check_common("LMS")?;
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let (timesteps, sigmas) =
            karras_family_schedule(config, &alphas_cumprod, steps, config.use_karras_sigmas)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        Ok(Self {
            init_noise_sigma: karras_family_init_sigma(&sigmas, spacing),
            timesteps,
            sigmas,
            prediction: config.prediction_type,
            derivatives: Vec::new(),
        })
    }

    /// integral from sigma_i to sigma_{i+1} of the Lagrange basis polynomial that is 1 at
    /// sigma_{i-current} and 0 at the other sigma_{i-k}, k < order.
    fn coefficient(&self, order: usize, index: usize, current: usize) -> f64 {
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| {
                    (tau - self.sigmas[index - k])
                        / (self.sigmas[index - current] - self.sigmas[index - k])
                })
                .product::<f64>()
        };
        gauss_legendre(basis, self.sigmas[index], self.sigmas[index + 1])
    }
}

/// 4-point Gauss-Legendre quadrature: exact for polynomials up to degree 7 (the basis
/// polynomials have degree <= 3), where diffusers calls scipy's adaptive `quad`.
fn gauss_legendre(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ];
    let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
    half * NODES
        .iter()
        .map(|&(x, w)| w * f(mid + half * x))
        .sum::<f64>()
}

impl Scheduler for LmsScheduler {
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
        let sigma = self.sigmas[index];
        let x0 = self.prediction.x0_from_sigma(model_output, sample, sigma)?;
        let derivative = ((sample - x0)? / sigma)?;
        if self.derivatives.len() == ORDER {
            self.derivatives.remove(0);
        }
        self.derivatives.push(derivative);
        // diffusers sizes the formula by the index, not by the history: a run started at a
        // later index (img2img) uses the first coefficients of a higher-order formula.
        let order = (index + 1).min(ORDER);
        let mut update: Option<Tensor> = None;
        for (current, d) in self.derivatives.iter().rev().enumerate().take(order) {
            let term = d.affine(self.coefficient(order, index, current), 0.0)?;
            update = Some(match update {
                Some(u) => (u + term)?,
                None => term,
            });
        }
        match update {
            Some(u) => Ok((sample + u)?),
            None => Ok(sample.clone()),
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
