//! PNDM's pseudo linear multistep (PLMS) sampler: Liu et al. (2022), "Pseudo Numerical Methods
//! for Diffusion Models on Manifolds", as diffusers' `PNDMScheduler` with `skip_prk_steps`
//! (what Stable Diffusion uses).

use candle_core::Tensor;

use crate::betas::{class_alphas_cumprod, q_sample, DEFAULT_BETA_RANGE};
use crate::checks::{check_index, check_step, lin};
use crate::spacing::{spaced_timesteps, Grid};
use crate::{Error, PredictionType, Result, Scheduler, SchedulerConfig, TimestepSpacing};

/// PLMS sampler. Timesteps repeat the second one (N + 1 entries for N >= 2): the first step is an
/// Euler step whose result is then redone as a second-order step at the same timestep.
#[derive(Debug, Clone)]
pub struct PndmScheduler {
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    step_ratio: i64,
    v_prediction: bool,
    /// Steps taken so far by this scheduler (diffusers' `counter`).
    counter: usize,
    /// The last (up to) four model outputs, oldest first (diffusers' `ets`).
    ets: Vec<Tensor>,
    /// The sample the first step started from, redone by the second.
    cur_sample: Option<Tensor>,
}

impl PndmScheduler {
    /// `PNDMScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: &str| Error::Unsupported {
            scheduler: "PNDM",
            what: what.into(),
        };
        config.check_common("PNDM")?;
        if !config.skip_prk_steps {
            return Err(unsupported("skip_prk_steps = false (Runge-Kutta warm-up)"));
        }
        if config.prediction_type == PredictionType::Sample {
            return Err(unsupported("prediction_type = sample"));
        }
        let alphas_cumprod = class_alphas_cumprod(config, DEFAULT_BETA_RANGE)?;
        let n = config.num_train_timesteps;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let mut timesteps =
            spaced_timesteps(spacing, n, steps, config.steps_offset, Grid::Integer)?;
        if timesteps.len() >= 2 {
            timesteps.insert(1, timesteps[1]);
        }
        Ok(Self {
            final_alpha_cumprod: if config.set_alpha_to_one.unwrap_or(false) {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            timesteps,
            step_ratio: (n / steps) as i64,
            v_prediction: config.prediction_type == PredictionType::VPrediction,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
        })
    }

    fn alpha_bar(&self, t: i64) -> Result<f64> {
        match usize::try_from(t) {
            Err(_) => Ok(self.final_alpha_cumprod),
            Ok(t) => self
                .alphas_cumprod
                .get(t)
                .copied()
                .ok_or(Error::TimestepOutOfRange {
                    timestep: t as i64,
                    num_train_timesteps: self.alphas_cumprod.len(),
                }),
        }
    }

    /// x_{t-delta} from x_t and eps: the transfer phi of eq. 11 of the paper.
    fn prev_sample(&self, sample: &Tensor, t: i64, prev_t: i64, eps: &Tensor) -> Result<Tensor> {
        let (a_t, a_prev) = (self.alpha_bar(t)?, self.alpha_bar(prev_t)?);
        let eps = if self.v_prediction {
            lin(eps, a_t.sqrt(), sample, (1.0 - a_t).sqrt())?
        } else {
            eps.clone()
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * (1.0 - a_prev).sqrt() + (a_t * (1.0 - a_t) * a_prev).sqrt();
        lin(sample, sample_coeff, &eps, -(a_prev - a_t) / denom)
    }
}

impl Scheduler for PndmScheduler {
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
        let mut t = self.timesteps[index] as i64;
        let mut prev_t = t - self.step_ratio;
        if self.counter == 1 {
            // The repeated timestep: redo the first step from its start with averaged eps.
            prev_t = t;
            t += self.step_ratio;
        } else {
            if self.ets.len() == 4 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        }
        let e = |k: usize| &self.ets[self.ets.len() - k];
        // Linear multistep (Adams-Bashforth) combinations of eps, eq. 12 of the paper.
        let (eps, from) = match (self.ets.len(), self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                (model_output.clone(), sample.clone())
            }
            (1, 1) => {
                let start = self.cur_sample.take().unwrap_or_else(|| sample.clone());
                (((model_output + e(1))? / 2.0)?, start)
            }
            (2, _) => (((e(1).affine(3.0, 0.0)? - e(2))? / 2.0)?, sample.clone()),
            (3, _) => {
                let s = ((e(1).affine(23.0, 0.0)? - e(2).affine(16.0, 0.0)?)?
                    + e(3).affine(5.0, 0.0)?)?;
                ((s / 12.0)?, sample.clone())
            }
            _ => {
                let s = ((e(1).affine(55.0, 0.0)? - e(2).affine(59.0, 0.0)?)?
                    + (e(3).affine(37.0, 0.0)? - e(4).affine(9.0, 0.0)?)?)?;
                (s.affine(1.0 / 24.0, 0.0)?, sample.clone())
            }
        };
        let prev = self.prev_sample(&from, t, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        check_index(index, self.timesteps.len())?;
        q_sample(
            original,
            noise,
            self.alpha_bar(self.timesteps[index] as i64)?,
        )
    }
}
