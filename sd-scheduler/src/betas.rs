//! Beta schedules and the cumulative products of alphas (alpha_bar) they define.
//!
//! diffusers keeps betas and alpha_bar as float32 tensors; every value here is rounded to f32 at
//! the same points so that the schedules agree with diffusers to the last bit or two, then
//! carried as f64.

use serde::Deserialize;

use crate::{Error, Result, SchedulerConfig};

/// How betas go from `beta_start` to `beta_end` over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Evenly spaced betas.
    #[default]
    Linear,
    /// Evenly spaced square roots of betas (Stable Diffusion's schedule).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (2021), eq. 17, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// Betas `beta_1..beta_T` of `config`, as float32 values.
pub fn betas(config: &SchedulerConfig, beta_start: f64, beta_end: f64) -> Result<Vec<f32>> {
    let n = config.num_train_timesteps;
    if let Some(trained) = &config.trained_betas {
        if trained.len() != n {
            return Err(Error::InvalidConfig(format!(
                "trained_betas has {} values, num_train_timesteps is {n}",
                trained.len()
            )));
        }
        return Ok(trained.iter().map(|&b| b as f32).collect());
    }
    Ok(match config.beta_schedule {
        BetaSchedule::Linear => linspace_f32(beta_start, beta_end, n),
        BetaSchedule::ScaledLinear => linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        BetaSchedule::SquaredcosCapV2 => {
            // alpha_bar(t) = cos^2(((t + s) / (1 + s)) * pi / 2), s = 0.008 (Nichol & Dhariwal eq. 17);
            // beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T). Time is a fraction: divide as floats.
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    })
}

/// alpha_bar_t = prod_{s <= t} (1 - beta_s) for t in 0..T (DDPM eq. 4's notation).
pub fn alphas_cumprod(
    config: &SchedulerConfig,
    beta_start: f64,
    beta_end: f64,
) -> Result<Vec<f64>> {
    let mut acc = 1.0f64;
    Ok(betas(config, beta_start, beta_end)?
        .into_iter()
        .map(|beta| {
            // torch's CPU cumprod multiplies in double and stores each partial product as float.
            acc *= f64::from(1.0f32 - beta);
            f64::from(acc as f32)
        })
        .collect())
}

/// `torch.linspace(start, end, n, dtype=float32)`: evenly spaced, symmetric from both ends.
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start as f32];
    }
    let (start, end) = (f64::from(start as f32), f64::from(end as f32));
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                (start + step * i as f64) as f32
            } else {
                (end - step * (n - 1 - i) as f64) as f32
            }
        })
        .collect()
}

/// Beta range of every diffusers class but Heun, when the config leaves it out.
pub(crate) const DEFAULT_BETA_RANGE: (f64, f64) = (0.0001, 0.02);

/// alpha_bar of `config`, with `default_range` for a missing `beta_start` / `beta_end`.
pub(crate) fn class_alphas_cumprod(
    config: &SchedulerConfig,
    default_range: (f64, f64),
) -> Result<Vec<f64>> {
    let start = config.beta_start.unwrap_or(default_range.0);
    let end = config.beta_end.unwrap_or(default_range.1);
    alphas_cumprod(config, start, end)
}

/// The forward process q(x_t | x_0): sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps (DDPM eq. 4).
pub(crate) fn q_sample(
    original: &candle_core::Tensor,
    noise: &candle_core::Tensor,
    alpha_bar: f64,
) -> Result<candle_core::Tensor> {
    crate::checks::check_shape("noise", noise, original)?;
    crate::checks::lin(original, alpha_bar.sqrt(), noise, (1.0 - alpha_bar).sqrt())
}
