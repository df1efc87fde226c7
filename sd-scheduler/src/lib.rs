#![doc = include_str!("../README.md")]

mod betas;
mod checks;
mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod error;
mod euler;
mod euler_ancestral;
mod heun;
mod kind;
mod lms;
mod pndm;
mod prediction;
mod sigmas;
mod spacing;
mod unipc;

pub use betas::{alphas_cumprod, betas, BetaSchedule};
pub use candle_core::Tensor;
pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use error::{Error, Result};
pub use euler::EulerScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use heun::HeunScheduler;
pub use kind::{build, SchedulerKind};
pub use lms::LmsScheduler;
pub use pndm::PndmScheduler;
pub use prediction::PredictionType;
pub use spacing::TimestepSpacing;
pub use unipc::UniPcScheduler;

/// A sampler: the timesteps to call the model at, and how to move the sample between them.
///
/// Steps are addressed by their index into [`timesteps`](Scheduler::timesteps). The caller runs
/// the model and passes in any noise a step needs, so a run is reproducible from its seed.
/// Multistep schedulers keep their history inside: call `step` once per index, in increasing
/// order, starting at 0 (text-to-image) or at a later index (image-to-image, diffusers'
/// `set_begin_index`); build a fresh scheduler for each run.
pub trait Scheduler: Send {
    /// Model-call timesteps, in order (Heun: 2N-1 entries, PNDM-plms: N+1, as diffusers).
    fn timesteps(&self) -> &[f64];
    /// diffusers' `scheduler.order` (img2img starts at index `t_start * order`).
    fn order(&self) -> usize;
    /// Standard deviation of the initial noise (multiply unit Gaussian latents by it).
    fn init_noise_sigma(&self) -> f64;
    /// The model's input at step `index` (divides by sqrt(sigma^2 + 1) where diffusers does).
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor>;
    /// True where diffusers' `step()` draws Gaussian noise (DDPM t > 0, Euler a, DDIM eta > 0).
    fn noise_needed(&self, index: usize) -> bool;
    /// One step from `sample` at `timesteps()[index]`: the sample at the next (less noisy) level.
    fn step(
        &mut self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;
    /// `original` noised to the level of `timesteps()[index]`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor>;
    /// The noise levels sigma (one more than timesteps, ending in 0) of sigma-based schedulers.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
}
