//! The one error type of the crate.

/// Everything that can go wrong when building or stepping a scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `num_inference_steps` was 0.
    #[error("num_inference_steps must be at least 1, got 0")]
    ZeroSteps,
    /// More inference steps than the model was trained with.
    #[error("num_inference_steps {steps} exceeds num_train_timesteps {max}")]
    TooManySteps {
        /// Requested steps.
        steps: usize,
        /// `num_train_timesteps` of the config.
        max: usize,
    },
    /// A step index past the end of `timesteps()`.
    #[error("step index {index} is out of range: the schedule has {len} timesteps")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// `timesteps().len()`.
        len: usize,
    },
    /// A spacing produced a timestep outside `[0, num_train_timesteps)`.
    #[error("timestep {timestep} is outside [0, {num_train_timesteps}) (check steps_offset and the spacing)")]
    TimestepOutOfRange {
        /// The offending timestep.
        timestep: i64,
        /// `num_train_timesteps` of the config.
        num_train_timesteps: usize,
    },
    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch: {what} has shape {got:?}, the sample has {expected:?}")]
    ShapeMismatch {
        /// Which argument is wrong (`model_output`, `noise`, ...).
        what: &'static str,
        /// The sample's shape.
        expected: Vec<usize>,
        /// The argument's shape.
        got: Vec<usize>,
    },
    /// `step` was called without noise at an index where the scheduler needs it.
    #[error("step {index} needs noise (see `Scheduler::noise_needed`) but none was given")]
    MissingNoise {
        /// The step index.
        index: usize,
    },
    /// A scheduler name that is not one of ours.
    #[error("unknown scheduler {name:?}; valid names: {valid}")]
    UnknownScheduler {
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A diffusers `_class_name` we have no scheduler for.
    #[error("no scheduler for diffusers class {0:?}")]
    UnknownClassName(String),
    /// A config value this scheduler does not implement.
    #[error("{scheduler}: unsupported configuration: {what}")]
    Unsupported {
        /// The scheduler that refused.
        scheduler: &'static str,
        /// What is not supported.
        what: String,
    },
    /// A config that is inconsistent in itself.
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `scheduler_config.json` could not be parsed.
    #[error("scheduler config JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
