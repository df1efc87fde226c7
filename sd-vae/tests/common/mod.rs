//! Helpers shared by the integration tests: fixture paths and the error measure.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use sd_vae::{AutoencoderKl, AutoencoderKlConfig};

/// `fixtures/vae/` at the repository root (made by `tools/fixtures/vae.py`).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vae")
}

/// The weights file of a fixture model (`sd1` or `deep`).
pub fn weights(model: &str) -> PathBuf {
    fixture_dir()
        .join(model)
        .join("diffusion_pytorch_model.safetensors")
}

/// The config of a fixture model.
pub fn config(model: &str) -> AutoencoderKlConfig {
    AutoencoderKlConfig::from_file(fixture_dir().join(model).join("config.json")).unwrap()
}

/// A fixture model loaded in `dtype` on the CPU.
pub fn load(model: &str, dtype: DType) -> AutoencoderKl {
    AutoencoderKl::from_safetensors(&config(model), &[weights(model)], dtype, &Device::Cpu).unwrap()
}

/// A safetensors file of fixture tensors, relative to `fixtures/vae/`.
pub fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join(file), &Device::Cpu).unwrap()
}

/// ||a - b||_2 / ||b||_2, computed in f32 (the measure DESIGN.md fixes tolerances in).
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = b.sqr().unwrap().sum_all().unwrap();
    let (d, n) = (
        diff.to_scalar::<f32>().unwrap(),
        norm.to_scalar::<f32>().unwrap(),
    );
    assert!(n > 0.0, "reference is all zeros");
    (d / n).sqrt()
}

/// Asserts `rel_l2(actual, expected) <= bound` and prints the error so that runs record it.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, bound: f32) {
    let err = rel_l2(actual, expected);
    println!("{what}: relative L2 error {err:.3e} (bound {bound:.0e})");
    assert!(
        err.is_finite() && err <= bound,
        "{what}: relative L2 error {err:e} > {bound:e}"
    );
}
