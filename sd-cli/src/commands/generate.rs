//! `sd generate`: text-to-image, image-to-image (`--init-image`) and inpainting (`--mask`) to
//! PNG files carrying A1111's `parameters` text, with a progress bar and the seed and timings
//! printed at the end.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sd_pipeline::candle_core::DType;
use sd_pipeline::checkpoint::{ConfigOverride, LoadOptions};
use sd_pipeline::image::rgb_to_mask;
use sd_pipeline::image_crate::{self, DynamicImage, GrayImage};
use sd_pipeline::sd_scheduler::SchedulerKind;
use sd_pipeline::{
    AttentionMode, Emphasis, Error, GenerateRequest, GuidanceRule, ImageInput, LatentDecoder,
    ModelSource, StableDiffusion, StepProgress,
};

use crate::animation::{Animation, PreviewQuality};
use crate::extra_networks;
use crate::output_path;
use crate::peak_memory::peak_memory_bytes;
use crate::png_output;

/// Compute precision.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Precision {
    /// 32-bit floats (exact parity with diffusers).
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    pub(crate) fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// How emphasis weights reach the model.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmphasisArg {
    /// Scale the text encoder's output per token, then restore the mean (AUTOMATIC1111).
    A1111,
    /// Scale each token's value vector in cross-attention (sd-fused).
    Attention,
}

/// What decodes the final latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecoderArg {
    /// The model's VAE.
    Vae,
    /// TAESD (--taesd).
    Taesd,
}

/// Arguments of `sd generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prompt, with emphasis syntax: `(word)`, `[word]`, `(word:1.3)`, `(words):1.5`, `BREAK`.
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    /// A diffusers folder, a single .safetensors / .ckpt file, or a Hub repository id
    /// (`owner/name`, fetched into the Hugging Face cache).
    #[arg(long, value_name = "PATH|REPO_ID")]
    pub model: String,
    /// Output PNG; a batch writes OUT-0.png, OUT-1.png, ...; `-` writes one PNG to standard
    /// output. An existing file is replaced only with --force; links, FIFOs and devices never.
    #[arg(short, long, value_name = "OUT.png", default_value = "output.png")]
    pub output: PathBuf,
    /// Replace output files that already exist (never read-only ones).
    #[arg(long)]
    pub force: bool,
    /// What the image should not show (used when guidance runs the unconditional pass).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub negative_prompt: String,
    /// The sampler: ddim, ddpm, pndm, lms, euler, euler-ancestral, heun, dpm-solver++, unipc
    /// (default: the model's scheduler_config.json).
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Inference steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (diffusers' rule: <= 1 runs the conditional pass alone).
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub guidance_scale: f64,
    /// Apply uncond + g (cond - uncond) for every scale (0: unconditional, < 0: away from the
    /// prompt).
    #[arg(long)]
    pub true_cfg: bool,
    /// Seed of the torch-compatible generator (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Width in pixels, a multiple of 8 (default: as --height; neither given: the init
    /// image's size, else the model's).
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 8 (default: as --width; neither given: as above).
    #[arg(long)]
    pub height: Option<usize>,
    /// Images to generate, from one generator (diffusers' num_images_per_prompt).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Image-to-image: the starting picture.
    #[arg(long, value_name = "PNG")]
    pub init_image: Option<PathBuf>,
    /// How far to noise the init image, in [0, 1] (default 0.8; 1.0 with --mask).
    #[arg(long)]
    pub strength: Option<f64>,
    /// Inpainting: white = repaint, black = keep; same size as --init-image.
    #[arg(long, value_name = "PNG", requires = "init_image")]
    pub mask: Option<PathBuf>,
    /// A1111's clip skip: 1 = last layer, 2 = penultimate.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// How emphasis weights are applied.
    #[arg(long, value_enum, default_value_t = EmphasisArg::A1111)]
    pub emphasis: EmphasisArg,
    /// Blend another model in on the fly: PATH:SCALE gives A + (B - A) * SCALE (repeatable).
    #[arg(long, value_name = "MODEL:SCALE")]
    pub mix: Vec<String>,
    /// Merge a LoRA / LyCORIS file (kohya, diffusers / PEFT, LoHa, LoKr; .safetensors or .pt)
    /// at a multiplier, or at one for the text encoder and one for the UNet (repeatable).
    #[arg(long, value_name = "PATH[:MULT|:TE:UNET]")]
    pub lora: Vec<String>,
    /// Where the prompts' <lora:NAME:MULT> tags find their files (NAME.safetensors / .pt).
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// Make LoRA keys of no known kind, and modules for layers the model lacks, an error
    /// (default: skipped with a warning).
    #[arg(long)]
    pub strict: bool,
    /// Textual-inversion embeddings (A1111 .pt / .safetensors, diffusers .bin): each file's
    /// name, written in a prompt, stands for its vectors.
    #[arg(long, value_name = "DIR")]
    pub embeddings_dir: Option<PathBuf>,
    /// Keep a picture of the predicted clean image (x0) every N model calls, for --animation
    /// and --frames.
    #[arg(long, value_name = "N")]
    pub preview_every: Option<usize>,
    /// How previews are made: the latent-to-RGB projection (instant), TAESD (needs --taesd)
    /// or the VAE.
    #[arg(long, value_enum, default_value_t = PreviewQuality::Latent2rgb)]
    pub preview: PreviewQuality,
    /// Write the previews and the final image as a looping GIF (needs --preview-every).
    #[arg(long, value_name = "OUT.gif", requires = "preview_every")]
    pub animation: Option<PathBuf>,
    /// Write the previews and the final image as DIR/step-NNN.png (needs --preview-every).
    #[arg(long, value_name = "DIR", requires = "preview_every")]
    pub frames: Option<PathBuf>,
    /// Rewrite this PNG with each new preview while the run goes (for an image viewer that
    /// reloads it; needs --preview-every).
    #[arg(long, value_name = "PATH.png", requires = "preview_every")]
    pub preview_file: Option<PathBuf>,
    /// TAESD, the tiny autoencoder, for --preview taesd and --decoder taesd: a diffusers
    /// AutoencoderTiny folder, or taesd_decoder.pth / .safetensors (or a folder holding it).
    #[arg(long, value_name = "PATH")]
    pub taesd: Option<PathBuf>,
    /// What decodes the final image: the model's VAE, or TAESD (needs --taesd; much faster,
    /// lower quality).
    #[arg(long, value_enum, default_value_t = DecoderArg::Vae)]
    pub decoder: DecoderArg,
    /// Sliced attention: at most this many query positions at a time (saves memory).
    #[arg(long, value_name = "N")]
    pub attention_slice: Option<usize>,
    /// Decode (and encode) with the VAE in overlapping tiles, for large images.
    #[arg(long)]
    pub vae_tiling: bool,
    /// Build each network for its stage only and drop it afterwards (lower peak memory).
    #[arg(long)]
    pub low_memory: bool,
    /// Single files: read configs from this diffusers folder (or folder of configs) instead of
    /// detecting them from shapes.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Single files: use the regular UNet weights even when an EMA copy is present.
    #[arg(long)]
    pub no_ema: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `sd generate`, writing its report to `out` and the progress bar to stderr.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    check_output(args)?;
    let request = request(args)?;
    let started = Instant::now();
    let sd = load(args)?;
    let load_time = started.elapsed();

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Ctrl-C stops after the current step; no image is written.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let bar = progress_bar(args.quiet);
    let mut animation = args
        .preview_every
        .map(|every| {
            let keep = args.animation.is_some() || args.frames.is_some();
            Animation::new(every, args.preview, keep, args.preview_file.clone())
        })
        .transpose()?;
    let mut preview_error = None;
    let generated = sd.generate(&request, &mut |p: &StepProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.step as u64);
        if let Some(animation) = animation.as_mut() {
            if let Err(e) = animation.step(&sd, p) {
                preview_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        if interrupted.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    bar.finish_and_clear();
    if let Some(e) = preview_error {
        return Err(e.context("--preview-every"));
    }
    let generated = generated.map_err(|e| match e {
        Error::Cancelled { step } => anyhow::Error::new(Interrupted { step }),
        other => request_error(other),
    })?;

    let paths = if args.writes_to_stdout() {
        png_output::write_stdout(&generated.images[0], &generated.infotexts[0].to_string())?;
        vec![PathBuf::from("standard output")]
    } else {
        let paths = png_output::batch_paths(&args.output, generated.images.len());
        let outputs: Vec<_> = paths
            .iter()
            .zip(&generated.images)
            .zip(&generated.infotexts)
            .map(|((p, image), info)| (p.clone(), image, info.to_string()))
            .collect();
        png_output::write_all(&outputs, args.force)?;
        paths
    };

    let t = &generated.timings;
    let per_call = t.denoising.as_secs_f64() / t.model_calls.max(1) as f64;
    for path in &paths {
        writeln!(out, "wrote {}", path.display())?;
    }
    write_extra_networks(&sd, out)?;
    if let Some(animation) = animation.as_mut() {
        animation.finish(generated.timings.model_calls, &generated.images[0]);
        if let Some(dir) = &args.frames {
            let written = animation.write_frames(dir, args.force)?;
            writeln!(out, "wrote {} frames to {}", written.len(), dir.display())?;
        }
        if let Some(path) = &args.animation {
            animation.write_gif(path)?;
            writeln!(out, "wrote {} ({} frames)", path.display(), animation.len())?;
        }
    }
    writeln!(out, "seed: {}", request.seed)?;
    writeln!(
        out,
        "time: load {:.2} s, text encoding {:.2} s, latents {:.2} s, denoising {:.2} s \
         ({} model calls, {per_call:.3} s/it), decoding {:.2} s, total {:.2} s",
        load_time.as_secs_f64(),
        t.text_encoding.as_secs_f64(),
        t.preparing.as_secs_f64(),
        t.denoising.as_secs_f64(),
        t.model_calls,
        t.decoding.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    )?;
    if let Some(peak) = peak_memory_bytes() {
        writeln!(
            out,
            "peak memory: {:.2} GiB",
            peak as f64 / (1u64 << 30) as f64
        )?;
    }
    Ok(())
}

impl Args {
    /// Whether `-o -` asks for the PNG on standard output.
    pub fn writes_to_stdout(&self) -> bool {
        self.output.as_os_str() == "-"
    }
}

/// Generation stopped by Ctrl-C (the command exits with 130).
#[derive(Debug)]
pub struct Interrupted {
    step: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted at step {}; nothing was written", self.step)
    }
}

impl std::error::Error for Interrupted {}

/// Checks before any work that the output can be written where asked.
fn check_output(args: &Args) -> Result<()> {
    let wants_taesd = args.decoder == DecoderArg::Taesd || args.preview == PreviewQuality::Taesd;
    if wants_taesd && args.taesd.is_none() {
        bail!("--decoder taesd / --preview taesd: give the TAESD weights with --taesd PATH");
    }
    if args.writes_to_stdout() {
        if args.batch_size != 1 {
            bail!(
                "-o -: standard output takes one PNG; --batch-size {} makes more",
                args.batch_size
            );
        }
        return Ok(());
    }
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "-o {}: the folder {} does not exist",
            args.output.display(),
            dir.display()
        );
    }
    if args.output.is_dir() {
        bail!(
            "-o {}: is a folder; give a file name like out.png",
            args.output.display()
        );
    }
    for path in png_output::batch_paths(&args.output, args.batch_size) {
        output_path::check_replaceable("-o", &path, args.force)?;
    }
    if let Some(path) = &args.animation {
        output_path::check_replaceable("--animation", path, args.force)?;
    }
    if let Some(path) = &args.preview_file {
        output_path::check_replaceable("--preview-file", path, args.force)?;
    }
    Ok(())
}

fn request(args: &Args) -> Result<GenerateRequest> {
    let scheduler = args
        .scheduler
        .as_deref()
        .map(|name| name.parse::<SchedulerKind>())
        .transpose()
        .context("--scheduler")?;
    let init = match &args.init_image {
        None => {
            if args.strength.is_some() {
                bail!("--strength: only meaningful with --init-image");
            }
            None
        }
        Some(path) => {
            let image = read_image(path, "--init-image")?.to_rgb8();
            let mask = args.mask.as_deref().map(read_mask).transpose()?;
            let mut input = ImageInput::new(image, mask);
            if let Some(strength) = args.strength {
                input.strength = strength;
            }
            Some(input)
        }
    };
    Ok(GenerateRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        guidance: if args.true_cfg {
            GuidanceRule::TrueCfg
        } else {
            GuidanceRule::Diffusers
        },
        width: args.width,
        height: args.height,
        batch_size: args.batch_size,
        seed: args.seed.unwrap_or_else(random_seed),
        clip_skip: args.clip_skip,
        emphasis: match args.emphasis {
            EmphasisArg::A1111 => Emphasis::A1111,
            EmphasisArg::Attention => Emphasis::Attention,
        },
        scheduler,
        karras: None,
        init,
        start_noise: None,
        conditioning: None,
        decoder: match args.decoder {
            DecoderArg::Vae => LatentDecoder::Vae,
            DecoderArg::Taesd => LatentDecoder::Taesd,
        },
    })
}

/// The largest init image or mask side read: twice the largest output side, so any output
/// size can come from a downscale, while a hostile header (a few hundred bytes claiming
/// 20000 x 20000) is refused before anything is decoded.
const MAX_INPUT_SIDE: u32 = 2 * sd_pipeline::request::MAX_SIDE as u32;

fn read_image(path: &Path, arg: &str) -> Result<DynamicImage> {
    let shown = path.display();
    // The image crate's errors repeat their cause in their source; show the message once.
    let unreadable =
        |e: &dyn std::fmt::Display| anyhow!("{arg} {shown}: cannot read the image: {e}");
    let open = || -> Result<image_crate::ImageReader<std::io::BufReader<std::fs::File>>> {
        image_crate::ImageReader::open(path)
            .with_context(|| format!("{arg} {shown}: cannot open the image"))?
            .with_guessed_format()
            .map_err(|e| unreadable(&e))
    };
    let (w, h) = open()?.into_dimensions().map_err(|e| unreadable(&e))?;
    if w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
        bail!(
            "{arg} {shown}: the image is {w}x{h}; at most {MAX_INPUT_SIDE} pixels a side are read"
        );
    }
    let mut limits = image_crate::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    let mut reader = open()?;
    reader.limits(limits);
    reader.decode().map_err(|e| unreadable(&e))
}

/// A grey mask as it is; a colour one converted as PIL's `convert("L")` does.
fn read_mask(path: &Path) -> Result<GrayImage> {
    let image = read_image(path, "--mask")?;
    Ok(match image {
        DynamicImage::ImageLuma8(grey) => grey,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => image.to_luma8(),
        other => rgb_to_mask(&other.to_rgb8()),
    })
}

/// A seed in A1111's range (32 bits), from the standard library's randomly keyed hasher.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() & 0xFFFF_FFFF
}

fn load(args: &Args) -> Result<StableDiffusion> {
    let source = ModelSource::parse(&args.model);
    let mut options = LoadOptions {
        ema: !args.no_ema,
        ..LoadOptions::default()
    };
    if let Some(dir) = &args.config {
        // The error names the folder already.
        options.config_override = ConfigOverride::from_diffusers_folder(dir).context("--config")?;
    }
    let mut builder = StableDiffusion::builder(source)
        .dtype(args.dtype.dtype())
        .vae_tiling(args.vae_tiling)
        .low_memory(args.low_memory)
        .load_options(options)
        .download_progress(!args.quiet);
    if let Some(query) = args.attention_slice {
        if query == 0 {
            bail!("--attention-slice: 0 query positions; give at least 1");
        }
        builder = builder.attention(AttentionMode::Sliced {
            batch_heads: 0,
            query,
        });
    }
    for mix in &args.mix {
        let (model, scale) = mix.rsplit_once(':').ok_or_else(|| {
            anyhow!("--mix {mix}: expected MODEL:SCALE, e.g. other.safetensors:0.3")
        })?;
        let scale: f64 = scale
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && s.abs() <= f64::from(f32::MAX))
            .ok_or_else(|| anyhow!("--mix {mix}: {scale:?} is not a number within f32's range"))?;
        builder = builder.mix(ModelSource::parse(model), scale);
    }
    let prompts = [
        ("prompt", args.prompt.as_str()),
        ("--negative-prompt", args.negative_prompt.as_str()),
    ];
    for (path, multipliers) in
        extra_networks::loras(&args.lora, args.lora_dir.as_deref(), &prompts)?
    {
        builder = builder.lora(path, multipliers);
    }
    builder = builder.lora_strict(args.strict);
    if let Some(dir) = &args.embeddings_dir {
        for path in extra_networks::embedding_files(dir)? {
            builder = builder.embedding(path);
        }
    }
    if let Some(path) = &args.taesd {
        builder = builder.taesd(path);
    }
    builder.build().map_err(|e| match e {
        // A model to mix in is blamed as the --mix argument that named it.
        Error::Mix { index, error, .. } => {
            anyhow!(
                "--mix {}: {error}",
                args.mix.get(index).map_or("?", |m| m.as_str())
            )
        }
        other => anyhow::Error::new(other).context(format!("--model {}", args.model)),
    })
}

/// The LoRAs and embeddings loaded, and LoRA modules that changed nothing.
fn write_extra_networks(sd: &StableDiffusion, out: &mut impl Write) -> Result<()> {
    let loras = sd.loras();
    if !loras.is_empty() {
        let shown: Vec<String> = loras
            .iter()
            .map(|(name, m)| format!("{name} (te {}, unet {})", m.text_encoder, m.unet))
            .collect();
        writeln!(out, "lora: {}", shown.join(", "))?;
    }
    let unmatched = sd.lora_unmatched();
    if !unmatched.is_empty() {
        let shown: Vec<&str> = unmatched.iter().take(5).map(String::as_str).collect();
        writeln!(
            out,
            "warning: {} LoRA modules matched no layer of this model and were skipped: {}{}",
            unmatched.len(),
            shown.join(", "),
            if unmatched.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )?;
    }
    let embeddings = sd.embeddings();
    if !embeddings.is_empty() {
        let shown: Vec<String> = embeddings
            .iter()
            .map(|(name, n)| format!("{name} ({n} vectors)"))
            .collect();
        writeln!(out, "embeddings: {}", shown.join(", "))?;
    }
    Ok(())
}

/// Request errors as the argument they came from (`--width: ...`).
pub(crate) fn request_error(error: Error) -> anyhow::Error {
    match error {
        Error::InvalidRequest { field, message } => anyhow!("--{field}: {message}"),
        other => anyhow::Error::new(other),
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} step {pos}/{len} [{wide_bar}] {elapsed_precise} < {eta_precise}, {s_per_it}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "s_per_it",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let per_sec = state.per_sec();
            if per_sec > 0.0 && state.pos() > 0 {
                let _ = write!(w, "{:.2} s/it", 1.0 / per_sec);
            }
        },
    );
    ProgressBar::new(0).with_style(style)
}
