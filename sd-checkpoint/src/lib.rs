#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use sd_clip::ClipTextConfig;
use sd_scheduler::{PredictionType, SchedulerConfig};
use sd_unet::UNet2DConditionConfig;
use sd_vae::AutoencoderKlConfig;

mod error;

pub use error::{Error, Result};

pub mod ckpt;
mod config_json;
pub mod detect;
mod folder;
pub mod inspect;
pub mod ldm_names;
pub mod lora;
mod mapped;
pub mod merge;
pub(crate) mod pickle;
mod single_file;
mod source;
pub mod taesd;
pub mod textual_inversion;
mod write;

pub use ckpt::{CkptFile, CkptFormat};
pub use detect::{Family, ModelKind, TensorInfo};
pub use folder::mapped_networks;
pub use inspect::{inspect, Inspection};
pub use ldm_names::{Component, NameTable, TextEncoderLayout};
pub use lora::{LoraFile, LoraStack, Multipliers};
pub use mapped::MappedSafetensors;
pub use merge::Components;
pub use single_file::load_single_file;
pub use source::FileFormat;
pub use taesd::{TaesdLayout, TaesdWeights};
pub use textual_inversion::{EmbeddingLayout, TextualInversion};

/// Tensors by diffusers / transformers name.
pub type NamedTensors = HashMap<String, Tensor>;

/// A whole Stable Diffusion model's weights and configs, in diffusers naming.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// UNet tensors (`conv_in.weight`, `down_blocks.0.resnets.0.norm1.weight`, ...).
    pub unet: NamedTensors,
    /// VAE tensors (`encoder.conv_in.weight`, ...).
    pub vae: NamedTensors,
    /// Text-encoder tensors in transformers 5 names (`embeddings.token_embedding.weight`, ...).
    pub text_encoder: NamedTensors,
    /// The UNet's config.
    pub unet_config: UNet2DConditionConfig,
    /// The VAE's config.
    pub vae_config: AutoencoderKlConfig,
    /// The text encoder's config.
    pub text_encoder_config: ClipTextConfig,
    /// The scheduler config (a single file has none: SD's defaults for the detected kind).
    pub scheduler_config: SchedulerConfig,
    /// What the model is.
    pub kind: ModelKind,
    /// Keys of the source file that are neither model weights nor known extras.
    pub unknown_keys: Vec<String>,
}

impl ModelWeights {
    /// The tensors of one network.
    pub fn component(&self, component: Component) -> &NamedTensors {
        match component {
            Component::Unet => &self.unet,
            Component::Vae => &self.vae,
            Component::TextEncoder => &self.text_encoder,
        }
    }

    fn component_mut(&mut self, component: Component) -> &mut NamedTensors {
        match component {
            Component::Unet => &mut self.unet,
            Component::Vae => &mut self.vae,
            Component::TextEncoder => &mut self.text_encoder,
        }
    }

    /// Reads a diffusers folder (safetensors weights, or pickled `.bin` through the safe
    /// reader; `*.fp16.*` variants when the plain file is absent). The scheduler config is
    /// `scheduler/scheduler_config.json` when present, else SD's default for the kind.
    pub fn from_diffusers_folder(dir: impl AsRef<Path>) -> Result<Self> {
        folder::read(dir.as_ref(), None)
    }

    /// Reads a model from `path`: a diffusers folder (see
    /// [`from_diffusers_folder`](Self::from_diffusers_folder)) or a single LDM file
    /// (`.safetensors` / `.ckpt`, see [`load_single_file`]). Of `options`, only `only` applies to
    /// folders.
    pub fn open(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            folder::read(path, options.only)
        } else if path.is_file() {
            load_single_file(path, options)
        } else if path.exists() {
            Err(checkpoint_error(
                path,
                "is neither a regular file nor a folder (a device or FIFO?); \
                 expected a diffusers folder or a .safetensors / .ckpt file",
            ))
        } else {
            Err(checkpoint_error(
                path,
                "no such file or folder (expected a diffusers folder or a .safetensors / .ckpt file)",
            ))
        }
    }

    /// Writes a diffusers folder: `model_index.json`, `unet/`, `vae/`, `text_encoder/` (configs
    /// and `.safetensors` weights) and `scheduler/scheduler_config.json`. No tokenizer files:
    /// the CLIP vocabulary is bundled with `sd-tokenize`.
    pub fn save_diffusers_folder(&self, dir: impl AsRef<Path>) -> Result<()> {
        write::diffusers_folder(self, dir.as_ref())
    }

    /// Writes one LDM-style `.safetensors` (`model.diffusion_model.*`, `first_stage_model.*`,
    /// `cond_stage_model.*`) that [`load_single_file`] and diffusers' `from_single_file` read.
    pub fn save_single_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write::single_file(self, path.as_ref())
    }

    /// The renaming table for this model's configs.
    pub fn name_table(&self) -> NameTable {
        let layout = match self.kind.family {
            Family::Sd1 => TextEncoderLayout::Clip,
            Family::Sd2 => TextEncoderLayout::OpenClip {
                layers: self.text_encoder_config.num_hidden_layers,
                in_file: self.text_encoder_config.num_hidden_layers,
            },
        };
        NameTable::new(&self.unet_config, &self.vae_config, layout)
    }
}

/// Configs that replace what [`load_single_file`] detects from shapes: needed where shapes say
/// nothing (attention heads, norm groups) and the model is not a real SD 1.x / 2.x size.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverride {
    /// Replaces the detected UNet config.
    pub unet: Option<UNet2DConditionConfig>,
    /// Replaces the detected VAE config.
    pub vae: Option<AutoencoderKlConfig>,
    /// Replaces the detected text-encoder config (its `num_hidden_layers` also says how many
    /// OpenCLIP resblocks are used).
    pub text_encoder: Option<ClipTextConfig>,
    /// Replaces the default scheduler config (and with it the prediction type).
    pub scheduler: Option<SchedulerConfig>,
}

impl ConfigOverride {
    /// Reads whichever of `unet/config.json`, `vae/config.json`, `text_encoder/config.json` and
    /// `scheduler/scheduler_config.json` exist under `dir` (a diffusers folder, or a folder of
    /// configs only).
    ///
    /// # Errors
    /// When `dir` is not a folder, or holds none of the four configs (so a wrong path is
    /// never silently ignored).
    pub fn from_diffusers_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.exists() {
            return Err(checkpoint_error(dir, "no such folder"));
        }
        if !dir.is_dir() {
            return Err(checkpoint_error(
                dir,
                "is a file; give a diffusers folder (with unet/config.json, ...)",
            ));
        }
        let configs = folder::read_configs(dir)?;
        if configs.unet.is_none()
            && configs.vae.is_none()
            && configs.text_encoder.is_none()
            && configs.scheduler.is_none()
        {
            return Err(checkpoint_error(
                dir,
                "has none of unet/config.json, vae/config.json, text_encoder/config.json, \
                 scheduler/scheduler_config.json",
            ));
        }
        Ok(configs)
    }
}

/// How [`load_single_file`] reads a file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Use the EMA copy of the UNet (`model_ema.*`) when the file has one (default: true).
    pub ema: bool,
    /// Configs to use instead of the detected ones.
    pub config_override: ConfigOverride,
    /// What the UNet predicts, instead of the guess (SD 2.x non-inpainting: v-prediction).
    pub prediction: Option<PredictionType>,
    /// Read only this network's tensors (the other maps stay empty; configs are always read),
    /// so one network can be loaded at a time. Applies to folders and single files.
    pub only: Option<Component>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ema: true,
            config_override: ConfigOverride::default(),
            prediction: None,
            only: None,
        }
    }
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: PathBuf::from(path),
        message: message.into(),
    }
}
