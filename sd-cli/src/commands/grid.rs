//! `sd grid`: one prompt over the values of one or two parameters (guidance scale, emphasis of a
//! marked span, seed, steps, sampler), written as one labelled contact sheet and, optionally,
//! each image with its A1111 parameters.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use sd_pipeline::grid::{grid, Axis};
use sd_pipeline::{GenerateRequest, GuidanceRule, ModelSource, StableDiffusion};

use super::generate::{request_error, Precision};
use crate::output_path;
use crate::png_output;

/// Arguments of `sd grid`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prompt; an emphasis sweep writes its values for `{w}`: "a (zombie:{w}) in a forest".
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    /// A diffusers folder, a single .safetensors / .ckpt file, or a Hub repository id.
    #[arg(long, value_name = "PATH|REPO_ID")]
    pub model: String,
    /// The columns: NAME=V1,V2,... with NAME cfg, emphasis, seed, steps or scheduler
    /// (e.g. cfg=0,3,7.5,12 or scheduler=ddim,euler-ancestral).
    #[arg(long, value_name = "NAME=V1,V2,...", allow_hyphen_values = true)]
    pub x: Option<String>,
    /// The rows, as --x (a different parameter).
    #[arg(long, value_name = "NAME=V1,V2,...", allow_hyphen_values = true)]
    pub y: Option<String>,
    /// Shorthand for --x emphasis=VALUES (sd-fused's strip: 0,0.1,0.5,1,2,10,-1).
    #[arg(
        long,
        value_name = "W1,W2,...",
        allow_hyphen_values = true,
        conflicts_with = "x"
    )]
    pub emphasis_values: Option<String>,
    /// The contact sheet to write.
    #[arg(short, long, value_name = "OUT.png", default_value = "grid.png")]
    pub output: PathBuf,
    /// Also write each cell as DIR/cell-ROW-COL.png, with its A1111 parameters.
    #[arg(long, value_name = "DIR")]
    pub cells: Option<PathBuf>,
    /// What the images should not show.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub negative_prompt: String,
    /// Inference steps (unless swept).
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Guidance scale (unless swept).
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub guidance_scale: f64,
    /// Apply uncond + g (cond - uncond) at every scale: needed to sweep below 1 (0 is the
    /// unconditional image, negative scales push away from the prompt).
    #[arg(long)]
    pub true_cfg: bool,
    /// Seed (unless swept).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The sampler (unless swept; default: the model's).
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Width in pixels (default: the model's).
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels (default: the model's).
    #[arg(long)]
    pub height: Option<usize>,
    /// A1111's clip skip.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// Cells denoised together as one UNet batch: those that differ only in seed or prompt,
    /// with a sampler that draws no noise while denoising (e.g. ddim, pndm, euler,
    /// dpm-solver++); the images are the same within a level.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub max_batch: usize,
    /// Replace outputs that already exist.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `sd grid`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let columns: Axis = match (&args.x, &args.emphasis_values) {
        (Some(spec), _) => spec.parse().map_err(request_error).context("--x")?,
        (None, Some(values)) => format!("emphasis={values}")
            .parse()
            .map_err(request_error)
            .context("--emphasis-values")?,
        (None, None) => bail!("--x NAME=V1,V2,... (or --emphasis-values): what to sweep"),
    };
    if args.max_batch == 0 {
        bail!("--max-batch: 0 cells; give at least 1");
    }
    let rows: Option<Axis> = args
        .y
        .as_deref()
        .map(|spec| spec.parse().map_err(request_error).context("--y"))
        .transpose()?;
    if !args.true_cfg {
        for axis in std::iter::once(&columns).chain(rows.as_ref()) {
            if let Axis::GuidanceScale(values) = axis {
                if let Some(low) = values.iter().find(|g| **g < 1.0) {
                    bail!(
                        "cfg={low}: below 1, diffusers' rule skips guidance (every such cell \
                         is the same image); add --true-cfg to sweep below 1"
                    );
                }
            }
        }
    }
    let scheduler = args
        .scheduler
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--scheduler")?;
    let base = GenerateRequest {
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        guidance: if args.true_cfg {
            GuidanceRule::TrueCfg
        } else {
            GuidanceRule::Diffusers
        },
        seed: args.seed,
        width: args.width,
        height: args.height,
        clip_skip: args.clip_skip,
        scheduler,
        ..GenerateRequest::new(args.prompt.clone())
    };
    // Every cell is checked (and counted) before the model loads.
    let planned =
        sd_pipeline::grid::cells(&base, &columns, rows.as_ref()).map_err(request_error)?;
    output_path::check_replaceable("-o", &args.output, args.force)?;
    let cell_paths: Vec<PathBuf> = match &args.cells {
        None => Vec::new(),
        Some(dir) => planned
            .iter()
            .map(|c| dir.join(format!("cell-{:02}-{:02}.png", c.row, c.column)))
            .collect(),
    };
    for path in &cell_paths {
        output_path::check_replaceable("--cells", path, args.force)?;
    }

    let started = Instant::now();
    let sd = StableDiffusion::builder(ModelSource::parse(&args.model))
        .dtype(args.dtype.dtype())
        .build()
        .with_context(|| format!("--model {}", args.model))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(planned.len() as u64)
    };
    let made = grid(
        &sd,
        &base,
        &columns,
        rows.as_ref(),
        args.max_batch,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .map_err(request_error)?;
    bar.finish_and_clear();

    if let Some(dir) = &args.cells {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--cells {}: cannot make the folder", dir.display()))?;
    }
    // The sheet carries the first cell's parameters, as A1111's grids do.
    let mut outputs = vec![(
        args.output.clone(),
        &made.sheet,
        made.infotexts[0].to_string(),
    )];
    for ((path, image), info) in cell_paths.iter().zip(&made.images).zip(&made.infotexts) {
        outputs.push((path.clone(), image, info.to_string()));
    }
    png_output::write_all(&outputs, args.force)?;
    let (w, h) = made.sheet.dimensions();
    writeln!(
        out,
        "wrote {} ({w}x{h}, {} cells, {:.2} s)",
        args.output.display(),
        made.images.len(),
        started.elapsed().as_secs_f64()
    )?;
    if let Some(dir) = &args.cells {
        writeln!(out, "wrote {} cells to {}", cell_paths.len(), dir.display())?;
    }
    Ok(())
}
