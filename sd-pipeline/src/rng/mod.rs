//! Random numbers identical to torch's CPU generator.
//!
//! diffusers makes every random tensor of a run (initial latents, ancestral and DDPM noise,
//! img2img noise) with `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`.
//! [`TorchRng`] reproduces those draws bit for bit, so a seed gives the image diffusers gives.
//!
//! What torch does, which this module follows (torch 2.15, checked against its numbers in
//! `fixtures/rng/`):
//! - the engine is mt19937 seeded with the seed's low 32 bits;
//! - a `float` uniform is `(next_u32 & (2^24 - 1)) * 2^-24`; a `double` one takes 53 bits of
//!   `(next_u32 << 32) | next_u32`;
//! - `randn` of 16 or more elements draws all its uniforms first, then turns each block of 16 into
//!   normals (Box–Muller on the pairs j, j + 8); when the count is not a multiple of 16, it draws 16
//!   more uniforms and redoes the last 16 elements with them;
//! - `float16` / `bfloat16` tensors of 16 or more elements draw `float` uniforms 16 at a time
//!   (so no uniform is drawn for the leftover elements before the redone tail), transform in
//!   `float`, then round;
//! - `randn` of fewer than 16 elements draws each element with `normal_distribution<double>`,
//!   which makes normals in pairs and keeps the second on the generator for the next such draw,
//!   across calls (a 16-element or larger draw neither uses nor clears it).

mod cephes;
mod mt19937;
mod normal;

pub use normal::NormalKernel;

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use mt19937::Mt19937;

/// torch switches from the scalar to the block Box–Muller at this many elements.
const BLOCK: usize = 16;

/// A random generator that reproduces `torch.Generator("cpu").manual_seed(seed)`.
///
/// Draws advance it exactly as torch's draws advance torch's generator, so a sequence of calls
/// (latents, then per-step noise) gives torch's sequence.
#[derive(Debug, Clone)]
pub struct TorchRng {
    seed: u64,
    engine: Mt19937,
    /// The second normal of the last scalar Box–Muller pair (torch's `next_double_normal_sample`).
    cached_normal: Option<f64>,
    kernel: NormalKernel,
}

impl TorchRng {
    /// A generator in the state of `torch.Generator("cpu").manual_seed(seed)`, using the Box–Muller
    /// kernel of torch on x86-64 ([`NormalKernel::Avx2`]).
    ///
    /// Python's negative seeds wrap: `manual_seed(-1)` is `new(u64::MAX)`.
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, NormalKernel::default())
    }

    /// Like [`TorchRng::new`], matching torch as it runs on a CPU whose kernel is `kernel`.
    pub fn with_kernel(seed: u64, kernel: NormalKernel) -> Self {
        Self {
            seed,
            engine: Mt19937::new(seed),
            cached_normal: None,
            kernel,
        }
    }

    /// One generator per seed: what diffusers is given as a list of generators, one per image.
    pub fn from_seeds(seeds: &[u64]) -> Vec<Self> {
        seeds.iter().map(|&s| Self::new(s)).collect()
    }

    /// The seed this generator was made with (torch's `initial_seed()`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The Box–Muller kernel this generator follows.
    pub fn kernel(&self) -> NormalKernel {
        self.kernel
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float32)`, flattened in row-major order.
    pub fn randn(&mut self, shape: &[usize]) -> Vec<f32> {
        let n = shape.iter().product();
        if n < BLOCK {
            return (0..n).map(|_| self.scalar_normal() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(BLOCK) {
            normal::fill_16_f32(block, self.kernel);
        }
        if n % BLOCK != 0 {
            let tail = &mut data[n - BLOCK..];
            tail.iter_mut().for_each(|v| *v = self.uniform_f32());
            normal::fill_16_f32(tail, self.kernel);
        }
        data
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float64)`, flattened.
    pub fn randn_f64(&mut self, shape: &[usize]) -> Vec<f64> {
        let n = shape.iter().product();
        if n < BLOCK {
            return (0..n).map(|_| self.scalar_normal()).collect();
        }
        let mut data: Vec<f64> = (0..n).map(|_| self.uniform_f64()).collect();
        for block in data.chunks_exact_mut(BLOCK) {
            normal::fill_16_f64(block);
        }
        if n % BLOCK != 0 {
            let tail = &mut data[n - BLOCK..];
            tail.iter_mut().for_each(|v| *v = self.uniform_f64());
            normal::fill_16_f64(tail);
        }
        data
    }

    /// The `float` values torch rounds to `float16` / `bfloat16` for `torch.randn(shape,
    /// dtype=torch.float16 or torch.bfloat16)`, flattened. Rounding them to nearest-even gives
    /// torch's tensor. The generator advances differently from [`TorchRng::randn`].
    pub fn randn_half_precision(&mut self, shape: &[usize]) -> Vec<f32> {
        let n = shape.iter().product();
        if n < BLOCK {
            // torch rounds double -> float -> half here, so the f32 step is part of the result.
            return (0..n).map(|_| self.scalar_normal() as f32).collect();
        }
        let mut data = vec![0f32; n];
        let mut buf = [0f32; BLOCK];
        let mut fill = |rng: &mut Self, out: &mut [f32]| {
            buf.iter_mut().for_each(|v| *v = rng.uniform_f32());
            normal::fill_16_f32(&mut buf, rng.kernel);
            out.copy_from_slice(&buf);
        };
        for block in data.chunks_exact_mut(BLOCK) {
            fill(self, block);
        }
        if n % BLOCK != 0 {
            fill(self, &mut data[n - BLOCK..]);
        }
        data
    }

    /// `torch.rand(shape, generator=g, dtype=torch.float32)`: uniforms in [0, 1), flattened.
    pub fn rand(&mut self, shape: &[usize]) -> Vec<f32> {
        (0..shape.iter().product())
            .map(|_| self.uniform_f32())
            .collect()
    }

    /// `torch.randn(shape, generator=g, dtype=dtype)` as a tensor on `device`.
    ///
    /// The numbers are made on the CPU (as diffusers does with a CPU generator) and then moved.
    /// `dtype` is one of f32, f16, bf16, f64; each advances the generator as torch does for it.
    pub fn randn_tensor(
        &mut self,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let t = match dtype {
            DType::F32 => Tensor::from_vec(self.randn(shape), shape, &Device::Cpu)?,
            DType::F64 => Tensor::from_vec(self.randn_f64(shape), shape, &Device::Cpu)?,
            // candle's f32 -> f16 / bf16 conversion rounds to nearest-even, like torch's cast.
            DType::F16 | DType::BF16 => {
                Tensor::from_vec(self.randn_half_precision(shape), shape, &Device::Cpu)?
                    .to_dtype(dtype)?
            }
            other => return Err(Error::UnsupportedDType(other)),
        };
        Ok(t.to_device(device)?)
    }

    /// `torch.rand(shape, generator=g, dtype=dtype)` as a tensor on `device`.
    pub fn rand_tensor(
        &mut self,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let t = match dtype {
            DType::F32 => Tensor::from_vec(self.rand(shape), shape, &Device::Cpu)?,
            DType::F64 => {
                let v: Vec<f64> = (0..n).map(|_| self.uniform_f64()).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            DType::F16 | DType::BF16 => {
                let v = Tensor::from_vec(self.rand(shape), shape, &Device::Cpu)?.to_dtype(dtype)?;
                // A float just below 1 can round up to 1; torch maps that back to 0 to stay in [0, 1).
                let one = v.ones_like()?;
                v.eq(&one)?.where_cond(&v.zeros_like()?, &v)?
            }
            other => return Err(Error::UnsupportedDType(other)),
        };
        Ok(t.to_device(device)?)
    }

    /// A 24-bit `float` uniform in [0, 1) (torch's `uniform_real_distribution<float>`).
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A 53-bit `double` uniform in [0, 1) (torch's `uniform_real_distribution<double>`).
    fn uniform_f64(&mut self) -> f64 {
        (self.engine.next_u64() & ((1 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One draw of torch's `normal_distribution<double>`, using and refilling the cached normal.
    fn scalar_normal(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v + 0.0;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let (now, later) = normal::pair_f64(u1, u2);
        self.cached_normal = Some(later);
        now + 0.0
    }
}

/// `randn_tensor(shape, generator=[g0, g1, ...])` of diffusers: image `i` of the batch is drawn
/// from `rngs[i]` as a `[1, shape[1..]]` tensor, and the images are concatenated.
///
/// diffusers requires one generator per image; so does this function (a typed error otherwise).
pub fn randn_per_sample(
    rngs: &mut [TorchRng],
    shape: &[usize],
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let batch = shape.first().copied().unwrap_or(1);
    if rngs.len() != batch {
        return Err(Error::BatchMismatch {
            what: "generators for a batch of images",
            expected: batch,
            got: rngs.len(),
        });
    }
    let mut one = shape.to_vec();
    match one.first_mut() {
        Some(b) => *b = 1,
        None => return rngs[0].randn_tensor(shape, device, dtype),
    }
    let parts = rngs
        .iter_mut()
        .map(|rng| rng.randn_tensor(&one, device, dtype))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}
