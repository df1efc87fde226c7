//! LoRA and LyCORIS files as they are shared: kohya-ss (`lora_unet_*` / `lora_te_*`, LoCon,
//! `lora_mid`), diffusers / PEFT (`lora_A` / `lora_B`, the old `processor.to_q_lora`), LoHa
//! (`hada_*`) and LoKr (`lokr_*`), as `.safetensors` or pickled `.pt` (read safely, as every
//! `.ckpt`). A diffusers PEFT file's `lora_alpha` / `alpha_pattern` / `use_rslora` come from
//! its header's `lora_adapter_metadata`.
//!
//! A [`LoraFile`] is the file's modules, each a layer key ([`keys`]) and its tensors; the
//! weight change a module makes is [`LoraModule::delta`] ([`delta`]: A1111's formulas). A
//! [`LoraStack`] applies several files, each with its text-encoder and UNet multiplier, to the
//! weights of a model as they are loaded: `W + Σ multiplier · ΔW`.

mod adapter_metadata;
pub mod delta;
pub mod keys;
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

pub use delta::{Algorithm, ModuleWeights};
pub use keys::{KeyStyle, ModuleKey, Role};
pub use stack::{LoraStack, Multipliers};

use crate::error::{Error, Result};
use crate::ldm_names::Component;
use crate::source::{FileFormat, Source};

/// One layer's change.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The layer it changes.
    pub key: ModuleKey,
    /// Its tensors.
    pub weights: ModuleWeights,
    /// The `alpha` the change is scaled by (over the rank); `None`: scale 1.
    pub alpha: Option<f64>,
}

impl LoraModule {
    /// `ΔW` for a layer whose weight has shape `shape`, scaled by `alpha / rank` (f32).
    pub fn delta(&self, shape: &[usize]) -> candle_core::Result<Tensor> {
        self.weights.delta(self.alpha, shape)
    }
}

/// A LoRA / LyCORIS file, read.
#[derive(Debug, Clone)]
pub struct LoraFile {
    path: PathBuf,
    format: FileFormat,
    styles: BTreeSet<KeyStyle>,
    modules: Vec<LoraModule>,
    unknown_keys: Vec<String>,
}

impl LoraFile {
    /// Reads every tensor of `path` (`.safetensors`, or a pickled `.pt` / `.ckpt`) and groups
    /// them into modules.
    ///
    /// # Errors
    /// When the file cannot be read, has no LoRA module at all, or a module's tensors do not
    /// form one (a `lora_up` without its `lora_down`, say): the message names the file and key.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let source = Source::open(path)?;
        let infos = source.infos()?;
        let mut groups: BTreeMap<ModuleKey, BTreeMap<Role, (String, Tensor)>> = BTreeMap::new();
        let mut styles = BTreeSet::new();
        let mut unknown_keys = Vec::new();
        for name in infos.keys() {
            let Some(parsed) = keys::parse(name) else {
                unknown_keys.push(name.clone());
                continue;
            };
            let tensor = source.load(name)?;
            let group = groups.entry(parsed.module).or_default();
            if let Some((other, _)) = group.get(&parsed.role) {
                return Err(fail(format!(
                    "{name} and {other} are the same tensor of one layer"
                )));
            }
            group.insert(parsed.role, (name.clone(), tensor));
            styles.insert(parsed.style);
        }
        // diffusers' PEFT files keep their alphas in the header instead of `.alpha` tensors.
        let adapter = match source.format() {
            FileFormat::Safetensors => adapter_metadata::AdapterMetadata::read(path)?,
            _ => None,
        };
        let mut modules = Vec::new();
        for (key, mut parts) in groups {
            let alpha = match parts.remove(&Role::Alpha) {
                Some((name, t)) => Some(scalar(&t).map_err(|e| fail(format!("{name}: {e}")))?),
                None => None,
            };
            let first = parts.values().next().map(|(n, _)| n.clone());
            let Some(first) = first else {
                // An alpha alone is no module (nor any harm): report it.
                unknown_keys.push(format!("{}.alpha (no tensors beside it)", key.path));
                continue;
            };
            let parts = parts.into_iter().map(|(r, (_, t))| (r, t)).collect();
            let weights = ModuleWeights::from_roles(parts)
                .map_err(|e| fail(format!("the layer of {first} {e}")))?;
            let alpha =
                alpha.or_else(|| adapter.as_ref().and_then(|a| a.alpha(&key, weights.rank())));
            modules.push(LoraModule {
                key,
                weights,
                alpha,
            });
        }
        if modules.is_empty() {
            return Err(fail(
                "has no LoRA, LoCon, LoHa or LoKr tensors (not a LoRA file?)".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            format: source.format(),
            styles,
            modules,
            unknown_keys,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The naming conventions its keys use.
    pub fn styles(&self) -> &BTreeSet<KeyStyle> {
        &self.styles
    }

    /// Its modules, one per layer.
    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// Tensor names that belong to no module (SDXL's second text encoder, DoRA scales, ...).
    pub fn unknown_keys(&self) -> &[String] {
        &self.unknown_keys
    }

    /// A short description for reports: styles, kinds with counts, ranks, alphas, networks
    /// and the blocks touched.
    pub fn summary(&self) -> LoraSummary {
        let mut summary = LoraSummary::default();
        for m in &self.modules {
            *summary.algorithms.entry(m.weights.algorithm()).or_default() += 1;
            if let Some(rank) = m.weights.rank() {
                summary.ranks.insert(rank);
            }
            if let Some(alpha) = m.alpha {
                summary.alphas.insert(format!("{alpha}"));
            }
            *summary.networks.entry(m.key.network).or_default() += 1;
            summary.blocks.insert(block_of(&m.key));
            summary.parameters += m.weights.parameters();
        }
        summary
    }
}

/// What [`LoraFile::summary`] reports.
#[derive(Debug, Clone, Default)]
pub struct LoraSummary {
    /// Modules per kind.
    pub algorithms: BTreeMap<Algorithm, usize>,
    /// The ranks used.
    pub ranks: BTreeSet<usize>,
    /// The alphas used (as written).
    pub alphas: BTreeSet<String>,
    /// Modules per network.
    pub networks: BTreeMap<Component, usize>,
    /// The blocks touched: `unet down_blocks.0`, `unet mid_block`, `text_encoder layers 0-11`
    /// (as `text_encoder encoder.layers.N`).
    pub blocks: BTreeSet<String>,
    /// Values in the file's modules.
    pub parameters: usize,
}

/// The top-level block of a module key: `down_blocks.1`, `mid_block`, `encoder.layers.3`, ...
fn block_of(key: &ModuleKey) -> String {
    let parts: Vec<&str> = key.path.split('_').collect();
    let block = match parts.as_slice() {
        ["down" | "up", "blocks", n, ..] => format!("{}_blocks.{n}", parts[0]),
        ["mid", "block", ..] => "mid_block".to_string(),
        ["encoder", "layers", n, ..] => format!("encoder.layers.{n}"),
        // kohya's LDM-style names and anything else: the first word.
        [first, ..] => (*first).to_string(),
        [] => String::new(),
    };
    format!("{} {block}", key.network)
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    match v.as_slice() {
        [x] if x.is_finite() => Ok(f64::from(*x)),
        [x] => candle_core::bail!("alpha is {x}"),
        _ => candle_core::bail!("alpha has {} values, expected one", v.len()),
    }
}
