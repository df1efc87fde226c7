//! End to end against diffusers: every case of `fixtures/pipeline/cases.json` (made by
//! `tools/fixtures/pipeline.py` with diffusers 0.42.1 on tiny random-weight pipelines, seeded
//! `torch.Generator("cpu").manual_seed(42)`) is generated here from its model folder and seed
//! alone, and each 8-bit image must be within 2 levels of diffusers' at every pixel.

mod common;

use std::collections::HashMap;

use anyhow::{Context, Result};
use common::{max_difference, pipeline_fixture};
use sd_pipeline::image_crate;
use sd_pipeline::{Emphasis, GenerateRequest, GuidanceRule, ImageInput, StableDiffusion};
use serde_json::Value;

/// diffusers' own float64 vs float32 runs of these pipelines differ by 1 level: 2 is honest.
const MAX_LEVELS: u8 = 2;

fn request(case: &Value) -> Result<GenerateRequest> {
    let str_of = |k: &str| case[k].as_str().map(str::to_string);
    let dir = pipeline_fixture("");
    let init = match str_of("init_image") {
        Some(file) => {
            let image = image_crate::open(dir.join(file))?.to_rgb8();
            let mask = match str_of("mask") {
                Some(m) => Some(image_crate::open(dir.join(m))?.to_luma8()),
                None => None,
            };
            let mut input = ImageInput::new(image, mask);
            input.strength = case["strength"].as_f64().context("strength")?;
            Some(input)
        }
        None => None,
    };
    Ok(GenerateRequest {
        prompt: str_of("prompt").context("prompt")?,
        negative_prompt: str_of("negative_prompt").unwrap_or_default(),
        steps: case["steps"].as_u64().context("steps")? as usize,
        guidance_scale: case["guidance_scale"].as_f64().context("scale")?,
        guidance: if case["true_cfg"].as_bool() == Some(true) {
            GuidanceRule::TrueCfg
        } else {
            GuidanceRule::Diffusers
        },
        width: case["width"].as_u64().map(|w| w as usize),
        height: case["height"].as_u64().map(|h| h as usize),
        batch_size: case["batch_size"].as_u64().unwrap_or(1) as usize,
        seed: case["seed"].as_u64().context("seed")?,
        clip_skip: case["clip_skip"].as_u64().unwrap_or(1) as usize,
        emphasis: Emphasis::A1111,
        scheduler: Some(str_of("scheduler").context("scheduler")?.parse()?),
        karras: None,
        init,
        start_noise: None,
        conditioning: None,
    })
}

#[test]
fn every_case_matches_diffusers_within_two_levels() -> Result<()> {
    let dir = pipeline_fixture("");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let cases = cases["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 24, "{} cases", cases.len());
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().context("name")?;
        let model = case["model"].as_str().context("model")?;
        if !models.contains_key(model) {
            let sd = StableDiffusion::builder(dir.join(model)).build()?;
            models.insert(model.to_string(), sd);
        }
        let generated = models[model]
            .generate_simple(&request(case)?)
            .with_context(|| name.to_string())?;
        let expected = case["images"].as_array().context("images")?;
        assert_eq!(generated.images.len(), expected.len(), "{name}");
        for (image, file) in generated.images.iter().zip(expected) {
            let file = file.as_str().context("image name")?;
            let reference = image_crate::open(dir.join(file))?.to_rgb8();
            let diff = max_difference(image, &reference);
            report.push(format!("{file}: max {diff}"));
            if diff > MAX_LEVELS {
                failures.push(format!("{file}: {diff} levels"));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "beyond {MAX_LEVELS} levels: {failures:?}"
    );
    Ok(())
}
