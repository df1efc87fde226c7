//! LoRA / LyCORIS files merged at load against the images diffusers makes with them
//! (tools/fixtures/lora.py: kohya and PEFT through `load_lora_weights` + `set_adapters`, LoHa,
//! LoKr and `lora_mid` merged in torch by A1111's formulas), on tiny-sd1.

mod common;

use anyhow::{Context, Result};
use common::{lora_case_request, lora_fixture, max_difference, pipeline_fixture};
use sd_pipeline::checkpoint::Multipliers;
use sd_pipeline::image_crate::{self, RgbImage};
use sd_pipeline::{Error, GenerateRequest, StableDiffusion};
use serde_json::Value;

fn image(sd: &StableDiffusion, request: &GenerateRequest) -> Result<RgbImage> {
    Ok(sd.generate_simple(request)?.images.remove(0))
}

fn with_loras(loras: &[(&str, Multipliers)]) -> Result<StableDiffusion> {
    let mut builder = StableDiffusion::builder(pipeline_fixture("tiny-sd1"));
    for (file, m) in loras {
        builder = builder.lora(lora_fixture(file), *m);
    }
    Ok(builder.build()?)
}

#[test]
fn every_format_matches_diffusers() -> Result<()> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(lora_fixture("cases.json"))?)?;
    let mut checked = 0;
    for case in meta["cases"].as_array().context("cases")? {
        let networks = case["networks"].as_array().context("networks")?;
        if networks.is_empty() {
            continue; // textual inversion: tests/textual_inversion.rs
        }
        let loras: Vec<(&str, Multipliers)> = networks
            .iter()
            .map(|n| {
                let m = Multipliers {
                    text_encoder: n["te"].as_f64().unwrap(),
                    unet: n["unet"].as_f64().unwrap(),
                };
                (n["file"].as_str().unwrap(), m)
            })
            .collect();
        let sd = with_loras(&loras)?;
        assert!(sd.lora_unmatched().is_empty(), "{:?}", sd.lora_unmatched());
        let expected =
            image_crate::open(lora_fixture(case["image"].as_str().context("image")?))?.to_rgb8();
        let name = case["name"].as_str().unwrap_or_default();
        let diff = max_difference(&image(&sd, &lora_case_request(case))?, &expected);
        println!("{name}: {diff} levels from diffusers");
        assert!(diff <= 2, "{name}: {diff} levels from diffusers");
        checked += 1;
    }
    assert_eq!(checked, 8);
    Ok(())
}

#[test]
fn multiplier_zero_gives_the_plain_image_and_tags_must_match() -> Result<()> {
    let base = GenerateRequest {
        prompt: "a photo of a cat".into(),
        negative_prompt: "blurry".into(),
        ..lora_case_request(&Value::Null)
    };
    let plain = image(
        &StableDiffusion::builder(pipeline_fixture("tiny-sd1")).build()?,
        &base,
    )?;
    let zero = with_loras(&[("kohya.safetensors", Multipliers::both(0.0))])?;
    let tagged = GenerateRequest {
        prompt: "a photo of <lora:kohya:0> a cat".into(),
        ..base.clone()
    };
    assert_eq!(image(&zero, &base)?, plain);
    // The tag is cut out: "a photo of  a cat" tokenizes as "a photo of a cat".
    assert_eq!(image(&zero, &tagged)?, plain);
    let other = GenerateRequest {
        prompt: "a photo of <lora:kohya:0.5> a cat".into(),
        ..base
    };
    match zero.generate_simple(&other) {
        Err(Error::InvalidRequest { field, message }) => {
            assert_eq!(field, "prompt");
            assert!(message.contains("kohya (te 0, unet 0)"), "{message}");
        }
        other => panic!("expected a prompt error, got {:?}", other.map(|_| ())),
    }
    Ok(())
}
