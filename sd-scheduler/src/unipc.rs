//! UniPC: Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
//! of Diffusion Models", as diffusers' `UniPCMultistepScheduler` with `solver_order = 2`,
//! `solver_type = bh2`, `predict_x0 = true`.

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_shape, check_step, lin};
use crate::sigmas::{alpha_sigma_t, lambda, multistep_schedule};
use crate::{Error, PredictionType, Result, Scheduler, SchedulerConfig};

/// UniPC-2 (bh2): a UniP predictor each step, corrected by UniC once the next model output is
/// known (the corrector reuses that model call, so it costs nothing extra).
#[derive(Debug, Clone)]
pub struct UniPcScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    lower_order_final: bool,
    /// x0 predictions of the last two steps, oldest first.
    model_outputs: Vec<Tensor>,
    /// The sample the last predictor started from (corrected in the next step).
    last_sample: Option<Tensor>,
    /// The order the last predictor used (and the next corrector uses).
    last_order: usize,
}

/// Coefficients of a UniC / UniP update from x_{s0} at sigma_s0 to sigma_t (bh2, predict x0).
struct Update {
    alpha_t: f64,
    /// sigma_t / sigma_s0 (of the alpha/sigma form).
    ratio: f64,
    /// h phi_1(h) = e^{-h} - 1 of the data-prediction form (eq. 5 / B(h) of bh2).
    h_phi_1: f64,
    hh: f64,
}

impl Update {
    fn new(sigma_s0: f64, sigma_t: f64) -> Self {
        let (alpha_t, sig_t) = alpha_sigma_t(sigma_t);
        let (_, sig_s0) = alpha_sigma_t(sigma_s0);
        let hh = -(lambda(sigma_t) - lambda(sigma_s0));
        Self {
            alpha_t,
            ratio: sig_t / sig_s0,
            h_phi_1: hh.exp_m1(),
            hh,
        }
    }

    /// x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0 (the first-order part).
    fn base(&self, x: &Tensor, m0: &Tensor) -> Result<Tensor> {
        lin(x, self.ratio, m0, -self.alpha_t * self.h_phi_1)
    }
}

impl UniPcScheduler {
    /// `UniPCMultistepScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: String| Error::Unsupported {
            scheduler: "UniPC",
            what,
        };
        config.check_common("UniPC")?;
        // diffusers maps DPM-Solver's solver types to bh2.
        let solver = config.solver_type.as_deref().unwrap_or("bh2");
        if !matches!(solver, "bh2" | "midpoint" | "heun" | "logrho") {
            return Err(unsupported(format!("solver_type = {solver}")));
        }
        if config.solver_order != 2 {
            return Err(unsupported(format!(
                "solver_order = {}",
                config.solver_order
            )));
        }
        if !config.predict_x0 {
            return Err(unsupported("predict_x0 = false".into()));
        }
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let (timesteps, sigmas) =
            multistep_schedule(config, &alphas_cumprod, steps, |t, _| t.round_ties_even())?;
        Ok(Self {
            timesteps,
            sigmas,
            prediction: config.prediction_type,
            lower_order_final: config.lower_order_final,
            model_outputs: Vec::new(),
            last_sample: None,
            last_order: 1,
        })
    }

    /// UniC (Algorithm 2 of the paper, bh2): corrects the last predictor's result `sample`
    /// with the model output `model_t` it produced.
    fn correct(&self, index: usize, last_sample: &Tensor, model_t: &Tensor) -> Result<Tensor> {
        let m0 = &self.model_outputs[self.model_outputs.len() - 1];
        let u = Update::new(self.sigmas[index - 1], self.sigmas[index]);
        let x = u.base(last_sample, m0)?;
        let d1_t = (model_t - m0)?;
        let b_h = u.h_phi_1;
        let correction = if self.last_order == 2 && self.model_outputs.len() == 2 && index >= 2 {
            // Solve [[1, 1], [r, 1]] rho = b with b_k = k! h phi_{k+1}(h) / B(h).
            let h = -u.hh;
            let r = (lambda(self.sigmas[index - 2]) - lambda(self.sigmas[index - 1])) / h;
            let phi_2 = u.h_phi_1 / u.hh - 1.0;
            let phi_3 = phi_2 / u.hh - 0.5;
            let (b1, b2) = (phi_2 / b_h, 2.0 * phi_3 / b_h);
            let rho0 = (b1 - b2) / (1.0 - r);
            let rho1 = b1 - rho0;
            let d1 = ((&self.model_outputs[0] - m0)? / r)?;
            lin(&d1, rho0, &d1_t, rho1)?
        } else {
            (d1_t * 0.5)?
        };
        lin(&x, 1.0, &correction, -u.alpha_t * b_h)
    }

    /// UniP-p (Algorithm 1 of the paper, bh2) from `sample` at `index` to `index + 1`.
    fn predict(&self, index: usize, sample: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = &self.model_outputs[self.model_outputs.len() - 1];
        let u = Update::new(self.sigmas[index], self.sigmas[index + 1]);
        let x = u.base(sample, m0)?;
        if order < 2 || self.model_outputs.len() < 2 || index == 0 {
            return Ok(x);
        }
        let r = (lambda(self.sigmas[index - 1]) - lambda(self.sigmas[index])) / -u.hh;
        let d1 = ((&self.model_outputs[0] - m0)? / r)?;
        // rho_p = 1/2 for order 2.
        lin(&x, 1.0, &d1, -u.alpha_t * u.h_phi_1 * 0.5)
    }
}

impl Scheduler for UniPcScheduler {
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
        let (alpha, sigma) = alpha_sigma_t(self.sigmas[index]);
        let (x0, _) = self
            .prediction
            .x0_and_eps(model_output, sample, alpha, sigma)?;
        let sample = match self.last_sample.take().filter(|_| index > 0) {
            Some(last) => self.correct(index, &last, &x0)?,
            None => sample.clone(),
        };
        if self.model_outputs.len() == 2 {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0);
        let mut order = 2;
        if self.lower_order_final {
            order = order.min(self.timesteps.len() - index);
        }
        // Warm-up: the k-th step of a run uses at most order k.
        order = order.min(self.model_outputs.len());
        let prev = self.predict(index, &sample, order)?;
        self.last_order = order;
        self.last_sample = Some(sample);
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
