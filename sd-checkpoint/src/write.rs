//! Writing [`ModelWeights`] as a diffusers folder or as one LDM-style `.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use super::ldm_names::{Component, ToLdm};
use super::{checkpoint_error, config_json, ModelWeights};
use crate::error::Result;

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| checkpoint_error(path, format!("cannot encode config: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| checkpoint_error(path, format!("cannot write: {e}")))
}

fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(tensors, path)
        .map_err(|e| checkpoint_error(path, format!("cannot write weights: {e}")))?;
    follow_umask(path)
}

/// Gives `path` the permissions any new file gets under the process's umask: safetensors
/// writes through a private (0600) temporary file and renames it, so without this a saved
/// model could not be read by the group or others whatever the umask says. The umask is
/// learned from a probe file created next to `path` (reading it otherwise means changing it).
#[cfg(unix)]
fn follow_umask(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| checkpoint_error(path, format!("cannot set permissions: {e}"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let probe = path.with_file_name(format!(".{name}.mode-{}.tmp", std::process::id()));
    // create_new: never follows a link or truncates a file that happens to have this name.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    let mode = created.and_then(|f| {
        let mode = f.metadata().map(|m| m.permissions().mode() & 0o777);
        let _ = std::fs::remove_file(&probe);
        mode
    });
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.map_err(fail)?))
        .map_err(fail)
}

#[cfg(not(unix))]
fn follow_umask(_: &Path) -> Result<()> {
    Ok(())
}

pub(super) fn diffusers_folder(weights: &ModelWeights, dir: &Path) -> Result<()> {
    for sub in ["unet", "vae", "text_encoder", "scheduler"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)
            .map_err(|e| checkpoint_error(&d, format!("cannot create: {e}")))?;
    }
    write_json(
        &dir.join("unet/config.json"),
        &config_json::unet(&weights.unet_config),
    )?;
    write_json(
        &dir.join("vae/config.json"),
        &config_json::vae(&weights.vae_config),
    )?;
    write_json(
        &dir.join("text_encoder/config.json"),
        &config_json::text_encoder(&weights.text_encoder_config),
    )?;
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &config_json::scheduler(&weights.scheduler_config),
    )?;
    let scheduler_class = weights
        .scheduler_config
        .class_name
        .clone()
        .unwrap_or_else(|| "PNDMScheduler".into());
    write_json(
        &dir.join("model_index.json"),
        &serde_json::json!({
            "_class_name": if weights.kind.inpainting { "StableDiffusionInpaintPipeline" } else { "StableDiffusionPipeline" },
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "scheduler": ["diffusers", scheduler_class],
            "tokenizer": [null, null],
            "safety_checker": [null, null],
            "feature_extractor": [null, null],
            "requires_safety_checker": false,
        }),
    )?;
    save_tensors(
        &weights.unet,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;
    save_tensors(
        &weights.vae,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )?;
    save_tensors(
        &weights.text_encoder,
        &dir.join("text_encoder/model.safetensors"),
    )
}

/// Every tensor of `weights` under its single-file name, through the reverse table.
pub(super) fn to_ldm(
    weights: &ModelWeights,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let table = weights.name_table();
    let mut out = HashMap::new();
    let mut stacks: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    for component in [Component::Unet, Component::Vae, Component::TextEncoder] {
        for (name, tensor) in weights.component(component) {
            let target = table
                .to_ldm(component, name)
                .ok_or_else(|| format!("{component} tensor {name} has no single-file name"))?;
            match target {
                ToLdm::Rename(ldm) => {
                    out.insert(ldm, tensor.clone());
                }
                ToLdm::LinearToConv(ldm) => {
                    let t = match tensor.rank() {
                        2 => tensor
                            .unsqueeze(2)
                            .and_then(|t| t.unsqueeze(3))
                            .map_err(|e| e.to_string())?,
                        _ => tensor.clone(),
                    };
                    out.insert(ldm, t);
                }
                ToLdm::QkvPart { name, index } => {
                    stacks.entry(name).or_default()[index] = Some(tensor.clone());
                }
            }
        }
    }
    for (name, parts) in stacks {
        let parts: Vec<Tensor> = parts
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{name}: q, k and v are not all present"))?;
        out.insert(name, Tensor::cat(&parts, 0).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

pub(super) fn single_file(weights: &ModelWeights, path: &Path) -> Result<()> {
    let tensors = to_ldm(weights).map_err(|m| checkpoint_error(path, m))?;
    save_tensors(&tensors, path)
}
