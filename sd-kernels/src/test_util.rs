//! Helpers shared by the kernels' unit tests.

use candle_core::{Device, Tensor};

use crate::cpu::Isa;

/// A deterministic tensor with values in [-1, 2) (xorshift; no dependency on candle's RNG).
pub(crate) fn rand(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            3.0 * ((s >> 40) as f32 / (1u64 << 24) as f32) - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("shape matches")
}

/// Relative L2 distance |a - b| / |b|.
pub(crate) fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let sq = |t: Tensor| {
        t.sqr()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>())
    };
    let d = sq((a - b).expect("same shape")).expect("f32");
    let n = sq(b.clone()).expect("f32");
    (d / n).sqrt()
}

/// The largest |a - b| over all elements.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("same shape, f32")
}

/// Every instruction-set tier this CPU can run, lowest first (for `cpu::with_isa`).
pub(crate) fn tiers() -> Vec<Isa> {
    [
        Isa::Generic,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ]
    .into_iter()
    .filter(|&t| t <= Isa::supported())
    .collect()
}
