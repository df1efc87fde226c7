//! Helpers shared by the pipeline's unit tests.

use candle_core::{DType, Device, Tensor};

use crate::rng::TorchRng;

/// Standard-normal values from torch's generator seeded with `seed`.
pub(crate) fn seeded(shape: &[usize], seed: u64) -> Tensor {
    TorchRng::new(seed)
        .randn_tensor(shape, &Device::Cpu, DType::F32)
        .expect("a CPU tensor")
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
