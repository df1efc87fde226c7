//! One SD 1.5-shaped UNet forward (random weights, seeded, generated here; CFG batch 2, 77 text
//! tokens, f32, CPU) with sd-unet and with candle-transformers' stable_diffusion UNet on the
//! very same weights, at 256² and 512² pixels (32² and 64² latents).
//!
//! `cargo run --release -p sd-unet --example unet_bench -- [SIZE ...] [--runs N] [--dtype f32|bf16|f16] [--sliced ROWS,QUERIES] [--no-candle]`
//! (default sizes 256 512, N = 2; each number is the fastest of N runs).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::unet_2d::{self, BlockConfig};
use sd_unet::{AttentionMode, UNet2DConditionConfig, UNet2DConditionModel};

#[global_allocator]
static ALLOC: sd_kernels::alloc::CachingAllocator = sd_kernels::alloc::CachingAllocator;

/// splitmix64: a seeded stream so every run benchmarks the same weights and inputs.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn tensor(&mut self, dims: &[usize], scale: f32, device: &Device) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.next_f32() * scale).collect();
        Ok(Tensor::from_vec(data, dims, device)?)
    }
}

/// Overwrites every variable: weights uniform with variance 1/fan_in, biases small, norm
/// scales 1 and shifts 0 (so activations keep a realistic range, no denormals).
fn randomise(varmap: &VarMap, rng: &mut Rng, device: &Device) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow!("varmap lock poisoned"))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let is_norm = name.contains("norm");
        let value = if dims.len() == 1 && is_norm && name.ends_with("weight") {
            Tensor::ones(dims.as_slice(), DType::F32, device)?
        } else if dims.len() == 1 && is_norm {
            Tensor::zeros(dims.as_slice(), DType::F32, device)?
        } else if dims.len() == 1 {
            rng.tensor(&dims, 0.01, device)?
        } else {
            let fan_in: usize = dims[1..].iter().product();
            rng.tensor(&dims, (3.0 / fan_in as f32).sqrt(), device)?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) this process has used, from /proc/self/stat
/// (Linux; 0 elsewhere). On a shared machine it is steadier than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Fastest wall time of `runs` calls, that call's CPU time, and the last output.
fn time_min<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64, T)> {
    let (mut best, mut best_cpu) = (f64::INFINITY, 0.0);
    let mut out = None;
    for _ in 0..runs {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let y = f()?;
        let wall = start.elapsed().as_secs_f64();
        if wall < best {
            (best, best_cpu) = (wall, cpu_seconds() - cpu);
        }
        out = Some(y);
    }
    Ok((best, best_cpu, out.ok_or_else(|| anyhow!("no run"))?))
}

fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
    let num = (a - b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(num / b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
}

fn main() -> Result<()> {
    let mut sizes = Vec::new();
    let mut runs = 2;
    let mut mode = AttentionMode::default();
    let mut skip_candle = false;
    let mut dtype = DType::F32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().ok_or_else(|| anyhow!("--runs N"))?.parse()?;
        } else if a == "--sliced" {
            // --sliced ROWS,QUERIES (0 = whole axis)
            let spec = args
                .next()
                .ok_or_else(|| anyhow!("--sliced ROWS,QUERIES"))?;
            let (r, q) = spec
                .split_once(',')
                .ok_or_else(|| anyhow!("--sliced ROWS,QUERIES"))?;
            mode = AttentionMode::Sliced {
                batch_heads: r.parse()?,
                query: q.parse()?,
            };
        } else if a == "--dtype" {
            dtype = match args.next().as_deref() {
                Some("f32") => DType::F32,
                Some("bf16") => DType::BF16,
                Some("f16") => DType::F16,
                other => return Err(anyhow!("--dtype f32|bf16|f16, got {other:?}")),
            };
        } else if a == "--no-candle" {
            skip_candle = true;
        } else {
            sizes.push(a.parse::<usize>()?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![256, 512];
    }
    let device = Device::Cpu;
    let config = UNet2DConditionConfig::default();
    // A VarMap learns every name and shape from sd-unet's constructor; the weights are then
    // overwritten with seeded values and handed to both models as plain (detached) tensors:
    // built on `Var`s, candle would record the autograd graph and keep every activation alive.
    let varmap = VarMap::new();
    UNet2DConditionModel::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    let mut rng = Rng(0x5eed);
    randomise(&varmap, &mut rng, &device)?;
    let weights: HashMap<String, Tensor> = {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| anyhow!("varmap lock poisoned"))?;
        vars.iter()
            .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
            .collect()
    };
    let n_vars = weights.len();
    drop(varmap);
    let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
    let mut ours = UNet2DConditionModel::new(&config, vb.to_dtype(dtype))?;
    ours.set_attention_mode(mode);
    let block = |out_channels, use_cross_attn| BlockConfig {
        out_channels,
        use_cross_attn,
        attention_head_dim: 8,
    };
    // candle's own SD 1.5 values (`StableDiffusionConfig::v1_5`, whose field is private).
    let candle_config = unet_2d::UNet2DConditionModelConfig {
        blocks: vec![
            block(320, Some(1)),
            block(640, Some(1)),
            block(1280, Some(1)),
            block(1280, None),
        ],
        center_input_sample: false,
        cross_attention_dim: 768,
        downsample_padding: 1,
        flip_sin_to_cos: true,
        freq_shift: 0.,
        layers_per_block: 2,
        mid_block_scale_factor: 1.,
        norm_eps: 1e-5,
        norm_num_groups: 32,
        sliced_attention_size: None,
        use_linear_projection: false,
    };
    // Fails (missing tensor) if candle wanted a weight sd-unet does not have.
    let theirs = unet_2d::UNet2DConditionModel::new(vb, 4, 4, false, candle_config)?;
    println!(
        "SD 1.5 UNet, {n_vars} tensors, sd-unet {dtype:?} (candle-transformers f32), CPU, {} threads, CFG batch 2, best of {runs}, sd-unet attention {mode:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| size | latent | sd-unet s/forward (CPU s) | candle-transformers s/forward (CPU s) | rel L2 between them |");
    println!("|---|---|---|---|---|");
    for size in sizes {
        let l = size / 8;
        let latents = rng.tensor(&[2, 4, l, l], 1.7, &device)?;
        let text = rng.tensor(&[2, 77, 768], 1.7, &device)?;
        let (t_ours, c_ours, y_ours) =
            time_min(runs, || Ok(ours.forward(&latents, 981.0, &text)?))?;
        if skip_candle {
            println!("| {size}² | {l}x{l} | {t_ours:.2} ({c_ours:.1}) | - | - |");
            continue;
        }
        let (t_theirs, c_theirs, y_theirs) =
            time_min(runs, || Ok(theirs.forward(&latents, 981.0, &text)?))?;
        let diff = rel_l2(&y_ours, &y_theirs)?;
        println!("| {size}² | {l}x{l} | {t_ours:.2} ({c_ours:.1}) | {t_theirs:.2} ({c_theirs:.1}) | {diff:.1e} |");
    }
    Ok(())
}
