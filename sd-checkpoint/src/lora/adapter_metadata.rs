//! diffusers' `lora_adapter_metadata`: the PEFT `LoraConfig` of each network, saved as JSON in a
//! `.safetensors` header by `save_lora_weights(..., unet_lora_adapter_metadata=...)`. Its keys
//! are prefixed with the network (`unet.lora_alpha`, `text_encoder.alpha_pattern`, ...), and it
//! is what gives a PEFT file without `.alpha` tensors a scale other than 1: PEFT scales a
//! module by `lora_alpha / r` (`/ √r` with `use_rslora`), with `alpha_pattern` overriding the
//! alpha of the modules whose names end with a pattern.

use std::path::Path;

use serde_json::Value;

use super::keys::ModuleKey;
use crate::error::{Error, Result};
use crate::ldm_names::Component;
use crate::mapped::MappedSafetensors;

/// One network's adapter settings.
#[derive(Debug, Clone, Default)]
struct NetworkConfig {
    lora_alpha: Option<f64>,
    /// `(pattern with '.' as '_', alpha)`.
    alpha_pattern: Vec<(String, f64)>,
    use_rslora: bool,
}

/// The adapter settings of a file, per network.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdapterMetadata {
    unet: Option<NetworkConfig>,
    text_encoder: Option<NetworkConfig>,
}

impl AdapterMetadata {
    /// Reads the settings from `path`'s safetensors header (`None`: the file has none).
    pub(crate) fn read(path: &Path) -> Result<Option<Self>> {
        let fail = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let file = MappedSafetensors::open(path)?;
        let Some(raw) = file
            .header_metadata()
            .and_then(|m| m.get("lora_adapter_metadata"))
        else {
            return Ok(None);
        };
        let config: Value = serde_json::from_str(raw)
            .map_err(|e| fail(format!("lora_adapter_metadata is not JSON: {e}")))?;
        let network = |prefix: &str| -> Result<Option<NetworkConfig>> {
            let get = |key: &str| config.get(format!("{prefix}.{key}"));
            if !config
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with(&format!("{prefix}."))))
            {
                return Ok(None);
            }
            let number = |key: &str, v: &Value| {
                v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                    fail(format!(
                        "lora_adapter_metadata: {prefix}.{key} is {v}, not a number"
                    ))
                })
            };
            let lora_alpha = get("lora_alpha")
                .map(|v| number("lora_alpha", v))
                .transpose()?;
            let mut alpha_pattern = Vec::new();
            if let Some(patterns) = get("alpha_pattern").and_then(Value::as_object) {
                for (pattern, alpha) in patterns {
                    alpha_pattern
                        .push((pattern.replace('.', "_"), number("alpha_pattern", alpha)?));
                }
            }
            // Longest pattern first, so the most specific one wins.
            alpha_pattern.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            let use_rslora = get("use_rslora").and_then(Value::as_bool).unwrap_or(false);
            Ok(Some(NetworkConfig {
                lora_alpha,
                alpha_pattern,
                use_rslora,
            }))
        };
        Ok(Some(Self {
            unet: network("unet")?,
            text_encoder: network("text_encoder")?,
        }))
    }

    /// The alpha for a module of `rank` that carries none of its own, in this crate's
    /// convention (the change is scaled by `alpha / rank`); `None`: scale 1.
    pub(crate) fn alpha(&self, key: &ModuleKey, rank: Option<usize>) -> Option<f64> {
        let config = match key.network {
            Component::Unet => self.unet.as_ref(),
            Component::TextEncoder => self.text_encoder.as_ref(),
            Component::Vae => None,
        }?;
        let alpha = config
            .alpha_pattern
            .iter()
            .find(|(pattern, _)| key.path == *pattern || key.path.ends_with(&format!("_{pattern}")))
            .map(|(_, a)| *a)
            .or(config.lora_alpha)?;
        match (config.use_rslora, rank) {
            // alpha / √r, written as alpha' / r.
            (true, Some(r)) => Some(alpha * (r as f64).sqrt()),
            _ => Some(alpha),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(network: Component, path: &str) -> ModuleKey {
        ModuleKey {
            network,
            path: path.to_string(),
        }
    }

    #[test]
    fn the_fixture_header_gives_network_alphas_and_patterns() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lora/peft-alpha.safetensors");
        let meta = AdapterMetadata::read(&path).unwrap().expect("has metadata");
        let attn = "down_blocks_0_attentions_0_transformer_blocks_0_attn2";
        let unet = |m: &str| meta.alpha(&key(Component::Unet, &format!("{attn}_{m}")), Some(2));
        assert_eq!(unet("to_q"), Some(3.0));
        assert_eq!(unet("to_k"), Some(8.0)); // alpha_pattern {"attn2.to_k": 8}
        let te = key(Component::TextEncoder, "encoder_layers_0_self_attn_q_proj");
        assert_eq!(meta.alpha(&te, Some(2)), Some(1.0));
        // A pattern matches whole name parts only.
        let other = key(
            Component::Unet,
            "down_blocks_0_attentions_0_transformer_blocks_0_xattn2_to_k",
        );
        assert_eq!(meta.alpha(&other, Some(2)), Some(3.0));
        // No metadata in a kohya file (it has .alpha tensors instead).
        let kohya = path.with_file_name("kohya.safetensors");
        assert!(AdapterMetadata::read(&kohya).unwrap().is_none());
    }

    #[test]
    fn rslora_scales_by_the_root_of_the_rank() {
        let config = NetworkConfig {
            lora_alpha: Some(8.0),
            alpha_pattern: Vec::new(),
            use_rslora: true,
        };
        let meta = AdapterMetadata {
            unet: Some(config),
            text_encoder: None,
        };
        // alpha' / r = 8 / √4.
        assert_eq!(
            meta.alpha(&key(Component::Unet, "x_to_q"), Some(4)),
            Some(16.0)
        );
        assert_eq!(meta.alpha(&key(Component::TextEncoder, "x"), Some(4)), None);
    }
}
