//! The crate's one error type.

/// Everything that can go wrong in `sd-pipeline`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A random tensor was asked for in a dtype the generator cannot produce.
    #[error("random tensors can be drawn as f32, f16, bf16 or f64, not {0:?}")]
    UnsupportedDType(candle_core::DType),

    /// A per-image generator list does not match the batch it should fill.
    #[error("{what}: expected {expected}, got {got}")]
    BatchMismatch {
        /// What was being matched (e.g. "seeds for a batch").
        what: &'static str,
        /// The count that was needed.
        expected: usize,
        /// The count that was given.
        got: usize,
    },

    /// The prompt's emphasis could not be read (its weights overflow).
    #[error("prompt: {0}")]
    Prompt(sd_prompt::Error),

    /// The tokenizer failed to load or to tokenize.
    #[error("tokenizer: {0}")]
    Tokenize(sd_tokenize::Error),

    /// A weights file or model folder could not be read, understood, mixed or written
    /// (sd-checkpoint's error, message unchanged).
    #[error(transparent)]
    Checkpoint(#[from] sd_checkpoint::Error),

    /// A model given to mix in (see `StableDiffusionBuilder::mix`) could not be read or mixed.
    #[error("mixing in {model}: {error}")]
    Mix {
        /// Which mix, counting from 0 in the order they were added.
        index: usize,
        /// The model's name or path.
        model: String,
        /// What went wrong with it.
        error: Box<Error>,
    },

    /// A LoRA file does not fit the model: layers it lacks, or keys of no known module
    /// (only an error when strict; see `StableDiffusionBuilder::lora_strict`).
    #[error("LoRA: {message}")]
    Lora {
        /// What does not fit, naming the files and keys.
        message: String,
    },

    /// A textual-inversion embedding does not fit the model (wrong width, a name taken twice).
    #[error("{path}: {message}")]
    Embedding {
        /// The embedding file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A generation request is out of range (the field named is at fault).
    #[error("{field}: {message}")]
    InvalidRequest {
        /// The request field (the CLI argument of the same name), e.g. `width`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// A model network failed to build or to run.
    #[error("{component}: {message}")]
    Model {
        /// Which network: `unet`, `vae` or `text_encoder`.
        component: &'static str,
        /// The model crate's message (names the tensor or file at fault).
        message: String,
    },

    /// A scheduler could not be built or stepped.
    #[error("scheduler: {0}")]
    Scheduler(sd_scheduler::Error),

    /// A model could not be fetched from the Hugging Face Hub.
    #[error("{repo}: {message}")]
    Hub {
        /// The repository id.
        repo: String,
        /// What went wrong, and what to do instead.
        message: String,
    },

    /// The step callback asked to stop; nothing was produced.
    #[error("cancelled at step {step}")]
    Cancelled {
        /// The step (0-based model call) after which the run stopped.
        step: usize,
    },

    /// A PNG could not be encoded or written (the png crate's message).
    #[error("PNG: {0}")]
    Png(String),

    /// Values overflowed to NaN or infinity; no image is made from them (it would be black).
    #[error(
        "the {stage} hold {count} non-finite values (NaN or infinity) of {total}: numbers too \
         large for the network's precision, most often a huge guidance scale, prompt weight or \
         mixing scale; nothing was made"
    )]
    NonFinite {
        /// Where they were found: "final latents" or "decoded images".
        stage: &'static str,
        /// How many values are not finite.
        count: usize,
        /// How many values there are.
        total: usize,
    },
}

impl Error {
    /// [`Error::NonFinite`] when any of `values` (from `stage`) is NaN or infinite.
    pub(crate) fn check_finite(stage: &'static str, values: &[f32]) -> Result<()> {
        let count = values.iter().filter(|v| !v.is_finite()).count();
        if count == 0 {
            return Ok(());
        }
        Err(Error::NonFinite {
            stage,
            count,
            total: values.len(),
        })
    }

    /// An [`Error::InvalidRequest`] for `field`.
    pub(crate) fn request(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field,
            message: message.into(),
        }
    }

    /// An [`Error::Mix`] for the mix at `index` (`model`) that failed with `error`.
    pub(crate) fn mix(index: usize, model: String, error: Error) -> Self {
        Error::Mix {
            index,
            model,
            error: Box::new(error),
        }
    }

    /// An [`Error::Model`] for `component` from any model crate's error.
    pub(crate) fn model(component: &'static str, error: impl std::fmt::Display) -> Self {
        Error::Model {
            component,
            message: error.to_string(),
        }
    }
}

// Written out rather than `#[from]`, which would also make the inner error the `source`:
// the message already includes it, and chain printers (anyhow's `{:#}`) showed it twice.
impl From<sd_prompt::Error> for Error {
    fn from(e: sd_prompt::Error) -> Self {
        Error::Prompt(e)
    }
}

impl From<sd_tokenize::Error> for Error {
    fn from(e: sd_tokenize::Error) -> Self {
        Error::Tokenize(e)
    }
}

impl From<sd_scheduler::Error> for Error {
    fn from(e: sd_scheduler::Error) -> Self {
        Error::Scheduler(e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_counted_and_named() {
        assert!(Error::check_finite("final latents", &[0.0, -1.5, 3e38]).is_ok());
        let e = Error::check_finite("decoded images", &[1.0, f32::NAN, f32::INFINITY, 2.0])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the decoded images hold 2 non-finite values (NaN or infinity) of 4"),
            "{e}"
        );
    }

    #[test]
    fn wrapped_messages_are_not_also_sources() {
        let inner = sd_scheduler::Error::TimestepOutOfRange {
            timestep: 1000,
            num_train_timesteps: 1000,
        };
        let e = Error::from(inner);
        assert!(std::error::Error::source(&e).is_none());
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches("timestep 1000").count(), 1, "{shown}");
    }
}
