//! `sd inspect`: what a weights file is (kind, format, dtypes, parameters per network, EMA copy,
//! unknown keys), read from its names and shapes alone, as text or JSON. LoRA files and
//! embeddings are described by [`super::inspect_networks`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sd_pipeline::checkpoint::{self, Component, Family, FileFormat, ModelKind, ModelWeights};

use super::inspect_networks::NetworkReport;

/// Unknown keys the text report lists before it only counts the rest.
const UNKNOWN_SHOWN: usize = 20;

/// Arguments of `sd inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A single LDM / CompVis file (.safetensors or .ckpt), a diffusers model folder (whose
    /// weights are read in full), a LoRA / LyCORIS file or a textual-inversion embedding.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON object: {"family": "sd1", "prediction": "epsilon", "components": {...}, ...}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sd inspect`, writing to `out`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let report = if args.file.is_dir() {
        Report::from_folder(&args.file)?
    } else {
        match Report::from_file(&args.file) {
            Ok(report) => report,
            // Not a model: perhaps a LoRA or an embedding; else the model reader's error.
            Err(error) => match NetworkReport::read(&args.file) {
                Some(network) => return write_network(&network, args.json, out),
                None => return Err(error),
            },
        }
    };
    if args.json {
        serde_json::to_writer(&mut *out, &report.json())?;
        writeln!(out)?;
    } else {
        report.write_text(out)?;
    }
    Ok(())
}

fn write_network(network: &NetworkReport, json: bool, out: &mut impl Write) -> Result<()> {
    if json {
        serde_json::to_writer(&mut *out, &network.json())?;
        writeln!(out)?;
        Ok(())
    } else {
        network.write_text(out)
    }
}

/// Parameters and tensors per dtype of one network.
#[derive(Default)]
struct Network {
    parameters: usize,
    dtypes: BTreeMap<String, usize>,
}

/// The facts `inspect` prints, from a single file or a folder.
struct Report {
    path: PathBuf,
    /// `safetensors`, `ckpt_zip`, `ckpt_legacy` or `diffusers_folder`.
    format_id: &'static str,
    format: String,
    tensors: usize,
    kind: ModelKind,
    /// True when the prediction type is SD's default for the kind, not read from a config.
    prediction_guessed: bool,
    networks: BTreeMap<Component, Network>,
    ema_tensors: usize,
    ignored_keys: Vec<String>,
    unknown_keys: Vec<String>,
}

impl Report {
    fn from_file(path: &Path) -> Result<Self> {
        // The library's errors start with the path: missing, truncated, forbidden pickle global.
        let found = checkpoint::inspect(path)?;
        let kind = match found.kind {
            Ok(kind) => kind,
            Err(why) => bail!(
                "{}: not a Stable Diffusion 1.x / 2.x model: {why} ({}, {} tensors)",
                path.display(),
                found.format,
                found.tensors
            ),
        };
        let networks = found
            .components
            .into_iter()
            .map(|(c, s)| {
                let network = Network {
                    parameters: s.parameters,
                    dtypes: s.dtypes,
                };
                (c, network)
            })
            .collect();
        Ok(Report {
            path: path.to_owned(),
            format_id: match found.format {
                FileFormat::Safetensors => "safetensors",
                FileFormat::CkptZip => "ckpt_zip",
                FileFormat::CkptLegacy => "ckpt_legacy",
            },
            format: found.format.to_string(),
            tensors: found.tensors,
            // A single file has no scheduler config: SD 2.x base files (epsilon) look the same
            // as the 768-pixel v-prediction ones.
            prediction_guessed: kind.family == Family::Sd2 && !kind.inpainting,
            kind,
            networks,
            ema_tensors: found.ema_tensors,
            ignored_keys: found.ignored_keys,
            unknown_keys: found.unknown_keys,
        })
    }

    fn from_folder(dir: &Path) -> Result<Self> {
        if !dir.join("unet/config.json").is_file() {
            bail!(
                "{}: a folder without unet/config.json; inspect takes a single .safetensors / \
                 .ckpt file or a diffusers model folder",
                dir.display()
            );
        }
        let weights = ModelWeights::from_diffusers_folder(dir)?;
        let mut networks = BTreeMap::new();
        let mut tensors = 0;
        for component in [Component::Unet, Component::Vae, Component::TextEncoder] {
            let mut network = Network::default();
            for tensor in weights.component(component).values() {
                network.parameters += tensor.elem_count();
                *network
                    .dtypes
                    .entry(dtype_name(tensor.dtype()))
                    .or_default() += 1;
                tensors += 1;
            }
            networks.insert(component, network);
        }
        let kind = weights.kind;
        let has_scheduler = dir.join("scheduler/scheduler_config.json").is_file();
        Ok(Report {
            path: dir.to_owned(),
            format_id: "diffusers_folder",
            format: "diffusers folder".into(),
            tensors,
            prediction_guessed: !has_scheduler && kind.family == Family::Sd2 && !kind.inpainting,
            kind,
            networks,
            ema_tensors: 0,
            ignored_keys: Vec::new(),
            unknown_keys: weights.unknown_keys,
        })
    }

    /// Tensors per dtype over all three networks.
    fn dtypes(&self) -> BTreeMap<&str, usize> {
        let mut all = BTreeMap::new();
        for network in self.networks.values() {
            for (dtype, n) in &network.dtypes {
                *all.entry(dtype.as_str()).or_default() += n;
            }
        }
        all
    }

    fn parameters(&self) -> usize {
        self.networks.values().map(|n| n.parameters).sum()
    }

    fn json(&self) -> serde_json::Value {
        let components: serde_json::Map<String, serde_json::Value> = self
            .networks
            .iter()
            .map(|(c, n)| {
                let value = serde_json::json!({"parameters": n.parameters, "dtypes": n.dtypes});
                (c.to_string(), value)
            })
            .collect();
        serde_json::json!({
            "path": self.path.display().to_string(),
            "format": self.format_id,
            "tensors": self.tensors,
            "kind": self.kind.to_string(),
            "family": match self.kind.family { Family::Sd1 => "sd1", Family::Sd2 => "sd2" },
            "inpainting": self.kind.inpainting,
            "prediction": prediction_name(&self.kind),
            "prediction_guessed": self.prediction_guessed,
            "dtypes": self.dtypes(),
            "parameters": self.parameters(),
            "components": components,
            "ema": self.ema_tensors > 0,
            "ema_tensors": self.ema_tensors,
            "ignored_keys": self.ignored_keys,
            "unknown_key_count": self.unknown_keys.len(),
            "unknown_keys": self.unknown_keys,
        })
    }

    fn write_text(&self, out: &mut impl Write) -> Result<()> {
        writeln!(out, "file:          {}", self.path.display())?;
        writeln!(
            out,
            "format:        {}, {} tensors",
            self.format, self.tensors
        )?;
        let guess = if self.prediction_guessed {
            " (guessed: SD 2.x base models predict epsilon and look the same)"
        } else {
            ""
        };
        writeln!(out, "kind:          {}{guess}", self.kind)?;
        writeln!(out, "dtypes:        {}", counts(self.dtypes()))?;
        for (component, n) in &self.networks {
            let name = format!("{}:", component_title(*component));
            writeln!(
                out,
                "{name:<15}{:>8} parameters ({})  {}",
                human(n.parameters),
                n.parameters,
                counts(n.dtypes.iter().map(|(d, n)| (d.as_str(), *n)))
            )?;
        }
        let total = self.parameters();
        writeln!(
            out,
            "{:<15}{:>8} parameters ({total})",
            "total:",
            human(total)
        )?;
        if self.ema_tensors > 0 {
            writeln!(
                out,
                "ema:           yes, {} tensors (model_ema.*, loaded instead of the UNet by default)",
                self.ema_tensors
            )?;
        } else {
            writeln!(out, "ema:           no")?;
        }
        writeln!(
            out,
            "ignored:       {} known extra keys",
            self.ignored_keys.len()
        )?;
        writeln!(out, "unknown:       {} keys", self.unknown_keys.len())?;
        for key in self.unknown_keys.iter().take(UNKNOWN_SHOWN) {
            writeln!(out, "  {key}")?;
        }
        if self.unknown_keys.len() > UNKNOWN_SHOWN {
            writeln!(
                out,
                "  ... and {} more",
                self.unknown_keys.len() - UNKNOWN_SHOWN
            )?;
        }
        Ok(())
    }
}

fn component_title(component: Component) -> &'static str {
    match component {
        Component::Unet => "UNet",
        Component::Vae => "VAE",
        Component::TextEncoder => "text encoder",
    }
}

/// `f32 x494, f16 x52`.
fn counts<'a>(dtypes: impl IntoIterator<Item = (&'a str, usize)>) -> String {
    let parts: Vec<String> = dtypes
        .into_iter()
        .map(|(d, n)| format!("{d} x{n}"))
        .collect();
    parts.join(", ")
}

/// candle's dtype name as `inspect()` writes it: `f32`, `f16`, `bf16`, ...
fn dtype_name(dtype: impl std::fmt::Debug) -> String {
    format!("{dtype:?}").to_lowercase()
}

/// diffusers' `prediction_type` spelling: `epsilon`, `v_prediction`, `sample`.
fn prediction_name(kind: &ModelKind) -> String {
    // sd-pipeline does not re-export sd-scheduler, so the variant name is read from `Debug`.
    let mut name = String::new();
    for (i, ch) in format!("{:?}", kind.prediction).chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_lowercase());
    }
    name
}

/// `859.5 M`, `12.3 k`, `1.07 G`; below a thousand, the number itself.
pub fn human(n: usize) -> String {
    let x = n as f64;
    if n < 1_000 {
        n.to_string()
    } else if n < 999_950 {
        format!("{:.1} k", x / 1e3)
    } else if n < 999_950_000 {
        format!("{:.1} M", x / 1e6)
    } else {
        format!("{:.2} G", x / 1e9)
    }
}
