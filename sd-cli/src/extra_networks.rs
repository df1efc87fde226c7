//! The LoRA and textual-inversion files a run loads ("extra networks", as A1111 calls them):
//! `--lora PATH[:MULT | :TE:UNET]`, the `<lora:NAME:…>` tags of the prompts looked up in
//! `--lora-dir`, and every embedding in `--embeddings-dir`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sd_pipeline::checkpoint::Multipliers;

/// File extensions a LoRA is looked up with in `--lora-dir`, in this order.
const LORA_EXTENSIONS: [&str; 3] = ["safetensors", "pt", "ckpt"];

/// File extensions read from `--embeddings-dir` (anything else, such as preview images, is
/// skipped).
const EMBEDDING_EXTENSIONS: [&str; 4] = ["pt", "safetensors", "bin", "ckpt"];

/// One `--lora` argument: `PATH`, `PATH:MULT` or `PATH:TE:UNET`.
pub fn parse_lora(arg: &str) -> Result<(PathBuf, Multipliers)> {
    let number = |s: &str| -> Option<f64> {
        s.parse::<f64>()
            .ok()
            .filter(|m| m.is_finite() && m.abs() <= f64::from(f32::MAX))
    };
    let mut parts: Vec<&str> = arg.rsplitn(3, ':').collect();
    parts.reverse();
    let (path, multipliers) = match parts.as_slice() {
        [path, te, unet] if number(te).is_some() && number(unet).is_some() => (
            path.to_string(),
            Multipliers {
                text_encoder: number(te).unwrap_or(1.0),
                unet: number(unet).unwrap_or(1.0),
            },
        ),
        [.., last] if number(last).is_some() => {
            let cut = arg.len() - last.len() - 1;
            (
                arg[..cut].to_string(),
                Multipliers::both(number(last).unwrap_or(1.0)),
            )
        }
        _ => (arg.to_string(), Multipliers::both(1.0)),
    };
    if path.is_empty() {
        bail!("--lora {arg}: no file; expected PATH, PATH:MULT or PATH:TE:UNET");
    }
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!(
            "--lora {arg}: {} is not a file (expected PATH, PATH:MULT or PATH:TE:UNET)",
            path.display()
        );
    }
    Ok((path, multipliers))
}

/// The LoRA files to load: every `--lora`, then each `<lora:NAME:…>` tag of `prompts` that
/// names no file loaded at its multipliers, found as `NAME.safetensors` / `.pt` / `.ckpt` in
/// `lora_dir`. Without `lora_dir` tags are left for the pipeline to check against `--lora`.
pub fn loras(
    args: &[String],
    lora_dir: Option<&Path>,
    prompts: &[(&str, &str)],
) -> Result<Vec<(PathBuf, Multipliers)>> {
    let mut loras = args
        .iter()
        .map(|a| parse_lora(a))
        .collect::<Result<Vec<_>>>()?;
    let Some(dir) = lora_dir else {
        return Ok(loras);
    };
    if !dir.is_dir() {
        bail!("--lora-dir {}: not a folder", dir.display());
    }
    for (flag, prompt) in prompts {
        let (_, tags) =
            sd_pipeline::sd_prompt::split_lora_tags(prompt).map_err(|e| anyhow!("{flag}: {e}"))?;
        for tag in tags {
            let multipliers = Multipliers {
                text_encoder: tag.text_encoder,
                unet: tag.unet,
            };
            let loaded = loras
                .iter()
                .any(|(p, m)| stem(p) == tag.name && *m == multipliers);
            if loaded {
                continue;
            }
            loras.push((find_lora(dir, &tag.name, flag)?, multipliers));
        }
    }
    Ok(loras)
}

/// `dir/NAME.{safetensors,pt,ckpt}`, the first that exists.
fn find_lora(dir: &Path, name: &str, flag: &str) -> Result<PathBuf> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains('\0');
    if !plain {
        bail!("{flag}: <lora:{name}> is not a plain file name (no folders or '..' in LoRA names)");
    }
    LORA_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{flag}: <lora:{name}>: --lora-dir {} has no {name}.safetensors, {name}.pt or \
                 {name}.ckpt",
                dir.display()
            )
        })
}

/// The file name without extension, as a LoRA tag names it.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every embedding file in `dir` (`.pt`, `.safetensors`, `.bin`, `.ckpt`; not recursive),
/// sorted by name so ids are the same on every run.
pub fn embedding_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("--embeddings-dir {}: not a folder", dir.display());
    }
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("--embeddings-dir {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("--embeddings-dir {}", dir.display()))?
            .path();
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EMBEDDING_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if known && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sd-extra-networks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, b"x").unwrap();
        path
    }

    #[test]
    fn lora_arguments_take_one_or_two_multipliers() {
        let file = temp_file("style.safetensors");
        let shown = file.display().to_string();
        assert_eq!(
            parse_lora(&shown).unwrap(),
            (file.clone(), Multipliers::both(1.0))
        );
        assert_eq!(
            parse_lora(&format!("{shown}:0.7")).unwrap(),
            (file.clone(), Multipliers::both(0.7))
        );
        assert_eq!(
            parse_lora(&format!("{shown}:0.5:-1.25")).unwrap(),
            (
                file.clone(),
                Multipliers {
                    text_encoder: 0.5,
                    unet: -1.25
                }
            )
        );
        let err = parse_lora(&format!("{shown}x:0.5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a file"), "{err}");
        let err = parse_lora(":0.5").unwrap_err().to_string();
        assert!(err.contains("no file"), "{err}");
    }

    #[test]
    fn tags_are_found_in_the_lora_folder() {
        let file = temp_file("tagged.pt");
        let dir = file.parent().unwrap();
        let found = loras(
            &[],
            Some(dir),
            &[
                ("prompt", "a cat <lora:tagged:0.5>"),
                ("negative-prompt", ""),
            ],
        )
        .unwrap();
        assert_eq!(found, vec![(file.clone(), Multipliers::both(0.5))]);
        // Asked for twice at the same multipliers: loaded once.
        let found = loras(
            &[],
            Some(dir),
            &[
                ("prompt", "<lora:tagged:0.5>"),
                ("negative-prompt", "<lora:tagged:0.5>"),
            ],
        )
        .unwrap();
        assert_eq!(found.len(), 1);

        let err = loras(&[], Some(dir), &[("prompt", "<lora:missing>")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prompt: <lora:missing>") && err.contains("no missing.safetensors"));
        let err = loras(&[], Some(dir), &[("prompt", "<lora:../tagged>")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a plain file name"), "{err}");
    }

    #[test]
    fn the_embeddings_folder_lists_weight_files_only() {
        let a = temp_file("emb-b.pt");
        let dir = a.parent().unwrap().join("embeddings");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.pt", "a.safetensors", "preview.png", "c.bin"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let files = embedding_files(&dir).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.safetensors", "b.pt", "c.bin"]);
        assert!(embedding_files(&dir.join("none")).is_err());
    }
}
