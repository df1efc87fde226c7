//! `sd merge`: a weighted sum `a + (b - a) * scale` or add-difference `a + (b - c) * scale` of
//! two or three models, written atomically as one `.safetensors` or a diffusers folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sd_pipeline::checkpoint::{merge, Component, Components, LoadOptions, ModelWeights};
use sd_pipeline::request::display_number;

use crate::output_path;
use crate::temp_path::TempSibling;

/// Arguments of `sd merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first model: a diffusers folder or a .safetensors / .ckpt file; the result keeps its
    /// configs, kind and dtypes.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The second model, of the same shapes as A.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// How far to move A: 0 keeps A, 1 gives B (weighted sum) or A + (B - C); values below 0 or
    /// above 1 extrapolate.
    #[arg(long, allow_negative_numbers = true)]
    pub scale: f64,
    /// Compute A + (B - C) * scale instead: add what fine-tuning C into B learned to A.
    #[arg(long, value_name = "C")]
    pub add_difference: Option<PathBuf>,
    /// Blend the UNets only; the VAE and text encoder are A's.
    #[arg(long)]
    pub unet_only: bool,
    /// Where to write: a path ending in .safetensors is one LDM-style file, anything else a
    /// diffusers folder.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Replace OUT if it is an existing file or non-empty folder.
    #[arg(long)]
    pub force: bool,
}

/// Runs `sd merge`, reporting to `out`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    if !args.scale.is_finite() || args.scale.abs() > f64::from(f32::MAX) {
        bail!(
            "--scale {}: must be a finite number within f32's range",
            display_number(args.scale)
        );
    }
    // Checked before the slow part, so a wrong -o fails at once.
    let target = Target::check(&args.output, args.force)?;
    let start = Instant::now();
    let options = LoadOptions::default();
    let a = ModelWeights::open(&args.a, &options)?;
    let b = ModelWeights::open(&args.b, &options)?;
    let c = match &args.add_difference {
        Some(path) => Some(ModelWeights::open(path, &options)?),
        None => None,
    };
    let loaded = start.elapsed();

    let components = if args.unet_only {
        Components::UnetOnly
    } else {
        Components::All
    };
    let mixed = match &c {
        Some(c) => merge::add_difference(&a, &b, c, args.scale, components),
        None => merge::weighted_sum(&a, &b, args.scale, components),
    }
    .with_context(|| format!("cannot merge {}", inputs(args)))?;
    let merged = start.elapsed();

    target.write(&mixed)?;
    let total = start.elapsed();

    let formula = match &args.add_difference {
        Some(_) => format!("A + (B - C) x {}", args.scale),
        None => format!("A + (B - A) x {} (weighted sum)", args.scale),
    };
    let blended: Vec<Component> = [Component::Unet, Component::Vae, Component::TextEncoder]
        .into_iter()
        .filter(|&c| c == Component::Unet || !args.unet_only)
        .collect();
    let tensors: usize = blended.iter().map(|&c| a.component(c).len()).sum();
    let which = if args.unet_only {
        "UNet only; VAE and text encoder from A"
    } else {
        "UNet, VAE and text encoder"
    };
    writeln!(out, "merged: {formula}, {which}: {tensors} tensors")?;
    writeln!(out, "  A: {}", args.a.display())?;
    writeln!(out, "  B: {}", args.b.display())?;
    if let Some(path) = &args.add_difference {
        writeln!(out, "  C: {}", path.display())?;
    }
    writeln!(
        out,
        "wrote {} ({}) in {:.2} s (loading {:.2} s, merging {:.2} s, writing {:.2} s)",
        args.output.display(),
        target.describe(),
        total.as_secs_f64(),
        loaded.as_secs_f64(),
        (merged - loaded).as_secs_f64(),
        (total - merged).as_secs_f64()
    )?;
    Ok(())
}

fn inputs(args: &Args) -> String {
    let (a, b) = (args.a.display(), args.b.display());
    match &args.add_difference {
        Some(c) => format!("{a}, {b} and {}", c.display()),
        None => format!("{a} and {b}"),
    }
}

/// Where the result goes, checked before any model is read.
struct Target {
    path: PathBuf,
    single_file: bool,
}

impl Target {
    fn check(path: &Path, force: bool) -> Result<Self> {
        let shown = path.display();
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        let single_file = ext.as_deref() == Some("safetensors");
        if let Some(ext @ ("ckpt" | "pt" | "pth" | "bin")) = ext.as_deref() {
            bail!("-o {shown}: cannot write .{ext}; give a .safetensors path or a folder");
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!("-o {shown}: folder {} does not exist", parent.display());
        }
        if path.file_name().is_none() {
            bail!("-o {shown}: names no file or folder");
        }
        if single_file && path.is_dir() {
            bail!("-o {shown}: is a folder; a .safetensors path is written as one file");
        }
        // Links, FIFOs, devices, read-only files and (without --force) existing files.
        output_path::check_replaceable("-o", path, force)?;
        if !force && path.is_dir() {
            let empty = std::fs::read_dir(path)
                .with_context(|| format!("-o {shown}: cannot read the folder"))?
                .next()
                .is_none();
            if !empty {
                bail!("-o {shown}: folder exists and is not empty (--force replaces it)");
            }
        }
        Ok(Target {
            path: path.to_owned(),
            single_file,
        })
    }

    fn describe(&self) -> &'static str {
        if self.single_file {
            "single .safetensors file"
        } else {
            "diffusers folder"
        }
    }

    /// Writes to a temporary name, then renames it to OUT: a failure leaves OUT as it was.
    fn write(&self, weights: &ModelWeights) -> Result<()> {
        let shown = self.path.display();
        let tmp = TempSibling::new(&self.path, "merge");
        if self.single_file {
            weights.save_single_file(tmp.path())?;
            // A rename replaces an existing file (kept only with --force) in one step.
            std::fs::rename(tmp.path(), &self.path).with_context(|| {
                format!("-o {shown}: cannot rename {} to it", tmp.path().display())
            })?;
        } else {
            weights.save_diffusers_folder(tmp.path())?;
            if self.path.exists() {
                // A folder cannot be renamed over a non-empty one: move the old one aside
                // first, and back if the new one cannot take its place.
                let old = TempSibling::new(&self.path, "merge-old");
                std::fs::rename(&self.path, old.path())
                    .with_context(|| format!("-o {shown}: cannot move the old output aside"))?;
                if let Err(e) = std::fs::rename(tmp.path(), &self.path) {
                    let _ = std::fs::rename(old.path(), &self.path);
                    return Err(e).with_context(|| format!("-o {shown}: cannot rename to it"));
                }
            } else {
                std::fs::rename(tmp.path(), &self.path).with_context(|| {
                    format!("-o {shown}: cannot rename {} to it", tmp.path().display())
                })?;
            }
        }
        Ok(())
    }
}
