//! `sd inspect` on the files that change a model rather than being one: LoRA / LyCORIS files
//! (format, kinds, ranks, alphas, networks and blocks touched, unknown keys) and
//! textual-inversion embeddings (layout, vectors, width).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use sd_pipeline::checkpoint::{LoraFile, TextualInversion};

use super::inspect::human;

/// Unknown keys the text report lists before it only counts the rest.
const UNKNOWN_SHOWN: usize = 20;

/// What an extra-network file is.
pub enum NetworkReport {
    /// A LoRA / LyCORIS file.
    Lora(Box<LoraFile>),
    /// A textual-inversion embedding.
    Embedding(TextualInversion),
}

impl NetworkReport {
    /// Reads `path` as a LoRA file, else as an embedding; `None` when it is neither.
    pub fn read(path: &Path) -> Option<Self> {
        if let Ok(lora) = LoraFile::open(path) {
            return Some(NetworkReport::Lora(Box::new(lora)));
        }
        TextualInversion::open(path)
            .ok()
            .map(NetworkReport::Embedding)
    }

    /// One JSON object (`"kind": "lora"` or `"textual_inversion"`).
    pub fn json(&self) -> serde_json::Value {
        match self {
            NetworkReport::Lora(lora) => {
                let s = lora.summary();
                let algorithms: serde_json::Map<String, serde_json::Value> = s
                    .algorithms
                    .iter()
                    .map(|(a, n)| (a.to_string(), (*n).into()))
                    .collect();
                let networks: serde_json::Map<String, serde_json::Value> = s
                    .networks
                    .iter()
                    .map(|(c, n)| (c.to_string(), (*n).into()))
                    .collect();
                serde_json::json!({
                    "path": lora.path().display().to_string(),
                    "kind": "lora",
                    "format": lora.format().to_string(),
                    "styles": lora.styles().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "modules": lora.modules().len(),
                    "algorithms": algorithms,
                    "ranks": s.ranks,
                    "alphas": s.alphas,
                    "networks": networks,
                    "blocks": s.blocks,
                    "parameters": s.parameters,
                    "unknown_key_count": lora.unknown_keys().len(),
                    "unknown_keys": lora.unknown_keys(),
                })
            }
            NetworkReport::Embedding(e) => serde_json::json!({
                "path": e.path().display().to_string(),
                "kind": "textual_inversion",
                "layout": e.layout().to_string(),
                "trigger": e.name(),
                "vectors": e.len(),
                "width": e.width(),
            }),
        }
    }

    /// The text report.
    pub fn write_text(&self, out: &mut impl Write) -> Result<()> {
        match self {
            NetworkReport::Lora(lora) => write_lora(lora, out),
            NetworkReport::Embedding(e) => {
                writeln!(out, "file:          {}", e.path().display())?;
                writeln!(
                    out,
                    "kind:          textual-inversion embedding ({})",
                    e.layout()
                )?;
                writeln!(
                    out,
                    "trigger:       {} (the file name, as a word in a prompt)",
                    e.name()
                )?;
                writeln!(
                    out,
                    "vectors:       {} of width {} ({})",
                    e.len(),
                    e.width(),
                    match e.width() {
                        768 => "SD 1.x",
                        1024 => "SD 2.x",
                        _ => "not an SD 1.x / 2.x width",
                    }
                )?;
                Ok(())
            }
        }
    }
}

fn write_lora(lora: &LoraFile, out: &mut impl Write) -> Result<()> {
    let s = lora.summary();
    let list = |items: Vec<String>| match items.is_empty() {
        true => "none".to_string(),
        false => items.join(", "),
    };
    writeln!(out, "file:          {}", lora.path().display())?;
    let styles: Vec<String> = lora.styles().iter().map(|s| s.to_string()).collect();
    writeln!(
        out,
        "kind:          LoRA / LyCORIS ({} names, {})",
        styles.join(" + "),
        lora.format()
    )?;
    let algorithms = s
        .algorithms
        .iter()
        .map(|(a, n)| format!("{a} x{n}"))
        .collect();
    writeln!(
        out,
        "modules:       {} ({})",
        lora.modules().len(),
        list(algorithms)
    )?;
    writeln!(
        out,
        "rank:          {}",
        list(s.ranks.iter().map(|r| r.to_string()).collect())
    )?;
    writeln!(
        out,
        "alpha:         {}",
        match s.alphas.is_empty() {
            true => "none (scale 1)".to_string(),
            false => s.alphas.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    )?;
    let networks = s
        .networks
        .iter()
        .map(|(c, n)| format!("{c} x{n}"))
        .collect();
    writeln!(out, "networks:      {}", list(networks))?;
    writeln!(
        out,
        "blocks:        {}",
        list(s.blocks.iter().cloned().collect())
    )?;
    writeln!(
        out,
        "parameters:    {} ({})",
        human(s.parameters),
        s.parameters
    )?;
    writeln!(out, "unknown:       {} keys", lora.unknown_keys().len())?;
    for key in lora.unknown_keys().iter().take(UNKNOWN_SHOWN) {
        writeln!(out, "  {key}")?;
    }
    if lora.unknown_keys().len() > UNKNOWN_SHOWN {
        writeln!(
            out,
            "  ... and {} more",
            lora.unknown_keys().len() - UNKNOWN_SHOWN
        )?;
    }
    Ok(())
}
