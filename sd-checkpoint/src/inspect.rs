//! `sd inspect FILE`: what a single file is, from its names and shapes, reading no tensor data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::detect::ModelKind;
use super::ldm_names::Component;
use super::single_file::plan;
use super::source::{FileFormat, Source};
use super::LoadOptions;
use crate::error::Result;

/// Parameters and dtypes of one network in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentSummary {
    /// Number of scalar parameters (the fused OpenCLIP `in_proj` counts once).
    pub parameters: usize,
    /// Tensors per stored dtype, e.g. `{"f16": 196}`.
    pub dtypes: BTreeMap<String, usize>,
}

/// What [`inspect`] found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Its container format.
    pub format: FileFormat,
    /// Tensors in the file.
    pub tensors: usize,
    /// The detected model kind, or why detection failed.
    pub kind: std::result::Result<ModelKind, String>,
    /// Per network: parameters and dtypes.
    pub components: BTreeMap<Component, ComponentSummary>,
    /// Tensors of the EMA copy of the UNet (`model_ema.*`).
    pub ema_tensors: usize,
    /// Known keys that are not used (schedule buffers, `position_ids`, ...).
    pub ignored_keys: Vec<String>,
    /// Keys that belong to no network this crate knows.
    pub unknown_keys: Vec<String>,
}

/// Opens `path` (safetensors or pickle), detects the model and counts its parameters.
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    let path = path.as_ref();
    let source = Source::open(path)?;
    let infos = source.infos()?;
    let mut inspection = Inspection {
        path: path.to_path_buf(),
        format: source.format(),
        tensors: infos.len(),
        kind: Err(String::new()),
        components: BTreeMap::new(),
        ema_tensors: 0,
        ignored_keys: Vec::new(),
        unknown_keys: Vec::new(),
    };
    match plan(&infos, &LoadOptions::default()) {
        Ok(plan) => {
            inspection.kind = Ok(plan.detected.kind);
            for (key, (component, _)) in &plan.mapped {
                let info = &infos[key];
                let summary = inspection.components.entry(*component).or_default();
                summary.parameters += info.shape.iter().product::<usize>();
                *summary
                    .dtypes
                    .entry(format!("{:?}", info.dtype).to_lowercase())
                    .or_default() += 1;
            }
            inspection.ema_tensors = plan.ema_tensors;
            inspection.ignored_keys = plan.ignored;
            inspection.unknown_keys = plan.unknown;
        }
        Err(message) => {
            inspection.kind = Err(message);
            inspection.unknown_keys = infos.keys().cloned().collect();
        }
    }
    Ok(inspection)
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "file:    {}", self.path.display())?;
        writeln!(f, "format:  {}, {} tensors", self.format, self.tensors)?;
        match &self.kind {
            Ok(kind) => writeln!(f, "kind:    {kind}")?,
            Err(why) => writeln!(f, "kind:    not a Stable Diffusion 1.x / 2.x model ({why})")?,
        }
        for (component, s) in &self.components {
            let dtypes: Vec<String> = s.dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
            writeln!(
                f,
                "{:<13}{:>14} parameters  ({})",
                format!("{component}:"),
                group_digits(s.parameters),
                dtypes.join(", ")
            )?;
        }
        if self.ema_tensors > 0 {
            writeln!(
                f,
                "ema:     {} tensors (model_ema.*, used by default)",
                self.ema_tensors
            )?;
        }
        writeln!(f, "ignored: {} known extra keys", self.ignored_keys.len())?;
        writeln!(f, "unknown: {} keys", self.unknown_keys.len())?;
        for key in &self.unknown_keys {
            writeln!(f, "  {key}")?;
        }
        Ok(())
    }
}

fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
