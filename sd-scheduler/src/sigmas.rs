//! Noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) for the sigma-parametrised schedulers:
//! the training table, interpolation at fractional timesteps, Karras sigmas and their inverse.

use crate::betas::BetaSchedule;
use crate::spacing::{spaced_timesteps, Grid, TimestepSpacing};
use crate::{Result, SchedulerConfig};

/// sigma_t for every training timestep, in float32 as diffusers computes the table.
pub(crate) fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            f64::from(((1.0 - a) / a).sqrt())
        })
        .collect()
}

/// `np.interp(t, [0, 1, ..., len - 1], table)`.
pub(crate) fn interp(table: &[f64], t: f64) -> f64 {
    let last = table.len() - 1;
    if t <= 0.0 {
        return table[0];
    }
    if t >= last as f64 {
        return table[last];
    }
    let j = t.floor() as usize;
    if t == j as f64 {
        return table[j];
    }
    let slope = table[j + 1] - table[j];
    slope * (t - j as f64) + table[j]
}

/// Karras et al. (2022) eq. 5 with rho = 7: n sigmas from `sigma_max` down to `sigma_min`.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    crate::spacing::linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv + ramp * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// ln of the sigma table; numpy takes the log of the float32 table in float32.
pub(crate) fn log_sigmas(table: &[f64]) -> Vec<f64> {
    table.iter().map(|&s| f64::from((s as f32).ln())).collect()
}

/// The (fractional) timestep whose interpolated log-sigma is ln(sigma): diffusers' `_sigma_to_t`.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last training timestep whose log-sigma is <= ln(sigma), kept below the table's end.
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// x = alpha_t * x0 + sigma_t * eps written from sigma (DPM-Solver's `_sigma_to_alpha_sigma_t`).
pub(crate) fn alpha_sigma_t(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half log-SNR lambda = ln(alpha_t) - ln(sigma_t) (DPM-Solver, Lu et al. 2022, sec. 3.1).
pub(crate) fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma) = alpha_sigma_t(sigma);
    alpha.ln() - sigma.ln()
}

/// Timesteps and sigmas (with a final 0) of Euler, Euler a, LMS and Heun.
pub(crate) fn karras_family_schedule(
    config: &SchedulerConfig,
    alphas_cumprod: &[f64],
    steps: usize,
    karras_sigmas: bool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
    let n = config.num_train_timesteps;
    let mut timesteps = spaced_timesteps(spacing, n, steps, config.steps_offset, Grid::Fractional)?;
    let table = train_sigmas(alphas_cumprod);
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(&table, t)).collect();
    if karras_sigmas {
        let log_table = log_sigmas(&table);
        sigmas = karras(sigmas[sigmas.len() - 1], sigmas[0], steps);
        timesteps = sigmas
            .iter()
            .map(|&s| f64::from(sigma_to_t(s, &log_table) as f32))
            .collect();
    }
    sigmas.push(0.0);
    Ok((timesteps, to_f32(sigmas)))
}

/// Timesteps and sigmas (with a final 0) of DPM-Solver++ and UniPC.
pub(crate) fn multistep_schedule(
    config: &SchedulerConfig,
    alphas_cumprod: &[f64],
    steps: usize,
    round_karras: fn(f64, BetaSchedule) -> f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
    let n = config.num_train_timesteps;
    let mut timesteps = spaced_timesteps(spacing, n, steps, config.steps_offset, Grid::DropLast)?;
    let table = train_sigmas(alphas_cumprod);
    let mut sigmas: Vec<f64>;
    if config.use_karras_sigmas {
        let log_table = log_sigmas(&table);
        sigmas = karras(table[0], table[n - 1], steps);
        timesteps = sigmas
            .iter()
            .map(|&s| round_karras(sigma_to_t(s, &log_table), config.beta_schedule))
            .collect();
    } else {
        sigmas = timesteps.iter().map(|&t| interp(&table, t)).collect();
    }
    sigmas.push(0.0);
    Ok((timesteps, to_f32(sigmas)))
}

/// diffusers stores schedules as float32 tensors.
fn to_f32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|s| f64::from(s as f32)).collect()
}

/// `init_noise_sigma` of the Euler family: the largest sigma, or sqrt(max^2 + 1) for `leading`.
pub(crate) fn karras_family_init_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f64, f64::max) as f32;
    match spacing {
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
        _ => f64::from(max),
    }
}
