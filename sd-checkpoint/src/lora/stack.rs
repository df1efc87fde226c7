//! Several LoRA files applied to a model's weights as they are loaded ("merged at load"):
//! each weight tensor a module targets becomes `W + Σ multiplier · ΔW`, computed and returned in
//! f32 (the caller casts once, to the dtype it computes in: rounding the sum back to a
//! half-precision file's dtype first would round twice, as diffusers, merging in float32, does
//! not). A multiplier of 0 leaves the tensor as it was, bit for bit.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use candle_core::{DType, Tensor};

use super::keys::{weight_key, ModuleKey};
use super::LoraFile;
use crate::error::{Error, Result};
use crate::ldm_names::{Component, NameTable};
use crate::NamedTensors;

/// How strongly one file applies, per network (A1111's `<lora:NAME:TE:UNET>`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multipliers {
    /// Multiplier of the text-encoder modules.
    pub text_encoder: f64,
    /// Multiplier of the UNet modules.
    pub unet: f64,
}

impl Multipliers {
    /// The same multiplier for both networks.
    pub fn both(multiplier: f64) -> Self {
        Self {
            text_encoder: multiplier,
            unet: multiplier,
        }
    }

    fn of(&self, network: Component) -> f64 {
        match network {
            Component::TextEncoder => self.text_encoder,
            _ => self.unet,
        }
    }
}

/// LoRA files with their multipliers, ready to change weights as they are loaded.
#[derive(Debug, Default)]
pub struct LoraStack {
    files: Vec<(LoraFile, Multipliers)>,
    /// Layer → (file index, module index) of every module that changes it (LDM-named UNet
    /// layers re-keyed by [`use_ldm_names_of`](Self::use_ldm_names_of)).
    by_key: RwLock<HashMap<ModuleKey, Vec<(usize, usize)>>>,
    /// Modules that found their layer (so far).
    matched: Mutex<HashSet<(usize, usize)>>,
}

impl LoraStack {
    /// An empty stack: [`apply`](Self::apply) changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `file` at `multipliers` (files apply in the order added).
    pub fn push(&mut self, file: LoraFile, multipliers: Multipliers) {
        let index = self.files.len();
        let by_key = self.by_key.get_mut().unwrap_or_else(|e| e.into_inner());
        for (m, module) in file.modules().iter().enumerate() {
            by_key
                .entry(module.key.clone())
                .or_default()
                .push((index, m));
        }
        self.files.push((file, multipliers));
    }

    /// Whether no file was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files and their multipliers, in order.
    pub fn files(&self) -> impl Iterator<Item = (&LoraFile, Multipliers)> {
        self.files.iter().map(|(f, m)| (f, *m))
    }

    /// Weight tensor `name` of `network` with every module that targets it applied, in f32 (the
    /// tensor itself, in its own dtype, when none does or all their multipliers are 0). Only
    /// `*.weight` tensors change.
    ///
    /// # Errors
    /// When a module's change does not fit the tensor's shape: the message names the LoRA file,
    /// the layer and both shapes.
    pub fn apply(&self, network: Component, name: &str, weight: Tensor) -> Result<Tensor> {
        let Some(key) = weight_key(network, name) else {
            return Ok(weight);
        };
        let targets = self.modules_for(&key)?;
        if targets.is_empty() {
            return Ok(weight);
        }
        let mut sum: Option<Tensor> = None;
        for &(f, m) in &targets {
            let (file, multipliers) = &self.files[f];
            let multiplier = multipliers.of(network);
            if multiplier == 0.0 {
                continue;
            }
            let fail = |e: candle_core::Error| Error::Checkpoint {
                path: file.path().to_path_buf(),
                message: format!("LoRA layer {} for {network} tensor {name}: {e}", key.path),
            };
            let delta = file.modules()[m]
                .delta(weight.dims())
                .and_then(|d| d.affine(multiplier, 0.0))
                .map_err(fail)?;
            let base = match sum.take() {
                Some(s) => s,
                None => weight.to_dtype(DType::F32)?,
            };
            sum = Some((base + delta)?);
        }
        Ok(sum.unwrap_or(weight))
    }

    /// Re-keys UNet modules named in LDM terms (`lora_unet_input_blocks_4_1_proj_in`, as some
    /// trainers and converters write them) to the diffusers layers of a model with `table`'s
    /// configs. Modules already in diffusers terms, or that the table cannot place, stay as
    /// they are (the latter are then reported by [`unmatched`](Self::unmatched)).
    pub fn use_ldm_names_of(&self, table: &NameTable) {
        let Ok(mut by_key) = self.by_key.write() else {
            return;
        };
        let ldm_style = |p: &str| {
            [
                "input_blocks_",
                "middle_block_",
                "output_blocks_",
                "time_embed_",
                "out_",
            ]
            .iter()
            .any(|s| p.starts_with(s))
        };
        let renamed: Vec<(ModuleKey, ModuleKey)> = by_key
            .keys()
            .filter(|k| k.network == Component::Unet && ldm_style(&k.path))
            .filter_map(|k| {
                let path = table.unet_module_from_ldm_underscored(&k.path)?;
                Some((
                    k.clone(),
                    ModuleKey {
                        network: Component::Unet,
                        path,
                    },
                ))
            })
            .collect();
        for (from, to) in renamed {
            if let Some(targets) = by_key.remove(&from) {
                by_key.entry(to).or_default().extend(targets);
            }
        }
    }

    /// `(file index, module index)` of every module that changes layer `key`, in the order the
    /// files were added; the modules count as matched from then on (for callers that apply
    /// them themselves, e.g. as side branches).
    pub fn modules_for(&self, key: &ModuleKey) -> Result<Vec<(usize, usize)>> {
        let targets = match self.by_key.read() {
            Ok(by_key) => by_key.get(key).cloned().unwrap_or_default(),
            Err(_) => return Err(Error::Merge("LoRA table lock poisoned".into())),
        };
        if let Ok(mut matched) = self.matched.lock() {
            matched.extend(targets.iter().copied());
        }
        Ok(targets)
    }

    /// [`apply`](Self::apply) to every tensor of `tensors` (one network's).
    pub fn apply_all(&self, network: Component, tensors: &mut NamedTensors) -> Result<()> {
        for (name, tensor) in tensors.iter_mut() {
            *tensor = self.apply(network, name, tensor.clone())?;
        }
        Ok(())
    }

    /// The modules that have found no layer so far, as `file: layer key` (after a model's
    /// networks are built: the layers that model lacks).
    pub fn unmatched(&self) -> Vec<String> {
        let matched = self.matched.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for (f, (file, _)) in self.files.iter().enumerate() {
            for (m, module) in file.modules().iter().enumerate() {
                if !matched.contains(&(f, m)) {
                    out.push(format!(
                        "{}: {} {}",
                        file.path().display(),
                        module.key.network,
                        module.key.path
                    ));
                }
            }
        }
        out
    }
}
