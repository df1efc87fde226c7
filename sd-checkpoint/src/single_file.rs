//! A single LDM file (`.safetensors` or `.ckpt`) → three named-tensor maps in diffusers names.

use std::collections::BTreeMap;
use std::path::Path;

use super::detect::{self, Detected, TensorInfo};
use super::ldm_names::{
    Component, NameTable, TextEncoderLayout, ToDiffusers, EMA_PREFIX, UNET_PREFIX,
};
use super::source::Source;
use super::{checkpoint_error, LoadOptions, ModelWeights, NamedTensors};
use crate::error::Result;

/// Keys LDM training files carry besides the networks (diffusion schedule buffers, EMA
/// bookkeeping): known, never used.
const KNOWN_EXTRAS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "lvlb_weights",
    "model_ema.decay",
    "model_ema.num_updates",
];

/// The EMA name of a UNet key: LDM's `LitEma` drops the dots of the name after `model.`.
pub(crate) fn ema_key(unet_key: &str) -> String {
    let rest = unet_key.strip_prefix("model.").unwrap_or(unet_key);
    format!("{EMA_PREFIX}{}", rest.replace('.', ""))
}

/// What each file key is, once the model's layout is known.
pub(crate) struct Plan {
    pub detected: Detected,
    /// File key → where it goes.
    pub mapped: BTreeMap<String, (Component, ToDiffusers)>,
    pub ignored: Vec<String>,
    pub unknown: Vec<String>,
    /// Tensors under `model_ema.` that shadow a UNet weight.
    pub ema_tensors: usize,
}

/// Detects the model (with `options`' overrides) and sorts every key of the file.
pub(crate) fn plan(
    infos: &BTreeMap<String, TensorInfo>,
    options: &LoadOptions,
) -> std::result::Result<Plan, String> {
    let mut detected = detect::detect(infos, options.prediction)?;
    let o = &options.config_override;
    if let Some(unet) = &o.unet {
        detected.unet = unet.clone();
    }
    if let Some(vae) = &o.vae {
        detected.vae = vae.clone();
    }
    if let Some(text) = &o.text_encoder {
        detected.text_encoder = text.clone();
        if let TextEncoderLayout::OpenClip { in_file, .. } = detected.text_layout {
            detected.text_layout = TextEncoderLayout::OpenClip {
                layers: text.num_hidden_layers,
                in_file,
            };
        }
    }
    if let Some(scheduler) = &o.scheduler {
        let mut scheduler = scheduler.clone();
        if let Some(p) = options.prediction {
            scheduler.prediction_type = p;
        }
        detected.kind.prediction = scheduler.prediction_type;
        detected.scheduler = scheduler;
    }
    let table = NameTable::new(&detected.unet, &detected.vae, detected.text_layout);
    let (mut mapped, mut ignored, mut unknown) = (BTreeMap::new(), Vec::new(), Vec::new());
    let mut ema_tensors = 0;
    for key in infos.keys() {
        if key.starts_with(EMA_PREFIX) {
            if KNOWN_EXTRAS.contains(&key.as_str()) {
                ignored.push(key.clone());
            } else {
                ema_tensors += 1;
            }
            continue;
        }
        match table.to_diffusers(key) {
            Some((_, ToDiffusers::Ignore)) => ignored.push(key.clone()),
            Some(target) => {
                mapped.insert(key.clone(), target);
            }
            None if KNOWN_EXTRAS.contains(&key.as_str()) => ignored.push(key.clone()),
            None => unknown.push(key.clone()),
        }
    }
    Ok(Plan {
        detected,
        mapped,
        ignored,
        unknown,
        ema_tensors,
    })
}

/// Reads an original single-file checkpoint into diffusers-named tensors and configs.
///
/// The format is told by the file's first bytes (safetensors, torch zip pickle, torch legacy
/// pickle), not its extension. A `state_dict` entry of a pickled dict is where the weights are
/// looked for. Tensors keep their stored dtype. With `options.ema` and a file holding
/// `model_ema.*` copies of every UNet weight, the UNet comes from those.
pub fn load_single_file(path: impl AsRef<Path>, options: &LoadOptions) -> Result<ModelWeights> {
    let path = path.as_ref();
    let source = Source::open(path)?;
    let infos = source.infos()?;
    let plan = plan(&infos, options).map_err(|m| checkpoint_error(path, m))?;
    let use_ema = options.ema && plan.ema_tensors > 0;
    let mut weights = ModelWeights {
        unet: NamedTensors::new(),
        vae: NamedTensors::new(),
        text_encoder: NamedTensors::new(),
        unet_config: plan.detected.unet.clone(),
        vae_config: plan.detected.vae.clone(),
        text_encoder_config: plan.detected.text_encoder.clone(),
        scheduler_config: plan.detected.scheduler.clone(),
        kind: plan.detected.kind,
        unknown_keys: plan.unknown.clone(),
    };
    for (key, (component, target)) in &plan.mapped {
        if options.only.is_some_and(|only| only != *component) {
            continue;
        }
        let stored = if use_ema && key.starts_with(UNET_PREFIX) {
            let ema = ema_key(key);
            if !infos.contains_key(&ema) {
                return Err(checkpoint_error(
                    path,
                    format!("the file has EMA weights but not {ema} (the EMA copy of {key}); load with ema off"),
                ));
            }
            ema
        } else {
            key.clone()
        };
        let tensor = source.load(&stored)?;
        let map = weights.component_mut(*component);
        let bad = |e: candle_core::Error| checkpoint_error(path, format!("tensor {key}: {e}"));
        match target {
            ToDiffusers::Rename(name) => {
                map.insert(name.clone(), tensor);
            }
            ToDiffusers::ConvToLinear(name) => {
                let tensor = match tensor.dims() {
                    [_, _, 1, 1] => tensor.squeeze(3).and_then(|t| t.squeeze(2)).map_err(bad)?,
                    [_, _] => tensor,
                    dims => {
                        return Err(checkpoint_error(
                            path,
                            format!("tensor {key} has shape {dims:?}, expected a 1x1 convolution"),
                        ))
                    }
                };
                map.insert(name.clone(), tensor);
            }
            ToDiffusers::SplitQkv(names) => {
                let rows = tensor.dim(0).map_err(bad)?;
                if rows % 3 != 0 {
                    return Err(checkpoint_error(
                        path,
                        format!("tensor {key} has {rows} rows, not q, k and v stacked"),
                    ));
                }
                for (i, name) in names.iter().enumerate() {
                    let part = tensor
                        .narrow(0, i * rows / 3, rows / 3)
                        .and_then(|t| t.contiguous());
                    map.insert(name.clone(), part.map_err(bad)?);
                }
            }
            ToDiffusers::Ignore => {}
        }
    }
    Ok(weights)
}
