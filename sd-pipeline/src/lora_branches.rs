//! LoRAs kept as side branches, chosen per request (`StableDiffusionBuilder::lora_side_branches`).
//!
//! The UNet's layers get each active LoRA module as a branch added to their output
//! (`sd_kernels::side_branch`): a LoRA / LoCon module as its two low-rank factors, any other
//! kind (LoHa, LoKr, kohya's CP form) as its dense ΔW. The text encoder, small, is rebuilt with
//! the active modules merged when a request asks for other text-encoder multipliers than the
//! last one. A request holds the selection until it ends, so requests on several threads take
//! turns rather than see each other's LoRAs.

use std::sync::{Arc, Mutex, MutexGuard};

use sd_kernels::side_branch::{SideBranch, SideBranches, Slots};

use crate::checkpoint::lora::{ModuleKey, ModuleWeights};
use crate::checkpoint::{Component, LoraStack, ModelWeights, Multipliers};
use crate::components::TextEncoder;
use crate::error::{Error, Result};
use crate::stable_diffusion::{build_text_encoder, BuildSettings};

/// What a resident build hands over for side branches.
pub(crate) struct PendingBranches {
    /// Each UNet layer's slot, by its path.
    pub slots: Slots,
    /// The text encoder's weights and configs (the UNet and VAE maps empty).
    pub text: Box<ModelWeights>,
    /// How the networks were built.
    pub settings: BuildSettings,
    /// The text encoder without any LoRA.
    pub plain_text_encoder: Arc<dyn TextEncoder>,
}

/// A UNet layer and the LoRA modules (file index, module index) that change it.
struct Layer {
    slot: Arc<SideBranches>,
    modules: Vec<(usize, usize)>,
}

/// A request's hold on the selection (see [`LoraBranches::select`]).
pub(crate) type SelectionGuard<'a> = MutexGuard<'a, Selection>;

/// The selection in force.
pub(crate) struct Selection {
    /// Per LoRA file, in load order.
    active: Vec<Multipliers>,
    text_encoder: Arc<dyn TextEncoder>,
}

impl Selection {
    /// The text encoder for this selection.
    pub(crate) fn text_encoder(&self) -> Arc<dyn TextEncoder> {
        self.text_encoder.clone()
    }
}

/// The LoRA files of a pipeline, applied per request.
pub(crate) struct LoraBranches {
    stack: Arc<LoraStack>,
    layers: Vec<Layer>,
    text: Box<ModelWeights>,
    settings: BuildSettings,
    plain_text_encoder: Arc<dyn TextEncoder>,
    selection: Mutex<Selection>,
}

impl LoraBranches {
    /// Finds each UNet layer's modules and checks, by building every branch once at
    /// multiplier 1 and the text encoder with every file merged, that they fit the model.
    pub(crate) fn new(stack: Arc<LoraStack>, pending: PendingBranches) -> Result<Self> {
        let mut layers = Vec::new();
        for (path, slot) in pending.slots {
            let key = ModuleKey {
                network: Component::Unet,
                path: path.replace('.', "_"),
            };
            let modules = stack.modules_for(&key)?;
            if !modules.is_empty() {
                layers.push(Layer { slot, modules });
            }
        }
        let files = stack.files().count();
        let branches = Self {
            stack,
            layers,
            text: pending.text,
            settings: pending.settings,
            plain_text_encoder: pending.plain_text_encoder.clone(),
            selection: Mutex::new(Selection {
                active: vec![Multipliers::both(0.0); files],
                text_encoder: pending.plain_text_encoder,
            }),
        };
        let all = vec![Multipliers::both(1.0); files];
        for layer in &branches.layers {
            branches.branches_of(layer, &all)?;
        }
        // Merging every file into a text encoder checks their shapes and marks their modules
        // matched (for `lora_unmatched` and strict mode).
        let mut settings = branches.settings.clone();
        settings.lora = Some(branches.stack.clone());
        settings.side_branches = false;
        build_text_encoder(&branches.text, &settings)?;
        Ok(branches)
    }

    /// Sets the branches and text encoder for `wanted` (per file, in load order) and holds
    /// them until the returned guard drops.
    pub(crate) fn select(&self, wanted: &[Multipliers]) -> Result<SelectionGuard<'_>> {
        let mut selection = self.selection.lock().map_err(|_| Error::Lora {
            message: "the LoRA selection lock is poisoned (a request panicked)".into(),
        })?;
        if selection.active == wanted {
            return Ok(selection);
        }
        let unet_changed = selection
            .active
            .iter()
            .zip(wanted)
            .any(|(a, b)| a.unet != b.unet);
        if unet_changed {
            for layer in &self.layers {
                layer.slot.set(self.branches_of(layer, wanted)?);
            }
        }
        let text_changed = selection
            .active
            .iter()
            .zip(wanted)
            .any(|(a, b)| a.text_encoder != b.text_encoder);
        if text_changed {
            selection.text_encoder = self.text_encoder_for(wanted)?;
        }
        selection.active = wanted.to_vec();
        Ok(selection)
    }

    /// One layer's branches at the UNet multipliers of `wanted`.
    fn branches_of(&self, layer: &Layer, wanted: &[Multipliers]) -> Result<Vec<SideBranch>> {
        let mut branches = Vec::new();
        for &(f, m) in &layer.modules {
            let multiplier = wanted[f].unet;
            if multiplier == 0.0 {
                continue;
            }
            let Some((file, _)) = self.stack.files().nth(f) else {
                continue;
            };
            let module = &file.modules()[m];
            let shape = layer.slot.weight_shape();
            let fail = |e: candle_core::Error| Error::Lora {
                message: format!(
                    "{}: UNet layer {}: {e}",
                    file.path().display(),
                    module.key.path
                ),
            };
            let branch = match &module.weights {
                ModuleWeights::Lora {
                    down,
                    up,
                    mid: None,
                } if down.dim(1).ok() == shape.get(1).copied()
                    && up.dim(0).ok() == shape.first().copied() =>
                {
                    let rank = down.dim(0).map_err(fail)?;
                    let f32 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F32);
                    SideBranch::LowRank {
                        down: f32(down).map_err(fail)?,
                        up: f32(up).map_err(fail)?,
                        scale: multiplier * module.alpha.unwrap_or(rank as f64) / rank as f64,
                    }
                }
                _ => SideBranch::Dense(
                    module
                        .delta(shape)
                        .and_then(|d| d.affine(multiplier, 0.0))
                        .map_err(fail)?,
                ),
            };
            branches.push(branch);
        }
        Ok(branches)
    }

    /// The text encoder with the files merged at the text-encoder multipliers of `wanted`.
    fn text_encoder_for(&self, wanted: &[Multipliers]) -> Result<Arc<dyn TextEncoder>> {
        if wanted.iter().all(|m| m.text_encoder == 0.0) {
            return Ok(self.plain_text_encoder.clone());
        }
        let mut stack = LoraStack::new();
        for ((file, _), m) in self.stack.files().zip(wanted) {
            stack.push(file.clone(), Multipliers::both(m.text_encoder));
        }
        let mut settings = self.settings.clone();
        settings.lora = Some(Arc::new(stack));
        settings.side_branches = false;
        Ok(Arc::new(build_text_encoder(&self.text, &settings)?))
    }
}
