//! Choosing a scheduler by name or by diffusers class, and building it.

use std::fmt;
use std::str::FromStr;

use crate::{
    DdimScheduler, DdpmScheduler, DpmSolverMultistepScheduler, Error, EulerAncestralScheduler,
    EulerScheduler, HeunScheduler, LmsScheduler, PndmScheduler, Result, Scheduler, SchedulerConfig,
    UniPcScheduler,
};

/// The schedulers of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// [`DdimScheduler`].
    Ddim,
    /// [`DdpmScheduler`].
    Ddpm,
    /// [`PndmScheduler`] (PLMS).
    Pndm,
    /// [`LmsScheduler`].
    Lms,
    /// [`EulerScheduler`].
    Euler,
    /// [`EulerAncestralScheduler`].
    EulerAncestral,
    /// [`HeunScheduler`].
    Heun,
    /// [`DpmSolverMultistepScheduler`] (DPM++ 2M).
    DpmSolverPlusPlus,
    /// [`UniPcScheduler`].
    UniPc,
}

impl SchedulerKind {
    /// Every kind, in the order of [`SchedulerKind::name`]'s list.
    pub const ALL: [SchedulerKind; 9] = [
        Self::Ddim,
        Self::Ddpm,
        Self::Pndm,
        Self::Lms,
        Self::Euler,
        Self::EulerAncestral,
        Self::Heun,
        Self::DpmSolverPlusPlus,
        Self::UniPc,
    ];

    /// The name [`FromStr`] accepts (`ddim`, `euler-ancestral`, `dpm-solver++`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Pndm => "pndm",
            Self::Lms => "lms",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-ancestral",
            Self::Heun => "heun",
            Self::DpmSolverPlusPlus => "dpm-solver++",
            Self::UniPc => "unipc",
        }
    }

    /// The diffusers class this kind reproduces.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Ddpm => "DDPMScheduler",
            Self::Pndm => "PNDMScheduler",
            Self::Lms => "LMSDiscreteScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::Heun => "HeunDiscreteScheduler",
            Self::DpmSolverPlusPlus => "DPMSolverMultistepScheduler",
            Self::UniPc => "UniPCMultistepScheduler",
        }
    }

    /// The kind for a diffusers `_class_name`, e.g. a model folder's `scheduler_config.json`.
    pub fn from_class_name(class_name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.class_name() == class_name)
            .ok_or_else(|| Error::UnknownClassName(class_name.to_string()))
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::UnknownScheduler {
                name: name.to_string(),
                valid: Self::ALL.map(Self::name).join(", "),
            })
    }
}

/// Builds a `kind` scheduler from `config` with `steps` inference steps
/// (diffusers: `Class.from_config(config)` then `set_timesteps(steps)`).
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, steps)?),
        SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(config, steps)?),
        SchedulerKind::Pndm => Box::new(PndmScheduler::new(config, steps)?),
        SchedulerKind::Lms => Box::new(LmsScheduler::new(config, steps)?),
        SchedulerKind::Euler => Box::new(EulerScheduler::new(config, steps)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralScheduler::new(config, steps)?),
        SchedulerKind::Heun => Box::new(HeunScheduler::new(config, steps)?),
        SchedulerKind::DpmSolverPlusPlus => {
            Box::new(DpmSolverMultistepScheduler::new(config, steps)?)
        }
        SchedulerKind::UniPc => Box::new(UniPcScheduler::new(config, steps)?),
    })
}
