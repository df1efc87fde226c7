//! The facade's behaviour beyond the diffusers cases: single files and mixed models against
//! diffusers images, low-memory mode, the step callback and cancellation, emphasis modes,
//! sliced attention, and errors that name the request field at fault.

mod common;

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use common::{checkpoint_fixture, max_difference, pipeline_fixture};
use sd_pipeline::checkpoint::{merge, ConfigOverride, LoadOptions, ModelWeights};
use sd_pipeline::image_crate::{self, GrayImage, RgbImage};
use sd_pipeline::sd_tokenize::ClipTokenizer;
use sd_pipeline::{
    AttentionMode, Emphasis, Error, GenerateRequest, ImageInput, StableDiffusion, StepProgress,
};
use serde_json::Value;

/// The base case of `cases.json` (tools/fixtures/pipeline.py) with another sampler.
fn base_request(scheduler: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: "a photo of a cat".into(),
        negative_prompt: "blurry".into(),
        steps: 10,
        guidance_scale: 7.5,
        width: Some(64),
        height: Some(64),
        seed: 42,
        scheduler: Some(scheduler.parse().unwrap()),
        ..GenerateRequest::default()
    }
}

fn reference(name: &str) -> Result<RgbImage> {
    Ok(image_crate::open(pipeline_fixture(name))?.to_rgb8())
}

fn tiny_sd1() -> Result<StableDiffusion> {
    Ok(StableDiffusion::builder(pipeline_fixture("tiny-sd1")).build()?)
}

fn one_image(sd: &StableDiffusion, request: &GenerateRequest) -> Result<RgbImage> {
    let mut generated = sd.generate_simple(request)?;
    Ok(generated.images.remove(0))
}

#[test]
fn single_files_give_the_folders_images() -> Result<()> {
    // The LDM files hold the same weights as the folders (checkpoint.py proves it with diffusers'
    // converters); the folders' configs give the tiny shapes that keys cannot tell.
    for (file, folder, scheduler, expected) in [
        (
            "tiny-sd1.safetensors",
            "tiny-sd1",
            "pndm",
            "txt2img-pndm-0.png",
        ),
        ("tiny-sd2.ckpt", "tiny-sd2", "ddim", "sd2-ddim-0.png"),
    ] {
        let options = LoadOptions {
            config_override: ConfigOverride::from_diffusers_folder(pipeline_fixture(folder))?,
            ..LoadOptions::default()
        };
        let sd = StableDiffusion::builder(checkpoint_fixture(file))
            .load_options(options)
            .build()?;
        let image = one_image(&sd, &base_request(scheduler))?;
        let diff = max_difference(&image, &reference(expected)?);
        assert!(
            diff <= 2,
            "{file}: {diff} levels from diffusers' {expected}"
        );
    }
    Ok(())
}

#[test]
fn mixed_unets_match_diffusers_on_weights_blended_in_torch() -> Result<()> {
    // merge.py blends tiny-sd1's UNet toward unet-b.safetensors in torch and runs diffusers.
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(pipeline_fixture("merge.json"))?)?;
    let a = ModelWeights::from_diffusers_folder(pipeline_fixture("tiny-sd1"))?;
    let mut b = a.clone();
    b.unet = candle_core::safetensors::load(
        checkpoint_fixture("unet-b.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    let tokenizer = ClipTokenizer::for_model_dir(&pipeline_fixture("tiny-sd1/tokenizer"))?;
    for case in meta["cases"].as_array().context("cases")? {
        let scale = case["scale"].as_f64().context("scale")?;
        let mixed = merge::weighted_sum(&a, &b, scale, merge::Components::UnetOnly)?;
        let sd = StableDiffusion::builder_from_weights(mixed, tokenizer.clone(), "mix").build()?;
        let image = one_image(&sd, &base_request("pndm"))?;
        let expected = case["images"][0].as_str().context("image")?;
        let diff = max_difference(&image, &reference(expected)?);
        assert!(diff <= 2, "scale {scale}: {diff} levels");
        // And the blend matters: model A alone is far from it.
        let plain = max_difference(&reference("txt2img-pndm-0.png")?, &image);
        assert!(
            plain > 10,
            "scale {scale}: only {plain} levels from the unmixed image"
        );
    }
    Ok(())
}

#[test]
fn the_seed_decides_the_image() -> Result<()> {
    let sd = tiny_sd1()?;
    let other_seed = GenerateRequest {
        seed: 43,
        ..base_request("ddim")
    };
    let diff = max_difference(
        &one_image(&sd, &other_seed)?,
        &reference("txt2img-ddim-0.png")?,
    );
    assert!(diff > 10, "seed 43 is only {diff} levels from seed 42");
    Ok(())
}

#[test]
fn low_memory_mode_gives_the_same_pixels() -> Result<()> {
    let low = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .low_memory(true)
        .build()?;
    let request = base_request("euler-ancestral");
    let resident = one_image(&tiny_sd1()?, &request)?;
    assert_eq!(one_image(&low, &request)?, resident);
    // A single file, re-read network by network, with a mix (of itself: a no-op blend).
    let options = LoadOptions {
        config_override: ConfigOverride::from_diffusers_folder(pipeline_fixture("tiny-sd1"))?,
        ..LoadOptions::default()
    };
    let low_file = StableDiffusion::builder(checkpoint_fixture("tiny-sd1.safetensors"))
        .load_options(options)
        .mix(pipeline_fixture("tiny-sd1"), 0.5)
        .low_memory(true)
        .build()?;
    assert!(max_difference(&one_image(&low_file, &request)?, &resident) <= 1);
    Ok(())
}

#[test]
fn one_network_at_a_time_reads_only_its_tensors() -> Result<()> {
    use sd_pipeline::checkpoint::Component;
    let all_components = [Component::Unet, Component::Vae, Component::TextEncoder];
    for path in [
        pipeline_fixture("tiny-sd1"),
        checkpoint_fixture("tiny-sd1.safetensors"),
    ] {
        let all = ModelWeights::open(&path, &LoadOptions::default())?;
        for component in all_components {
            let only = LoadOptions {
                only: Some(component),
                ..LoadOptions::default()
            };
            let weights = ModelWeights::open(&path, &only)?;
            for other in all_components {
                let n = weights.component(other).len();
                if other == component {
                    assert_eq!(n, all.component(other).len(), "{path:?} {other:?}");
                    assert!(n > 0);
                } else {
                    assert_eq!(n, 0, "{path:?}: {other:?} read with only {component:?}");
                }
            }
            assert_eq!(weights.unet_config.in_channels, all.unet_config.in_channels);
        }
    }
    Ok(())
}

#[test]
fn sliced_attention_matches_full_attention() -> Result<()> {
    let sliced = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .attention(AttentionMode::Sliced {
            batch_heads: 3,
            query: 5,
        })
        .build()?;
    let image = one_image(&sliced, &base_request("ddim"))?;
    let diff = max_difference(&image, &reference("txt2img-ddim-0.png")?);
    assert!(diff <= 2, "{diff}");
    Ok(())
}

#[test]
fn the_callback_sees_every_model_call_and_can_cancel() -> Result<()> {
    let sd = tiny_sd1()?;
    // PNDM (PLMS) makes N + 1 model calls.
    let mut seen = Vec::new();
    sd.generate(&base_request("pndm"), &mut |p: &StepProgress| {
        seen.push((p.step, p.total, p.timestep, p.latents.dims().to_vec()));
        ControlFlow::Continue(())
    })?;
    assert_eq!(seen.len(), 11);
    assert!(seen.iter().all(|s| s.1 == 11 && s.3 == [1, 4, 8, 8]));
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    // SD 1.5's PLMS timesteps for 10 steps start 901, 801, 801, 701.
    assert_eq!(
        seen.iter().take(4).map(|s| s.2).collect::<Vec<_>>(),
        [901.0, 801.0, 801.0, 701.0]
    );

    let result = sd.generate(&base_request("ddim"), &mut |p: &StepProgress| {
        if p.step == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(
        matches!(result, Err(Error::Cancelled { step: 3 })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn img2img_callbacks_count_only_the_steps_run() -> Result<()> {
    let sd = tiny_sd1()?;
    let init = reference("init.png")?;
    let request = GenerateRequest {
        init: Some(ImageInput {
            image: init,
            mask: None,
            strength: 0.6,
        }),
        ..base_request("ddim")
    };
    let generated = sd.generate_simple(&request)?;
    assert_eq!(generated.timings.model_calls, 6);
    assert_eq!(generated.infotexts[0].strength, Some(0.6));
    Ok(())
}

#[test]
fn emphasis_modes() -> Result<()> {
    let sd = tiny_sd1()?;
    let plain = base_request("ddim");
    let attention = |prompt: &str| GenerateRequest {
        prompt: prompt.into(),
        emphasis: Emphasis::Attention,
        ..plain.clone()
    };
    // No emphasis in the prompt: both modes give diffusers' image.
    assert_eq!(
        one_image(&sd, &attention("a photo of a cat"))?,
        one_image(&sd, &plain)?
    );
    // Weighted: the two modes weigh differently, and each differs from the plain prompt.
    let a1111 = GenerateRequest {
        prompt: "a photo of a (cat:3)".into(),
        ..plain.clone()
    };
    let by_attention = one_image(&sd, &attention("a photo of a (cat:3)"))?;
    let by_a1111 = one_image(&sd, &a1111)?;
    let unweighted = one_image(&sd, &plain)?;
    assert!(max_difference(&by_attention, &unweighted) > 2);
    assert!(max_difference(&by_a1111, &unweighted) > 2);
    assert!(max_difference(&by_attention, &by_a1111) > 2);
    Ok(())
}

#[test]
fn requests_out_of_range_name_the_field() -> Result<()> {
    let sd = tiny_sd1()?;
    let field = |request: GenerateRequest| match sd.generate_simple(&request) {
        Err(Error::InvalidRequest { field, .. }) => field,
        other => panic!("{:?}", other.map(|g| g.images.len())),
    };
    assert_eq!(
        field(GenerateRequest {
            width: Some(60),
            ..base_request("ddim")
        }),
        "width"
    );
    let too_weak = GenerateRequest {
        init: Some(ImageInput {
            image: RgbImage::new(64, 64),
            mask: None,
            strength: 0.05,
        }),
        ..base_request("ddim")
    };
    assert_eq!(field(too_weak), "strength");

    // An inpainting model needs a mask.
    let inpaint = StableDiffusion::builder(pipeline_fixture("tiny-sd1-inpaint")).build()?;
    match inpaint.generate_simple(&base_request("ddim")) {
        Err(Error::InvalidRequest { field, .. }) => assert_eq!(field, "mask"),
        other => panic!("{:?}", other.map(|g| g.images.len())),
    }
    let masked = GenerateRequest {
        init: Some(ImageInput::new(
            RgbImage::new(64, 64),
            Some(GrayImage::new(64, 64)),
        )),
        ..base_request("ddim")
    };
    assert_eq!(inpaint.generate_simple(&masked)?.images.len(), 1);

    // Clip skip past the text encoder's 3 layers is the text encoder's error.
    let err = sd
        .generate_simple(&GenerateRequest {
            clip_skip: 4,
            ..base_request("ddim")
        })
        .map(|g| g.images.len())
        .unwrap_err();
    assert!(err.to_string().starts_with("text_encoder:"), "{err}");
    Ok(())
}

#[test]
fn missing_models_name_the_path() {
    let err = StableDiffusion::builder(pipeline_fixture("no-such-model"))
        .build()
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("no-such-model"), "{err}");
}

/// A copy of the tiny SD 1 folder under the target directory, its UNet weights rewritten by
/// `edit` (the file's bytes).
fn tiny_sd1_with_unet(
    name: &str,
    edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Result<std::path::PathBuf> {
    let src = pipeline_fixture("tiny-sd1");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["", "scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        std::fs::create_dir_all(dir.join(sub))?;
        for entry in std::fs::read_dir(src.join(sub))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name()))?;
            }
        }
    }
    let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
    std::fs::write(&unet, edit(std::fs::read(&unet)?))?;
    Ok(dir)
}

#[test]
fn folder_networks_read_tensor_by_tensor_still_name_what_is_wrong() -> Result<()> {
    // Truncated: the header no longer matches the file's length.
    let dir = tiny_sd1_with_unet("cut-unet", |mut b| {
        b.truncate(b.len() - 100);
        b
    })?;
    let err = StableDiffusion::builder(dir.as_path())
        .build()
        .map(|_| ())
        .unwrap_err();
    let file = dir.join("unet/diffusion_pytorch_model.safetensors");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    // One tensor left out: the network says which.
    let missing = "conv_in.weight";
    let dir = tiny_sd1_with_unet("unet-without-conv-in", |b| {
        let st = safetensors::SafeTensors::deserialize(&b).unwrap();
        let kept: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != missing)
            .collect();
        safetensors::serialize(kept, None).unwrap()
    })?;
    let err = StableDiffusion::builder(dir.as_path())
        .build()
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains(missing), "{err}");
    assert!(err.to_string().starts_with("unet"), "{err}");
    Ok(())
}
