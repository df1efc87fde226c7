//! `sd bench`: times one text-to-image run phase by phase (load, text encoding, each UNet call,
//! VAE decode) and reports seconds, it/s, the UNet's achieved GFLOP/s and the peak memory.
//!
//! The run is a plain `sd generate`: one prompt and an empty negative prompt, guidance 7.5 (so
//! every UNet call is a CFG batch of 2), the model's default scheduler, seed 0, batch 1. Text
//! encoding and decoding are the pipeline's own [`Timings`](sd_pipeline::Timings); each UNet
//! call is timed between step callbacks, so it includes the scheduler step (microseconds).

use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use sd_pipeline::candle_core::DType;
use sd_pipeline::random_model::random_weights;
use sd_pipeline::request::{MAX_SIDE, MAX_STEPS};
use sd_pipeline::{
    GenerateRequest, ModelSource, StableDiffusion, StableDiffusionBuilder, StepProgress,
};
use serde::Serialize;

use super::generate::request_error;
use crate::peak_memory::peak_memory_bytes;
use crate::unet_flops::UnetShape;

/// The prompt every run encodes (one 77-token window).
const PROMPT: &str = "a photograph of an astronaut riding a horse";
/// Text tokens the UNet attends to: one window.
const CONTEXT_TOKENS: usize = 77;
/// Rows of each UNet call: unconditional and conditional.
const CFG_BATCH: usize = 2;

/// Compute precision of the benchmark.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Precision {
    /// 32-bit floats.
    F32,
    /// bfloat16.
    Bf16,
}

impl Precision {
    fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// A full-size model made of seeded random weights.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RandomModel {
    /// Stable Diffusion 1.5's configs.
    Sd15,
    /// Stable Diffusion 2.1's configs.
    Sd21,
}

/// Arguments of `sd bench`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["model", "random"])))]
pub struct Args {
    /// A diffusers folder, a single .safetensors / .ckpt file, or a Hub repository id.
    #[arg(long, value_name = "PATH|REPO_ID")]
    pub model: Option<String>,
    /// Full-size random weights instead of a model on disk.
    #[arg(long, value_enum, value_name = "MODEL")]
    pub random: Option<RandomModel>,
    /// Image side in pixels (square), a multiple of 8.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// Inference steps of the model's default scheduler.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Merge a LoRA file while loading, as `sd generate --lora` does (repeatable): the load
    /// time and peak memory then include applying it.
    #[arg(long, value_name = "PATH[:MULT|:TE:UNET]")]
    pub lora: Vec<String>,
    /// Keep the --lora files as side branches (switchable per request) and ask for each in
    /// the prompt with a tag at its multipliers: UNet calls then include the branches.
    #[arg(long, requires = "lora")]
    pub lora_branches: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one benchmark measured (the `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The model's name.
    pub model: String,
    /// Image side in pixels.
    pub size: usize,
    /// Latent side (size / 8).
    pub latent_size: usize,
    /// Compute precision.
    pub dtype: &'static str,
    /// The CPU instruction tier the kernels use.
    pub isa: &'static str,
    /// The sampler.
    pub scheduler: String,
    /// Inference steps asked for.
    pub steps: usize,
    /// UNet calls made (PNDM: steps + 1, Heun: 2 steps - 1).
    pub unet_calls: usize,
    /// Reading the weights and building the networks.
    pub load_seconds: f64,
    /// `--random`: making the random weights in memory (before the load; null otherwise).
    pub random_weights_seconds: Option<f64>,
    /// Tokenizing and encoding the prompt and the empty negative prompt.
    pub text_encode_seconds: f64,
    /// The whole sampling loop.
    pub denoise_seconds: f64,
    /// Mean seconds per UNet call (CFG batch 2).
    pub unet_seconds_per_call: f64,
    /// The fastest UNet call.
    pub unet_seconds_min: f64,
    /// UNet calls per second (1 / mean).
    pub iterations_per_second: f64,
    /// Floating-point operations of one UNet call (analytic count, see `unet_flops`).
    pub unet_gflop_per_call: f64,
    /// Achieved GFLOP/s of the mean UNet call.
    pub unet_gflops: f64,
    /// VAE decoding and conversion to 8-bit pixels.
    pub vae_decode_seconds: f64,
    /// Peak resident memory (Linux `VmHWM`; null elsewhere).
    pub peak_rss_mib: Option<f64>,
}

/// Runs `sd bench`, writing the table (or JSON) to `out`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    check(args)?;
    let mut random_seconds = None;
    let (sd, unet, load_seconds) = match (&args.model, args.random) {
        (Some(model), _) => {
            let started = Instant::now();
            let builder = StableDiffusion::builder(ModelSource::parse(model));
            let (sd, unet) = load(builder, args).with_context(|| format!("--model {model}"))?;
            (sd, unet, started.elapsed().as_secs_f64())
        }
        (None, Some(random)) => {
            let started = Instant::now();
            let model = random.model();
            let (weights, tokenizer) =
                random_weights(model, 0).with_context(|| format!("--random {}", random.arg()))?;
            random_seconds = Some(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let builder = StableDiffusion::builder_from_weights(weights, tokenizer, model.name());
            let (sd, unet) =
                load(builder, args).with_context(|| format!("--random {}", random.arg()))?;
            (sd, unet, started.elapsed().as_secs_f64())
        }
        (None, None) => bail!("--model: give a model, or --random sd15|sd21"),
    };

    let request = GenerateRequest {
        prompt: prompt(args, &sd),
        negative_prompt: String::new(),
        steps: args.steps,
        guidance_scale: 7.5,
        width: Some(args.size),
        height: Some(args.size),
        seed: 0,
        ..GenerateRequest::default()
    };
    let mut callbacks = Vec::with_capacity(args.steps + 1);
    let generated = sd
        .generate(&request, &mut |_: &StepProgress| {
            callbacks.push(Instant::now());
            ControlFlow::Continue(())
        })
        .map_err(request_error)?;
    let timings = &generated.timings;
    let calls = call_durations(timings.denoising, &callbacks);
    let unet_calls = calls.len().max(1);
    let mean = timings.denoising.as_secs_f64() / unet_calls as f64;
    let min = calls.iter().min().map_or(mean, Duration::as_secs_f64);
    let latent_size = args.size / 8;
    let flops = unet.flops(CFG_BATCH, (latent_size, latent_size), CONTEXT_TOKENS) as f64;

    let report = Report {
        model: sd.name().to_string(),
        size: args.size,
        latent_size,
        dtype: args.dtype.name(),
        isa: sd_pipeline::sd_kernels::Isa::detect().name(),
        scheduler: sd.default_scheduler().to_string(),
        steps: args.steps,
        unet_calls: calls.len(),
        load_seconds,
        random_weights_seconds: random_seconds,
        text_encode_seconds: timings.text_encoding.as_secs_f64(),
        denoise_seconds: timings.denoising.as_secs_f64(),
        unet_seconds_per_call: mean,
        unet_seconds_min: min,
        iterations_per_second: 1.0 / mean,
        unet_gflop_per_call: flops / 1e9,
        unet_gflops: flops / mean / 1e9,
        vae_decode_seconds: timings.decoding.as_secs_f64(),
        peak_rss_mib: peak_memory_bytes().map(|b| b as f64 / (1u64 << 20) as f64),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write_table(&report, out)?;
    }
    Ok(())
}

/// Argument checks, before any work.
fn check(args: &Args) -> Result<()> {
    if args.size == 0 || !args.size.is_multiple_of(8) {
        bail!("--size: {} is not a positive multiple of 8", args.size);
    }
    if args.size > MAX_SIDE {
        bail!(
            "--size: {} is above the largest side, {MAX_SIDE}",
            args.size
        );
    }
    if args.steps == 0 || args.steps > MAX_STEPS {
        bail!("--steps: {} steps; give 1 to {MAX_STEPS}", args.steps);
    }
    Ok(())
}

impl RandomModel {
    fn model(self) -> sd_pipeline::random_model::RandomModel {
        match self {
            RandomModel::Sd15 => sd_pipeline::random_model::RandomModel::Sd15,
            RandomModel::Sd21 => sd_pipeline::random_model::RandomModel::Sd21,
        }
    }

    fn arg(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// The prompt, with a `<lora:…>` tag for each LoRA `sd` loaded when they are side branches.
fn prompt(args: &Args, sd: &StableDiffusion) -> String {
    let mut prompt = PROMPT.to_string();
    if args.lora_branches {
        for (name, m) in sd.loras() {
            prompt.push_str(&format!(" <lora:{name}:{}:{}>", m.text_encoder, m.unet));
        }
    }
    prompt
}

/// Reads the model and builds the networks as `sd generate` does; also returns the UNet's
/// shape for the FLOP count.
fn load(builder: StableDiffusionBuilder, args: &Args) -> Result<(StableDiffusion, UnetShape)> {
    let mut builder = builder
        .dtype(args.dtype.dtype())
        .lora_side_branches(args.lora_branches);
    for lora in &args.lora {
        let (path, multipliers) = crate::extra_networks::parse_lora(lora)?;
        builder = builder.lora(path, multipliers);
    }
    let sd = builder.build()?;
    let config = sd
        .unet_config()
        .context("the loaded pipeline has no UNet config")?;
    let unet = UnetShape::of(config)?;
    Ok((sd, unet))
}

/// Each UNet call's time, from the instants of the step callbacks that follow the calls. The
/// first call has no callback before it: it is what the loop took beyond the later calls.
fn call_durations(denoising: Duration, callbacks: &[Instant]) -> Vec<Duration> {
    let (Some(first), Some(last)) = (callbacks.first(), callbacks.last()) else {
        return Vec::new();
    };
    let first_call = denoising.saturating_sub(last.duration_since(*first));
    std::iter::once(first_call)
        .chain(callbacks.windows(2).map(|w| w[1].duration_since(w[0])))
        .collect()
}

fn write_table(r: &Report, out: &mut impl Write) -> Result<()> {
    let rss = r
        .peak_rss_mib
        .map_or_else(|| "n/a".to_string(), |m| format!("{m:.1} MiB"));
    writeln!(
        out,
        "{}: {size}x{size} px ({latent}x{latent} latents), {}, isa {}, {} {} steps = {} UNet \
         calls (CFG batch {CFG_BATCH})",
        r.model,
        r.dtype,
        r.isa,
        r.scheduler,
        r.steps,
        r.unet_calls,
        size = r.size,
        latent = r.latent_size,
    )?;
    writeln!(out, "phase          seconds")?;
    if let Some(seconds) = r.random_weights_seconds {
        writeln!(
            out,
            "random weights {:>7.3}  (made in memory, before the load)",
            seconds
        )?;
    }
    writeln!(out, "load         {:>9.3}", r.load_seconds)?;
    writeln!(out, "text encode  {:>9.3}", r.text_encode_seconds)?;
    writeln!(
        out,
        "UNet call    {:>9.4}  mean; min {:.4}, {:.2} it/s",
        r.unet_seconds_per_call, r.unet_seconds_min, r.iterations_per_second
    )?;
    writeln!(out, "VAE decode   {:>9.3}", r.vae_decode_seconds)?;
    writeln!(
        out,
        "UNet FLOPs   {:.4} GFLOP per call, {:.2} GFLOP/s achieved",
        r.unet_gflop_per_call, r.unet_gflops
    )?;
    writeln!(out, "peak RSS     {rss}")?;
    Ok(())
}
