//! Reading a diffusers folder (weights and configs) into [`ModelWeights`].

use std::path::{Path, PathBuf};

use candle_core::Device;
use sd_clip::ClipTextConfig;
use sd_scheduler::SchedulerConfig;
use sd_unet::UNet2DConditionConfig;
use sd_vae::AutoencoderKlConfig;

use super::ckpt::CkptFile;
use super::detect::{Family, ModelKind};
use super::mapped::MappedSafetensors;
use super::{checkpoint_error, Component, ConfigOverride, ModelWeights, NamedTensors};
use crate::error::Result;

/// The first of `names` that exists in `dir`.
fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The weights file of the network in `dir`: `{stem}.safetensors` first, then the fp16 and
/// pickled (`.bin`) variants.
fn weight_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let names = [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
        format!("{stem}.bin"),
        format!("{stem}.fp16.bin"),
    ];
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    first_existing(dir, &refs)
        .ok_or_else(|| checkpoint_error(dir, format!("no {stem}.safetensors (or .bin) weights")))
}

fn read_tensors(dir: &Path, stem: &str) -> Result<NamedTensors> {
    let path = weight_file(dir, stem)?;
    if path.extension().is_some_and(|e| e == "bin") {
        let ckpt = CkptFile::open(&path)?;
        let names: Vec<String> = ckpt.tensor_infos().map(|(n, ..)| n.to_string()).collect();
        names
            .into_iter()
            .map(|n| Ok((n.clone(), ckpt.load(&n, &Device::Cpu)?)))
            .collect()
    } else {
        let file = MappedSafetensors::open(&path)?;
        file.names()
            .into_iter()
            .map(|name| {
                let tensor = file
                    .load(&name)?
                    .expect("a name from the file's own header");
                Ok((name, tensor))
            })
            .collect()
    }
}

/// The folder's UNet and VAE `.safetensors` files, opened for reading tensor by tensor, or
/// `None` when either network is stored otherwise (pickled `.bin`).
pub fn mapped_networks(dir: &Path) -> Result<Option<(MappedSafetensors, MappedSafetensors)>> {
    let unet = weight_file(&dir.join("unet"), "diffusion_pytorch_model")?;
    let vae = weight_file(&dir.join("vae"), "diffusion_pytorch_model")?;
    let is_safetensors = |p: &Path| p.extension().is_some_and(|e| e == "safetensors");
    if !(is_safetensors(&unet) && is_safetensors(&vae)) {
        return Ok(None);
    }
    Ok(Some((
        MappedSafetensors::open(&unet)?,
        MappedSafetensors::open(&vae)?,
    )))
}

fn read_json_config<T>(
    path: &Path,
    read: impl FnOnce(&Path) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    read(path).map(Some).map_err(|m| checkpoint_error(path, m))
}

pub(super) fn read_configs(dir: &Path) -> Result<ConfigOverride> {
    Ok(ConfigOverride {
        unet: read_json_config(&dir.join("unet/config.json"), |p| {
            UNet2DConditionConfig::from_file(p).map_err(|e| e.to_string())
        })?,
        vae: read_json_config(&dir.join("vae/config.json"), |p| {
            AutoencoderKlConfig::from_file(p).map_err(|e| e.to_string())
        })?,
        text_encoder: read_json_config(&dir.join("text_encoder/config.json"), |p| {
            ClipTextConfig::from_file(p).map_err(|e| e.to_string())
        })?,
        scheduler: read_json_config(&dir.join("scheduler/scheduler_config.json"), |p| {
            let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
            SchedulerConfig::from_json(&text).map_err(|e| e.to_string())
        })?,
    })
}

/// Reads the folder; with `only`, the other networks' tensors are not read.
pub(super) fn read(dir: &Path, only: Option<Component>) -> Result<ModelWeights> {
    let wanted = |c: Component| only.is_none_or(|o| o == c);
    let configs = read_configs(dir)?;
    let missing = |what: &str| checkpoint_error(dir, format!("no {what}/config.json"));
    let unet_config = configs.unet.ok_or_else(|| missing("unet"))?;
    let vae_config = configs.vae.ok_or_else(|| missing("vae"))?;
    let text_encoder_config = configs
        .text_encoder
        .ok_or_else(|| missing("text_encoder"))?;
    let family = if unet_config.use_linear_projection || unet_config.cross_attention_dim == 1024 {
        Family::Sd2
    } else {
        Family::Sd1
    };
    let inpainting = unet_config.in_channels == 9;
    let scheduler_config = configs.scheduler.unwrap_or_else(|| {
        if family == Family::Sd2 && !inpainting {
            SchedulerConfig::sd2_v_prediction()
        } else {
            SchedulerConfig::default()
        }
    });
    let kind = ModelKind {
        family,
        inpainting,
        prediction: scheduler_config.prediction_type,
    };
    let text_encoder = if wanted(Component::TextEncoder) {
        read_tensors(&dir.join("text_encoder"), "model")?
    } else {
        NamedTensors::new()
    };
    let text_encoder = text_encoder
        .into_iter()
        // transformers 4 (every hub repository) nests the model under `text_model.`.
        .map(|(k, v)| {
            (
                k.strip_prefix("text_model.")
                    .map(str::to_string)
                    .unwrap_or(k),
                v,
            )
        })
        .filter(|(k, _)| k != "embeddings.position_ids")
        .collect();
    Ok(ModelWeights {
        unet: if wanted(Component::Unet) {
            read_tensors(&dir.join("unet"), "diffusion_pytorch_model")?
        } else {
            NamedTensors::new()
        },
        vae: if wanted(Component::Vae) {
            read_tensors(&dir.join("vae"), "diffusion_pytorch_model")?
        } else {
            NamedTensors::new()
        },
        text_encoder,
        unet_config,
        vae_config,
        text_encoder_config,
        scheduler_config,
        kind,
        unknown_keys: Vec::new(),
    })
}
