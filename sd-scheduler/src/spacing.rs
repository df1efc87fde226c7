//! Timestep spacing: which of the T training timesteps an N-step schedule visits.
//!
//! The three rules of diffusers (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
//! Steps are Flawed", table 2), computed the way numpy does (round half to even).

use serde::Deserialize;

use crate::{Error, Result};

/// How inference timesteps are spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// Multiples of `T / N` from 0, plus `steps_offset` (SD's original rule).
    Leading,
    /// Evenly spaced from `T - 1` down, so the first step is the noisiest timestep.
    Trailing,
    /// `N` evenly spaced points over `[0, T - 1]`.
    Linspace,
}

/// The shape of the grid a scheduler family takes its timesteps from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grid {
    /// `N` integer timesteps (DDIM, DDPM, PNDM).
    Integer,
    /// `N` timesteps; `linspace` ones stay fractional, as float32 (Euler, Euler a, LMS, Heun).
    Fractional,
    /// The `N` largest of `N + 1` integer grid points (DPM-Solver++, UniPC).
    DropLast,
}

/// Checks `steps` against `num_train` as diffusers' `set_timesteps` does.
pub(crate) fn check_steps(steps: usize, num_train: usize) -> Result<()> {
    match steps {
        0 => Err(Error::ZeroSteps),
        s if s > num_train => Err(Error::TooManySteps {
            steps,
            max: num_train,
        }),
        _ => Ok(()),
    }
}

/// Descending timesteps of an `steps`-step schedule over `num_train` training timesteps.
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
    grid: Grid,
) -> Result<Vec<f64>> {
    check_steps(steps, num_train)?;
    // DropLast spaces N + 1 points and discards the last (t = 0).
    let points = if grid == Grid::DropLast {
        steps + 1
    } else {
        steps
    };
    let mut ts: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => {
            let lin = linspace(0.0, (num_train - 1) as f64, points);
            match grid {
                Grid::Fractional => lin.iter().map(|&t| f64::from(t as f32)).collect(),
                _ => lin.iter().map(|t| t.round_ties_even()).collect(),
            }
        }
        TimestepSpacing::Leading => {
            let ratio = num_train / points;
            (0..points)
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // np.arange(T, 0, -T/N) fills start + i * ((start + step) - start). numpy can
            // produce N + 1 values (the last rounding to t = -1); diffusers then steps at an
            // invalid timestep. We keep the first N.
            let start = num_train as f64;
            let delta = (start - start / steps as f64) - start;
            let mut ts: Vec<f64> = (0..steps)
                .map(|i| (start + i as f64 * delta).round_ties_even() - 1.0)
                .collect();
            ts.reverse();
            ts
        }
    };
    ts.reverse();
    if grid == Grid::DropLast && spacing != TimestepSpacing::Trailing {
        ts.pop();
    }
    if let Some(&t) = ts.iter().find(|&&t| t < 0.0 || t >= num_train as f64) {
        return Err(Error::TimestepOutOfRange {
            timestep: t as i64,
            num_train_timesteps: num_train,
        });
    }
    Ok(ts)
}

/// `np.linspace(start, stop, n)`: `start + i * step`, with the last point exactly `stop`.
pub(crate) fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}
