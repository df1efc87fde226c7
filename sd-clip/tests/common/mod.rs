//! Shared by the integration tests: fixture paths and the relative L2 error.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use sd_clip::{ClipTextConfig, ClipTextModel};

/// `fixtures/clip/<config>/`, made by `tools/fixtures/clip.py` (transformers 5.23, torch 2.15).
pub fn fixture_dir(config: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/clip")
        .join(config)
}

pub fn config(name: &str) -> ClipTextConfig {
    ClipTextConfig::from_file(fixture_dir(name).join("config.json")).expect("fixture config")
}

pub fn model(name: &str, dtype: DType) -> ClipTextModel {
    let weights = fixture_dir(name).join("model.safetensors");
    ClipTextModel::from_safetensors(&config(name), &[weights], dtype, &Device::Cpu)
        .expect("fixture model")
}

/// Inputs and reference outputs of one config.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture_dir(name).join("reference.safetensors"),
        &Device::Cpu,
    )
    .expect("fixture reference")
}

/// |a - b|_2 / |b|_2, computed in f64.
pub fn rel_l2(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let a = actual.to_dtype(DType::F64).unwrap();
    let b = expected.to_dtype(DType::F64).unwrap();
    let diff = (a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = b.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f64>().unwrap() / norm.to_scalar::<f64>().unwrap()).sqrt()
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sd-clip-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
