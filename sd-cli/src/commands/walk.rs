//! `sd walk`: a latent walk between seeds and/or prompts as a looping GIF (and numbered PNGs):
//! the start noise slerped, the text conditioning interpolated, everything else fixed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::ProgressBar;
use sd_pipeline::walk::{walk, Keyframe, TextPath, WalkOptions};
use sd_pipeline::{GenerateRequest, ModelSource, StableDiffusion};

use super::generate::request_error;
use crate::animation::{write_gif, write_png};
use crate::output_path;

/// How the text conditioning moves between prompts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TextPathArg {
    /// A straight line.
    Linear,
    /// Spherical, as the noise.
    Spherical,
}

/// Arguments of `sd walk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A diffusers folder, a single .safetensors / .ckpt file, or a Hub repository id.
    #[arg(long, value_name = "PATH|REPO_ID")]
    pub model: String,
    /// A keyframe's prompt (repeatable; one prompt is used for every seed).
    #[arg(long, required = true, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// A keyframe's seed (repeatable; one seed is used for every prompt).
    #[arg(long, required = true, value_name = "N")]
    pub seed: Vec<u64>,
    /// Frames between two keyframes.
    #[arg(long, default_value_t = 8)]
    pub between: usize,
    /// Walk back from the last keyframe to the first.
    #[arg(long = "loop")]
    pub loop_back: bool,
    /// How the text conditioning moves.
    #[arg(long, value_enum, default_value_t = TextPathArg::Linear)]
    pub text_path: TextPathArg,
    /// Frames denoised together as one UNet batch (used with samplers that draw no noise
    /// while denoising, e.g. ddim, pndm, euler, dpm-solver++; the frames are the same).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub max_batch: usize,
    /// What the frames should not show.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub negative_prompt: String,
    /// Inference steps per frame.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub guidance_scale: f64,
    /// The sampler (default: the model's).
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Width in pixels (default: the model's).
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels (default: the model's).
    #[arg(long)]
    pub height: Option<usize>,
    /// The GIF to write.
    #[arg(short, long, value_name = "OUT.gif")]
    pub output: PathBuf,
    /// Also write each frame as DIR/frame-NNN.png.
    #[arg(long, value_name = "DIR")]
    pub frames: Option<PathBuf>,
    /// Replace outputs that already exist.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `sd walk`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let keyframes = keyframes(args)?;
    if args.max_batch == 0 {
        bail!("--max-batch: 0 frames; give at least 1");
    }
    output_path::check_replaceable("-o", &args.output, args.force)?;
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
        width: args.width,
        height: args.height,
        scheduler,
        ..GenerateRequest::default()
    };
    let started = Instant::now();
    let sd = StableDiffusion::builder(ModelSource::parse(&args.model))
        .build()
        .with_context(|| format!("--model {}", args.model))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    let path = match args.text_path {
        TextPathArg::Linear => TextPath::Linear,
        TextPathArg::Spherical => TextPath::Spherical,
    };
    let frames = walk(
        &sd,
        &base,
        &keyframes,
        &WalkOptions {
            between: args.between,
            loop_back: args.loop_back,
            text_path: path,
            max_batch: args.max_batch,
        },
        &mut |i, n| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
        },
    )
    .map_err(request_error)?;
    bar.finish_and_clear();
    if let Some(dir) = &args.frames {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--frames {}: cannot make the folder", dir.display()))?;
        let paths: Vec<PathBuf> = (0..frames.len())
            .map(|i| dir.join(format!("frame-{i:03}.png")))
            .collect();
        for p in &paths {
            output_path::check_replaceable("--frames", p, args.force)?;
        }
        for (p, image) in paths.iter().zip(&frames) {
            write_png(p, image, "--frames")?;
        }
        writeln!(out, "wrote {} frames to {}", frames.len(), dir.display())?;
    }
    let refs: Vec<_> = frames.iter().collect();
    write_gif(&args.output, &refs, "-o", false)?;
    writeln!(
        out,
        "wrote {} ({} frames, {:.2} s)",
        args.output.display(),
        frames.len(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// The keyframes: prompts and seeds paired, or one of them shared by all.
fn keyframes(args: &Args) -> Result<Vec<Keyframe>> {
    let (p, s) = (args.prompt.len(), args.seed.len());
    let count = match (p, s) {
        (1, n) | (n, 1) => n,
        (a, b) if a == b => a,
        _ => bail!("--prompt x{p} and --seed x{s}: give as many of each, or one of either"),
    };
    if count < 2 {
        bail!("--prompt / --seed: a walk needs two keyframes (two seeds, two prompts, or both)");
    }
    Ok((0..count)
        .map(|i| Keyframe {
            prompt: args.prompt[i.min(p - 1)].clone(),
            seed: args.seed[i.min(s - 1)],
        })
        .collect())
}
