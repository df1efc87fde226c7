//! TAESD as the pipeline's decoder: the image diffusers' StableDiffusionPipeline makes with
//! `vae=AutoencoderTiny` on tiny-sd1 (tools/fixtures/taesd.py), and previews through it.

mod common;

use std::path::{Path, PathBuf};

use sd_pipeline::image_crate;
use sd_pipeline::{Error, GenerateRequest, LatentDecoder, StableDiffusion};

use common::{case_request, max_difference, pipeline_fixture};

fn taesd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vae/taesd")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(taesd_dir().join("cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["cases"].as_array().unwrap().clone()
}

fn request(case: &serde_json::Value) -> GenerateRequest {
    GenerateRequest {
        decoder: LatentDecoder::Taesd,
        ..case_request(case).unwrap()
    }
}

#[test]
fn taesd_decodes_the_final_image_as_diffusers_does() {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .taesd(taesd_dir())
        .build()
        .unwrap();
    assert!(sd.taesd().is_some());
    for case in cases() {
        let generated = sd.generate_simple(&request(&case)).unwrap();
        let file = case["images"][0].as_str().unwrap();
        let expected = image_crate::open(taesd_dir().join(file)).unwrap().to_rgb8();
        let diff = max_difference(&generated.images[0], &expected);
        println!("{file}: max difference {diff} levels");
        assert!(diff <= 2, "{file}: {diff} levels from diffusers");
        assert!(generated.infotexts[0].to_string().contains("VAE: TAESD"));

        // The VAE's image of the same latents differs: the decoder really changed.
        let vae = GenerateRequest {
            decoder: LatentDecoder::Vae,
            ..request(&case)
        };
        let full = sd.generate_simple(&vae).unwrap();
        assert!(max_difference(&full.images[0], &expected) > 20);
    }
}

#[test]
fn previews_decode_through_taesd_and_asking_without_one_is_an_error() {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .taesd(taesd_dir())
        .build()
        .unwrap();
    let latents = sd_pipeline::candle_core::Tensor::randn(
        0f32,
        1f32,
        (2, 4, 8, 8),
        &sd_pipeline::candle_core::Device::Cpu,
    )
    .unwrap();
    let previews = sd
        .decode_latents_with(&latents, LatentDecoder::Taesd)
        .unwrap();
    assert_eq!(previews.len(), 2);
    assert_eq!(previews[0].dimensions(), (64, 64));
    let direct = sd.taesd().unwrap().decode(&latents).unwrap();
    assert_eq!(previews[1], direct[1]);

    let plain = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .build()
        .unwrap();
    let err = plain.generate_simple(&request(&cases()[0])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidRequest {
                field: "decoder",
                ..
            }
        ),
        "{err}"
    );
    let err = plain
        .decode_latents_with(&latents, LatentDecoder::Taesd)
        .unwrap_err();
    assert!(err.to_string().contains("TAESD"), "{err}");

    let err = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .taesd(pipeline_fixture("tiny-sd1").join("vae"))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vae"), "{err}");
}
