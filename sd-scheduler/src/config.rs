//! `SchedulerConfig`: diffusers' `scheduler_config.json`, with per-class defaults.

use serde::Deserialize;

use crate::betas::BetaSchedule;
use crate::prediction::PredictionType;
use crate::spacing::TimestepSpacing;
use crate::{Error, Result};

/// A diffusers `scheduler_config.json`.
///
/// Unknown keys are ignored. Keys whose diffusers default differs between scheduler classes are
/// `Option`s here: `None` means "the default of the class being built", exactly as
/// `Class.from_config(config)` resolves a missing key. [`Default`] is Stable Diffusion 1.5's file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SchedulerConfig {
    /// diffusers' `_class_name` (e.g. `"PNDMScheduler"`): the model's default scheduler.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Number of diffusion steps the model was trained with (T).
    #[serde(default = "default_num_train_timesteps")]
    pub num_train_timesteps: usize,
    /// First beta (class default: 0.0001, Heun 0.00085).
    #[serde(default)]
    pub beta_start: Option<f64>,
    /// Last beta (class default: 0.02, Heun 0.012).
    #[serde(default)]
    pub beta_end: Option<f64>,
    /// How betas go from `beta_start` to `beta_end`.
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, overriding `beta_schedule`.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts.
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// How inference timesteps are spread (class default: leading for DDIM/DDPM/PNDM, else linspace).
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Added to every `leading` timestep (SD uses 1).
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM/PNDM: alpha_bar after the last step is 1 (else alpha_bar at t = 0).
    /// Class default: DDIM true, PNDM false.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// Clamp the predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    /// Class default: DDIM and DDPM true, Heun false.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    /// Bound of `clip_sample`.
    #[serde(default = "one")]
    pub clip_sample_range: f64,
    /// PNDM: skip the Runge-Kutta warm-up (SD configs set it; only `true` is implemented).
    #[serde(default)]
    pub skip_prk_steps: bool,
    /// LMS, Euler, Heun, DPM-Solver++, UniPC: Karras et al. (2022) sigmas (rho = 7).
    #[serde(default)]
    pub use_karras_sigmas: bool,
    /// DDIM's eta (not a diffusers config key: diffusers passes it to `step`); 0 = deterministic.
    #[serde(default)]
    pub eta: f64,
    /// DDPM: `fixed_small` (default) or `fixed_large`.
    #[serde(default)]
    pub variance_type: Option<String>,
    /// DPM-Solver++ / UniPC order (only 2 is implemented).
    #[serde(default = "two")]
    pub solver_order: usize,
    /// DPM-Solver: only `dpmsolver++`.
    #[serde(default)]
    pub algorithm_type: Option<String>,
    /// DPM-Solver: `midpoint`; UniPC: `bh2`.
    #[serde(default)]
    pub solver_type: Option<String>,
    /// DPM-Solver++ / UniPC: first-order final steps.
    #[serde(default = "yes")]
    pub lower_order_final: bool,
    /// Final sigma of Euler, DPM-Solver++, UniPC (only `zero`).
    #[serde(default)]
    pub final_sigmas_type: Option<String>,
    /// UniPC: predict x0 (only `true`).
    #[serde(default = "yes")]
    pub predict_x0: bool,
    /// Dynamic thresholding (not implemented: must be false).
    #[serde(default)]
    pub thresholding: bool,
    /// Zero-terminal-SNR rescaling (not implemented: must be false).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Exponential sigmas (not implemented: must be false).
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    /// Beta sigmas (not implemented: must be false).
    #[serde(default)]
    pub use_beta_sigmas: bool,
    /// Euler: `linear` sigma interpolation (only `linear`).
    #[serde(default)]
    pub interpolation_type: Option<String>,
    /// Euler: `discrete` timesteps (only `discrete`).
    #[serde(default)]
    pub timestep_type: Option<String>,
}

// serde defaults of the keys every diffusers scheduler class shares.
fn default_num_train_timesteps() -> usize {
    1000
}
fn one() -> f64 {
    1.0
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}

impl Default for SchedulerConfig {
    /// Stable Diffusion 1.5's `scheduler/scheduler_config.json`.
    fn default() -> Self {
        Self {
            class_name: Some("PNDMScheduler".into()),
            num_train_timesteps: 1000,
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            skip_prk_steps: true,
            use_karras_sigmas: false,
            eta: 0.0,
            variance_type: None,
            solver_order: 2,
            algorithm_type: None,
            solver_type: None,
            lower_order_final: true,
            final_sigmas_type: None,
            predict_x0: true,
            thresholding: false,
            rescale_betas_zero_snr: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            interpolation_type: None,
            timestep_type: None,
        }
    }
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text; missing keys take diffusers' class defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)?;
        if config.num_train_timesteps == 0 {
            return Err(Error::InvalidConfig("num_train_timesteps is 0".into()));
        }
        Ok(config)
    }

    /// SD 2.x 768 (v-prediction) config: SD 1.5's betas with `prediction_type = v_prediction`.
    pub fn sd2_v_prediction() -> Self {
        Self {
            class_name: Some("DDIMScheduler".into()),
            prediction_type: PredictionType::VPrediction,
            ..Self::default()
        }
    }

    /// Checks the options that no scheduler here implements, and those `scheduler` lacks.
    pub(crate) fn check_common(&self, scheduler: &'static str) -> Result<()> {
        let unsupported = |what: &str| {
            Err(Error::Unsupported {
                scheduler,
                what: what.to_string(),
            })
        };
        if self.thresholding {
            return unsupported("thresholding = true");
        }
        if self.rescale_betas_zero_snr {
            return unsupported("rescale_betas_zero_snr = true");
        }
        if self.use_exponential_sigmas || self.use_beta_sigmas {
            return unsupported("exponential / beta sigmas");
        }
        if let Some(t) = self.final_sigmas_type.as_deref().filter(|t| *t != "zero") {
            return unsupported(&format!("final_sigmas_type = {t}"));
        }
        if let Some(t) = self
            .interpolation_type
            .as_deref()
            .filter(|t| *t != "linear")
        {
            return unsupported(&format!("interpolation_type = {t}"));
        }
        if let Some(t) = self.timestep_type.as_deref().filter(|t| *t != "discrete") {
            return unsupported(&format!("timestep_type = {t}"));
        }
        Ok(())
    }

    /// `clip_sample_range` when clipping is on (`clip_sample`, or the class default).
    pub(crate) fn clip_range(&self, class_default: bool) -> Option<f64> {
        self.clip_sample
            .unwrap_or(class_default)
            .then_some(self.clip_sample_range)
    }
}

impl SchedulerConfig {
    /// The scheduler the config's `_class_name` names: a model folder's default scheduler.
    pub fn default_kind(&self) -> Result<crate::SchedulerKind> {
        match &self.class_name {
            Some(name) => crate::SchedulerKind::from_class_name(name),
            None => Err(Error::InvalidConfig("the config has no _class_name".into())),
        }
    }
}
