//! What the end-to-end tests share: fixture paths and the 8-bit image comparison.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sd_pipeline::image_crate::RgbImage;

/// A file or model folder under `fixtures/pipeline/` (tools/fixtures/pipeline.py, merge.py).
pub fn pipeline_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/pipeline")
        .join(name)
}

/// A file under `fixtures/checkpoint/` (tools/fixtures/checkpoint.py).
pub fn checkpoint_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/checkpoint")
        .join(name)
}

/// The largest per-channel difference between two images of one size, in 8-bit levels.
pub fn max_difference(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// A file under `fixtures/lora/` (tools/fixtures/lora.py).
pub fn lora_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/lora")
        .join(name)
}

/// The request of a `fixtures/lora/cases.json` case: its prompts, 10 PNDM steps, scale 7.5,
/// seed 42, 64x64.
pub fn lora_case_request(case: &serde_json::Value) -> sd_pipeline::GenerateRequest {
    sd_pipeline::GenerateRequest {
        prompt: case["prompt"].as_str().unwrap_or_default().into(),
        negative_prompt: case["negative_prompt"].as_str().unwrap_or_default().into(),
        steps: 10,
        guidance_scale: 7.5,
        width: Some(64),
        height: Some(64),
        seed: 42,
        scheduler: Some("pndm".parse().unwrap()),
        ..sd_pipeline::GenerateRequest::default()
    }
}
