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

#[test]
fn ldm_named_unet_modules_give_the_same_image() -> Result<()> {
    use sd_pipeline::candle_core::{safetensors, Device};
    use sd_pipeline::checkpoint::ldm_names::{ToLdm, UNET_PREFIX};
    use sd_pipeline::checkpoint::{Component, ModelWeights};
    // The diffusers → LDM spelling of every UNet layer of tiny-sd1, both with '_' for '.'.
    let weights = ModelWeights::open(pipeline_fixture("tiny-sd1"), &Default::default())?;
    let table = weights.name_table();
    let mut to_ldm = std::collections::HashMap::new();
    for name in weights.unet.keys() {
        let Some(layer) = name.strip_suffix(".weight") else {
            continue;
        };
        if let Some(ToLdm::Rename(ldm)) = table.to_ldm(Component::Unet, name) {
            let ldm = ldm
                .trim_start_matches(UNET_PREFIX)
                .trim_end_matches(".weight");
            to_ldm.insert(layer.replace('.', "_"), ldm.replace('.', "_"));
        }
    }
    // kohya.safetensors with its UNet keys renamed to LDM terms.
    let tensors = safetensors::load(lora_fixture("kohya.safetensors"), &Device::Cpu)?;
    let mut renamed = std::collections::HashMap::new();
    let mut changed = 0;
    for (key, tensor) in tensors {
        let new_key = match key.strip_prefix("lora_unet_") {
            Some(rest) => {
                let (layer, suffix) = rest.split_once('.').context("a kohya key")?;
                let ldm = to_ldm
                    .get(layer)
                    .with_context(|| format!("{layer}: no LDM name"))?;
                changed += usize::from(ldm != layer);
                format!("lora_unet_{ldm}.{suffix}")
            }
            None => key,
        };
        renamed.insert(new_key, tensor);
    }
    assert!(changed > 20, "only {changed} keys renamed");
    let dir = std::env::temp_dir().join(format!("sd-lora-ldm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kohya-ldm.safetensors");
    safetensors::save(&renamed, &path)?;

    let request = lora_case_request(&Value::Null);
    let plain_names = with_loras(&[("kohya.safetensors", Multipliers::both(1.0))])?;
    let ldm_names = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .lora(&path, Multipliers::both(1.0))
        .lora_strict(true)
        .build()?;
    assert!(
        ldm_names.lora_unmatched().is_empty(),
        "{:?}",
        ldm_names.lora_unmatched()
    );
    assert_eq!(
        image(&ldm_names, &request)?,
        image(&plain_names, &request)?,
        "LDM names and diffusers names of one LoRA give one image"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn side_branches_give_the_merged_images_request_by_request() -> Result<()> {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .lora(lora_fixture("kohya.safetensors"), Multipliers::both(1.0))
        .lora(lora_fixture("peft.safetensors"), Multipliers::both(1.0))
        .lora(lora_fixture("loha.safetensors"), Multipliers::both(1.0))
        .lora_side_branches(true)
        .lora_strict(true)
        .build()?;
    let base = lora_case_request(&Value::Null);
    let with_prompt = |prompt: &str| GenerateRequest {
        prompt: format!("a photo of a cat {prompt}"),
        negative_prompt: "blurry".into(),
        ..base.clone()
    };
    let plain = image(&with_loras(&[])?, &with_prompt(""))?;
    assert_eq!(
        image(&sd, &with_prompt(""))?,
        plain,
        "no tag: the plain model"
    );

    let cases = [
        ("<lora:kohya:0.5:0.8>", "kohya-te0.5-unet0.8.png"),
        ("<lora:kohya:0.5> <lora:peft:0.5>", "kohya0.5-peft0.5.png"),
        ("<lora:loha>", "loha.png"),
        ("<lora:kohya:1>", "kohya.png"),
    ];
    for (tags, reference) in cases {
        let expected = image_crate::open(lora_fixture(reference))?.to_rgb8();
        let ours = image(&sd, &with_prompt(tags))?;
        let diff = max_difference(&ours, &expected);
        println!("side branches {tags}: {diff} levels from diffusers");
        assert!(diff <= 2, "{tags}: {diff} levels from diffusers");
    }
    // Merged at load, the same LoRA gives the same image within rounding.
    let merged = with_loras(&[("kohya.safetensors", Multipliers::both(1.0))])?;
    let diff = max_difference(
        &image(&sd, &with_prompt("<lora:kohya:1>"))?,
        &image(&merged, &with_prompt("<lora:kohya:1>"))?,
    );
    assert!(diff <= 1, "side branches {diff} levels from merged");
    // And back to the plain model, exactly.
    assert_eq!(image(&sd, &with_prompt(""))?, plain);

    let err = sd
        .generate_simple(&with_prompt("<lora:nosuch:1>"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest { field, message } if *field == "prompt" && message.contains("nosuch")),
        "{err}"
    );
    Ok(())
}
