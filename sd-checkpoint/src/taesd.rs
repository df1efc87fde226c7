//! TAESD weights (the tiny autoencoder used for previews and fast decodes), in the layouts people
//! have them in:
//!
//! - a diffusers `AutoencoderTiny` folder (`config.json` + `diffusion_pytorch_model.safetensors`),
//!   as `madebyollin/taesd` publishes it;
//! - one file in diffusers names (`encoder.layers.N…`, `decoder.layers.N…`);
//! - the original release's `taesd_encoder.pth` / `taesd_decoder.pth` (or `.safetensors`), as
//!   A1111 and ComfyUI ship them: bare `nn.Sequential` indices, the decoder's shifted by one
//!   (its index 0 is a clamp without weights). A folder holding either or both works too.
//!
//! Pickles are read through the crate's safe reader (tensors only, nothing executed). Without a
//! `config.json`, the architecture (widths, blocks per level, latent channels) is read off the
//! tensors, so any TAESD-shaped file loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sd_vae::AutoencoderTinyConfig;

use crate::error::Result;
use crate::source::Source;
use crate::{checkpoint_error, NamedTensors};

/// How the tensors were named on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaesdLayout {
    /// diffusers' `AutoencoderTiny` names.
    Diffusers,
    /// The original `taesd_encoder` / `taesd_decoder` files' bare indices.
    Original,
}

/// TAESD weights in diffusers names, with the config that fits them.
#[derive(Debug, Clone)]
pub struct TaesdWeights {
    /// From `config.json` when the folder has one, else read off the tensors.
    pub config: AutoencoderTinyConfig,
    /// `encoder.layers.*` and / or `decoder.layers.*`, in their stored dtype on the CPU.
    pub tensors: NamedTensors,
    /// How the files named them.
    pub layout: TaesdLayout,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// File names of the original release, without extension.
const ORIGINAL_STEMS: [&str; 2] = ["taesd_encoder", "taesd_decoder"];
const EXTENSIONS: [&str; 4] = ["safetensors", "pth", "pt", "ckpt"];

impl TaesdWeights {
    /// Reads a TAESD folder or file (see the module docs); errors name the file at fault.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(checkpoint_error(path, "no such file or folder"));
        }
        if !path.is_dir() {
            let (tensors, layout) = read_any(path)?;
            return Self::with_inferred_config(tensors, layout, vec![path.to_path_buf()]);
        }
        let config_file = path.join("config.json");
        if config_file.is_file() {
            let config = AutoencoderTinyConfig::from_file(&config_file)
                .map_err(|e| checkpoint_error(&config_file, e.to_string()))?;
            let file = ["safetensors", "bin"]
                .iter()
                .map(|ext| path.join(format!("diffusion_pytorch_model.{ext}")))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    checkpoint_error(
                        path,
                        "has config.json but no diffusion_pytorch_model.safetensors",
                    )
                })?;
            let (tensors, layout) = read_any(&file)?;
            return Ok(Self {
                config,
                tensors,
                layout,
                files: vec![file],
            });
        }
        let mut tensors = NamedTensors::new();
        let mut files = Vec::new();
        let mut layout = TaesdLayout::Original;
        for stem in ORIGINAL_STEMS {
            let found = EXTENSIONS
                .iter()
                .map(|ext| path.join(format!("{stem}.{ext}")))
                .find(|f| f.is_file());
            if let Some(file) = found {
                let (part, part_layout) = read_any(&file)?;
                layout = part_layout;
                tensors.extend(part);
                files.push(file);
            }
        }
        if files.is_empty() {
            return Err(checkpoint_error(
                path,
                "is not a TAESD folder: no config.json, taesd_encoder.* or taesd_decoder.*",
            ));
        }
        Self::with_inferred_config(tensors, layout, files)
    }

    /// Whether decoder weights are present.
    pub fn has_decoder(&self) -> bool {
        self.tensors.contains_key("decoder.layers.0.weight")
    }

    /// Whether encoder weights are present.
    pub fn has_encoder(&self) -> bool {
        self.tensors.contains_key("encoder.layers.0.weight")
    }

    fn with_inferred_config(
        tensors: NamedTensors,
        layout: TaesdLayout,
        files: Vec<PathBuf>,
    ) -> Result<Self> {
        let config = infer_config(&tensors).map_err(|m| checkpoint_error(&files[0], m))?;
        Ok(Self {
            config,
            tensors,
            layout,
            files,
        })
    }
}

/// Reads one file and renames its tensors to diffusers names.
fn read_any(path: &Path) -> Result<(NamedTensors, TaesdLayout)> {
    let source = Source::open(path)?;
    let infos = source.infos()?;
    let diffusers = infos
        .keys()
        .any(|k| k.starts_with("encoder.layers.") || k.starts_with("decoder.layers."));
    let mut out = NamedTensors::new();
    if diffusers {
        for name in infos.keys() {
            if name.starts_with("encoder.layers.") || name.starts_with("decoder.layers.") {
                out.insert(name.clone(), source.load(name)?);
            }
        }
        return Ok((out, TaesdLayout::Diffusers));
    }
    // The original files: the encoder starts with a convolution at index 0, the decoder with
    // a clamp there (no weights) and its first convolution at index 1.
    let half = if infos.contains_key("0.weight") {
        ("encoder", 0)
    } else if infos.contains_key("1.weight") {
        ("decoder", 1)
    } else {
        return Err(checkpoint_error(
            path,
            "holds no TAESD tensors (expected encoder.layers.* / decoder.layers.*, or the \
             original taesd_encoder / taesd_decoder names 0.weight / 1.weight …)",
        ));
    };
    for name in infos.keys() {
        let Some((index, rest)) = name.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            return Err(checkpoint_error(
                path,
                format!("tensor {name} is not a TAESD layer"),
            ));
        };
        let Some(index) = index.checked_sub(half.1) else {
            return Err(checkpoint_error(
                path,
                format!("tensor {name}: index 0 of a TAESD decoder holds no weights"),
            ));
        };
        out.insert(
            format!("{}.layers.{index}.{rest}", half.0),
            source.load(name)?,
        );
    }
    Ok((out, TaesdLayout::Original))
}

/// One half's layers as the tensors show them: a convolution (`N.weight`) or a block
/// (`N.conv.0.weight`), by index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    Conv { cout: usize, cin: usize },
    Block,
}

fn layers(tensors: &NamedTensors, half: &str) -> std::result::Result<Vec<Layer>, String> {
    let prefix = format!("{half}.layers.");
    let mut found = BTreeMap::new();
    for (name, tensor) in tensors {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
        let index: usize = index
            .parse()
            .map_err(|_| format!("tensor {name} is not a TAESD layer"))?;
        if field == "weight" {
            let dims = tensor.dims();
            if dims.len() != 4 {
                return Err(format!(
                    "tensor {name} has shape {dims:?}, not a convolution"
                ));
            }
            found.insert(
                index,
                Layer::Conv {
                    cout: dims[0],
                    cin: dims[1],
                },
            );
        } else if field.starts_with("conv.") {
            found.entry(index).or_insert(Layer::Block);
        }
    }
    Ok(found.into_values().collect())
}

/// Blocks between consecutive convolutions, and the convolutions' shapes.
fn levels(layers: &[Layer]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut counts = Vec::new();
    let mut convs = Vec::new();
    for layer in layers {
        match *layer {
            Layer::Conv { cout, cin } => {
                convs.push((cout, cin));
                counts.push(0);
            }
            Layer::Block => {
                if let Some(last) = counts.last_mut() {
                    *last += 1;
                }
            }
        }
    }
    counts.pop();
    (counts, convs)
}

fn infer_config(tensors: &NamedTensors) -> std::result::Result<AutoencoderTinyConfig, String> {
    let mut config = AutoencoderTinyConfig::default();
    let encoder = layers(tensors, "encoder")?;
    let decoder = layers(tensors, "decoder")?;
    if encoder.is_empty() && decoder.is_empty() {
        return Err("holds no TAESD tensors".into());
    }
    if !encoder.is_empty() {
        let (counts, convs) = levels(&encoder);
        let (&(width, cin), &(latent, _)) = match (convs.first(), convs.last()) {
            (Some(first), Some(last)) if convs.len() >= 2 => (first, last),
            _ => return Err("the encoder needs an input and an output convolution".into()),
        };
        config.in_channels = cin;
        config.encoder_block_out_channels = vec![width; counts.len()];
        config.latent_channels = latent;
        config.num_decoder_blocks = counts.iter().rev().copied().collect();
        config.decoder_block_out_channels = vec![width; counts.len()];
        config.num_encoder_blocks = counts;
    }
    if !decoder.is_empty() {
        let (counts, convs) = levels(&decoder);
        let (&(width, latent), &(out, _)) = match (convs.first(), convs.last()) {
            (Some(first), Some(last)) if convs.len() >= 2 => (first, last),
            _ => return Err("the decoder needs an input and an output convolution".into()),
        };
        if !encoder.is_empty() && latent != config.latent_channels {
            return Err(format!(
                "the encoder makes {} latent channels, the decoder takes {latent}",
                config.latent_channels
            ));
        }
        config.latent_channels = latent;
        config.out_channels = out;
        config.decoder_block_out_channels = vec![width; counts.len()];
        if encoder.is_empty() {
            config.num_encoder_blocks = counts.iter().rev().copied().collect();
            config.encoder_block_out_channels = vec![width; counts.len()];
        }
        config.num_decoder_blocks = counts;
    }
    config
        .validate()
        .map_err(|e| format!("the tensors do not form a TAESD: {e}"))?;
    Ok(config)
}
