//! What the end-to-end tests share: fixture paths and the 8-bit image comparison.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::Context as _;
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

/// The request of a `fixtures/pipeline/cases.json`-style case (also `fixtures/vae/taesd/`):
/// prompts, steps, scale, guidance rule, size, batch, seed, clip skip, scheduler, init image.
pub fn case_request(case: &serde_json::Value) -> anyhow::Result<sd_pipeline::GenerateRequest> {
    let str_of = |k: &str| case[k].as_str().map(str::to_string);
    let dir = pipeline_fixture("");
    let init = match str_of("init_image") {
        Some(file) => {
            let image = sd_pipeline::image_crate::open(dir.join(file))?.to_rgb8();
            let mask = match str_of("mask") {
                Some(m) => Some(sd_pipeline::image_crate::open(dir.join(m))?.to_luma8()),
                None => None,
            };
            let mut input = sd_pipeline::ImageInput::new(image, mask);
            input.strength = case["strength"].as_f64().context("strength")?;
            Some(input)
        }
        None => None,
    };
    Ok(sd_pipeline::GenerateRequest {
        prompt: str_of("prompt").context("prompt")?,
        negative_prompt: str_of("negative_prompt").unwrap_or_default(),
        steps: case["steps"].as_u64().context("steps")? as usize,
        guidance_scale: case["guidance_scale"].as_f64().context("scale")?,
        guidance: if case["true_cfg"].as_bool() == Some(true) {
            sd_pipeline::GuidanceRule::TrueCfg
        } else {
            sd_pipeline::GuidanceRule::Diffusers
        },
        width: case["width"].as_u64().map(|w| w as usize),
        height: case["height"].as_u64().map(|h| h as usize),
        batch_size: case["batch_size"].as_u64().unwrap_or(1) as usize,
        seed: case["seed"].as_u64().context("seed")?,
        clip_skip: case["clip_skip"].as_u64().unwrap_or(1) as usize,
        emphasis: sd_pipeline::Emphasis::A1111,
        scheduler: Some(str_of("scheduler").context("scheduler")?.parse()?),
        karras: None,
        init,
        start_noise: None,
        conditioning: None,
        decoder: sd_pipeline::LatentDecoder::Vae,
    })
}
