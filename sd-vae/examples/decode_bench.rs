//! Times one VAE decode with SD 1.5's VAE shapes (block_out_channels 128, 256, 512, 512, two
//! layers per block, 32 groups) and seeded random weights generated here, at 256x256 and
//! 512x512 (latents 1x4x32x32 and 1x4x64x64), two runs each, with sd-vae and (f32 only) with
//! candle-transformers 0.11's stable_diffusion `AutoEncoderKL` built from the same generator.
//!
//! `cargo run --release -p sd-vae --example decode_bench [f32|f16|bf16] [sizes...] [--no-candle]`
//!
//! Measured on the shared 2-core development machine (f32, release), seconds per decode,
//! run 1 / run 2, with other helpers' builds and benches running (load average 2.3-3.5, so
//! these are upper bounds): 256x256: 32.8 / 26.7; 512x512: 124.4 / 107.3. Before the banded
//! im2col convolution (candle's conv kernel), at similar load: 35.3 / 34.3 and 179.9 / 150.4.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use sd_vae::{AutoencoderKl, AutoencoderKlConfig};

/// Seeded random weights for any name and shape: norm scales near 1, small biases, and
/// weights uniform in +-1/sqrt(fan_in) (torch's default conv / linear init range).
struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    fn values(&self, name: &str, shape: &Shape) -> Vec<f32> {
        // FNV-1a of the name, so every tensor gets its own reproducible stream.
        let mut state = name
            .bytes()
            .fold(0xcbf29ce484222325u64 ^ self.seed, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let dims = shape.dims();
        let n = shape.elem_count();
        if dims.len() == 1 {
            let is_norm_scale = name.ends_with("weight");
            return (0..n)
                .map(|_| {
                    if is_norm_scale {
                        1.0 + 0.1 * uniform()
                    } else {
                        0.02 * uniform()
                    }
                })
                .collect();
        }
        let bound = 1.0 / (n as f32 / dims[0] as f32).sqrt();
        (0..n).map(|_| bound * uniform()).collect()
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.values(name, &s), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn main() -> Result<()> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let with_candle = !all.iter().any(|a| a == "--no-candle");
    let args: Vec<String> = all.into_iter().filter(|a| a != "--no-candle").collect();
    let dtype = match args.first().map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(other) => bail!("unknown dtype {other} (f32, f16, bf16)"),
    };
    let sizes: Vec<usize> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![256, 512]
    };
    let config = AutoencoderKlConfig::default();
    let device = Device::Cpu;
    let started = Instant::now();
    let vb = VarBuilder::from_backend(Box::new(RandomWeights { seed: 42 }), dtype, device.clone());
    let vae = AutoencoderKl::new(&config, vb)?;
    println!(
        "built SD 1.5-shaped VAE ({dtype:?}) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // The peer, f32 only (its convolutions have no bf16 CPU kernel).
    let candle = if with_candle && dtype == DType::F32 {
        let vb =
            VarBuilder::from_backend(Box::new(RandomWeights { seed: 42 }), dtype, device.clone());
        let config = AutoEncoderKLConfig {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
        };
        Some(AutoEncoderKL::new(vb, 3, 3, config)?)
    } else {
        None
    };
    for size in sizes {
        if size % 8 != 0 {
            bail!("size {size} is not a multiple of 8");
        }
        let latents = Tensor::randn(0f32, 1f32, (1, 4, size / 8, size / 8), &device)?;
        for run in 1..=2 {
            let t = Instant::now();
            let out = vae.decode_with_status(&latents, None)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "decode {size}x{size} (latent 1x4x{0}x{0}) run {run}: {secs:.2} s{1}",
                size / 8,
                if out.upcast_to_f32 {
                    " (upcast to f32)"
                } else {
                    ""
                }
            );
        }
        if let Some(peer) = &candle {
            for run in 1..=2 {
                let t = Instant::now();
                let out = peer.decode(&latents)?;
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "candle-transformers decode {size}x{size} run {run}: {secs:.2} s ({:?})",
                    out.dims()
                );
            }
        }
    }
    Ok(())
}
