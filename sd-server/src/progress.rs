//! What `GET /sdapi/v1/progress` reports: the running job's fraction done, an ETA, the queue's
//! length and a preview of the picture so far, in A1111's shape.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sd_pipeline::candle_core::Tensor;
use serde::Serialize;

/// The job now running.
#[derive(Debug, Clone)]
pub struct Running {
    /// When it started.
    pub started: Instant,
    /// A1111's `job_timestamp` (`YYYYMMDDhhmmss`, UTC).
    pub timestamp: String,
    /// What it is (the prompt, or the model being loaded).
    pub label: String,
    /// The batch (`n_iter` iteration) being made, from 0.
    pub iteration: usize,
    /// Iterations in all.
    pub iterations: usize,
    /// Model calls done in this iteration.
    pub step: usize,
    /// Model calls this iteration makes (0 until the first step is known).
    pub total: usize,
    /// The latest step's predicted clean latents (x0), for the preview.
    pub preview: Option<Tensor>,
}

impl Running {
    /// A job called `label` of `iterations` batches, starting now.
    pub fn new(label: String, iterations: usize) -> Self {
        Self {
            started: Instant::now(),
            timestamp: timestamp(SystemTime::now()),
            label,
            iteration: 0,
            iterations: iterations.max(1),
            step: 0,
            total: 0,
            preview: None,
        }
    }

    /// The fraction done, in [0, 1].
    pub fn fraction(&self) -> f64 {
        let within = if self.total == 0 {
            0.0
        } else {
            self.step as f64 / self.total as f64
        };
        ((self.iteration as f64 + within) / self.iterations as f64).clamp(0.0, 1.0)
    }

    /// Seconds left at the pace so far (A1111's `eta_relative`; 0 before the first step).
    pub fn eta(&self) -> f64 {
        let fraction = self.fraction();
        if fraction <= 0.0 {
            return 0.0;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        elapsed / fraction - elapsed
    }
}

/// `YYYYMMDDhhmmss` of `time` in UTC (Howard Hinnant's civil-from-days).
fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A1111's `state` object of a progress answer.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressState {
    /// Always false (A1111's "skip" button).
    pub skipped: bool,
    /// True once the running job was interrupted.
    pub interrupted: bool,
    /// What runs (the prompt), or empty.
    pub job: String,
    /// Jobs running and waiting.
    pub job_count: usize,
    /// When the running job started (`YYYYMMDDhhmmss`), or "0".
    pub job_timestamp: String,
    /// The running job's iteration (`n_iter`), from 0.
    pub job_no: usize,
    /// Model calls done in this iteration.
    pub sampling_step: usize,
    /// Model calls of this iteration.
    pub sampling_steps: usize,
}

/// The body of `GET /sdapi/v1/progress`.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressResponse {
    /// The running job's fraction done (0 when idle).
    pub progress: f64,
    /// Seconds left, at the pace so far.
    pub eta_relative: f64,
    /// Details.
    pub state: ProgressState,
    /// A base64 PNG of the predicted picture at the latest step (latent-to-RGB preview), or
    /// null when idle, before the first step, or with `skip_current_image=true`.
    pub current_image: Option<String>,
    /// "Step 3/10" style text, or null when idle.
    pub textinfo: Option<String>,
}

impl ProgressResponse {
    /// The answer for `running` (None when idle) with `job_count` jobs in all.
    pub fn new(
        running: Option<&Running>,
        interrupted: bool,
        job_count: usize,
        current_image: Option<String>,
    ) -> Self {
        let state = ProgressState {
            skipped: false,
            interrupted,
            job: running.map(|r| r.label.clone()).unwrap_or_default(),
            job_count,
            job_timestamp: running.map_or_else(|| "0".into(), |r| r.timestamp.clone()),
            job_no: running.map_or(0, |r| r.iteration),
            sampling_step: running.map_or(0, |r| r.step),
            sampling_steps: running.map_or(0, |r| r.total),
        };
        Self {
            progress: running.map_or(0.0, Running::fraction),
            eta_relative: running.map_or(0.0, Running::eta),
            textinfo: running.map(|r| {
                format!(
                    "Batch {}/{}, step {}/{}",
                    r.iteration + 1,
                    r.iterations,
                    r.step,
                    r.total
                )
            }),
            state,
            current_image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fractions_and_timestamps() {
        let mut r = Running::new("x".into(), 2);
        assert_eq!(r.fraction(), 0.0);
        assert_eq!(r.eta(), 0.0);
        r.iteration = 1;
        r.step = 5;
        r.total = 10;
        assert_eq!(r.fraction(), 0.75);
        // 2024-02-29 23:59:58 UTC.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        assert_eq!(timestamp(t), "20240229235958");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101000000");
    }
}
