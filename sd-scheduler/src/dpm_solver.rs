//! DPM-Solver++(2M): Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", as diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = dpmsolver++`, `solver_order = 2`, `solver_type = midpoint`.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_shape, check_step, lin};
use crate::sigmas::{alpha_sigma_t, lambda, multistep_schedule};
use crate::{BetaSchedule, Error, PredictionType, Result, Scheduler, SchedulerConfig};

/// DPM-Solver++ 2M: second-order multistep in the data-prediction (x0) form.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    /// The previous step's x0 prediction (m_{i-1} of Algorithm 2).
    previous_x0: Option<Tensor>,
}

impl DpmSolverMultistepScheduler {
    /// `DPMSolverMultistepScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: String| Error::Unsupported {
            scheduler: "DPM-Solver++",
            what,
        };
        config.check_common("DPM-Solver++")?;
        // diffusers maps the deprecated `deis` to dpmsolver++ and UniPC's solver types to midpoint.
        let algorithm = config.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        if !matches!(algorithm, "dpmsolver++" | "deis") {
            return Err(unsupported(format!("algorithm_type = {algorithm}")));
        }
        let solver = config.solver_type.as_deref().unwrap_or("midpoint");
        if !matches!(solver, "midpoint" | "logrho" | "bh1" | "bh2") {
            return Err(unsupported(format!("solver_type = {solver}")));
        }
        if config.solver_order != 2 {
            return Err(unsupported(format!(
                "solver_order = {}",
                config.solver_order
            )));
        }
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let round = |t: f64, schedule: BetaSchedule| match schedule {
            // diffusers rounds Karras timesteps except for the cosine schedule, which it then
            // truncates when casting to int64.
            BetaSchedule::SquaredcosCapV2 => t.trunc(),
            _ => t.round_ties_even(),
        };
        let (timesteps, sigmas) = multistep_schedule(config, &alphas_cumprod, steps, round)?;
        Ok(Self {
            timesteps,
            sigmas,
            prediction: config.prediction_type,
            previous_x0: None,
        })
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
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
        let (sigma_s0, sigma_t) = (self.sigmas[index], self.sigmas[index + 1]);
        let (alpha_s0, sig_s0) = alpha_sigma_t(sigma_s0);
        let (alpha_t, sig_t) = alpha_sigma_t(sigma_t);
        let (x0, _) = self
            .prediction
            .x0_and_eps(model_output, sample, alpha_s0, sig_s0)?;
        // h = lambda_t - lambda_s0; at the final sigma 0, lambda_t = inf and x_t = x0.
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let phi = alpha_t * (-h).exp_m1();
        // First order (DPM-Solver++ eq. 9) on the first step of a run and on the last one
        // (final_sigmas_type zero): x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) x0.
        let first_order = index + 1 == self.timesteps.len();
        let prev = match self
            .previous_x0
            .as_ref()
            .filter(|_| !first_order && index > 0)
        {
            None => lin(sample, sig_t / sig_s0, &x0, -phi)?,
            Some(m1) => {
                // 2M midpoint (Algorithm 2): D = x0 + (x0 - m1) / (2 r), r = h_{i-1} / h_i.
                let r = (lambda(sigma_s0) - lambda(self.sigmas[index - 1])) / h;
                let d1 = ((&x0 - m1)? / r)?;
                let prev = lin(sample, sig_t / sig_s0, &x0, -phi)?;
                lin(&prev, 1.0, &d1, -0.5 * phi)?
            }
        };
        self.previous_x0 = Some(x0);
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        check_shape("noise", noise, original)?;
        let (alpha, sigma) = alpha_sigma_t(self.sigmas[index]);
        lin(original, alpha, noise, sigma)
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }
}
