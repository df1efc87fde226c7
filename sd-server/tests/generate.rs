//! txt2img, img2img and the OpenAI route give the library's pixels (and so `sd generate`'s:
//! sd-cli's tests check that one, and the diffusers images), with A1111's `parameters` text
//! in each PNG; options switch models and clip skip; the listings list what is there.

mod common;

use common::*;
use sd_pipeline::image_crate::{self, RgbImage};
use sd_pipeline::{GenerateRequest, ImageInput, StableDiffusion};
use serde_json::{json, Value};

/// The library's image and `parameters` text for `request` on the fixture model `model`.
fn library(model: &str, request: &GenerateRequest) -> (RgbImage, String) {
    let sd = StableDiffusion::builder(pipeline_fixture(model))
        .build()
        .unwrap();
    let mut generated = sd.generate_simple(request).unwrap();
    (
        generated.images.remove(0),
        generated.infotexts.remove(0).to_string(),
    )
}

/// The base case as a library request, with `scheduler` (sd-scheduler's name).
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

/// The first image of an `{images: [...]}` answer: pixels, size, parameters.
fn first_image(body: &Value) -> (Vec<u8>, (u32, u32), Option<String>) {
    read_png(&unbase64(body["images"][0].as_str().unwrap()))
}

fn max_difference(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn txt2img_is_the_librarys_image_with_its_parameters() {
    let server = start(config());
    let url = server.url();
    let answer = post(&url, "/sdapi/v1/txt2img", &base_body("Euler"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (pixels, size, text) = first_image(&answer.body);
    assert_eq!(size, (64, 64));

    let (expected, expected_text) = library("tiny-sd1", &base_request("euler"));
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert_eq!(text.as_deref(), Some(expected_text.as_str()));
    assert_eq!(
        expected_text,
        "a photo of a cat\nNegative prompt: blurry\nSteps: 10, Sampler: Euler, CFG scale: 7.5, \
         Seed: 42, Size: 64x64, Model: tiny-sd1"
    );
    // And diffusers' image of the same case, within the 2 levels of DESIGN.md.
    let diffusers = image_crate::open(pipeline_fixture("txt2img-euler-0.png"))
        .unwrap()
        .to_rgb8();
    assert!(max_difference(&pixels, diffusers.as_raw()) <= 2);

    let info: Value = serde_json::from_str(answer.body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["seed"], 42);
    assert_eq!(info["all_seeds"], json!([42]));
    assert_eq!(info["sampler_name"], "Euler");
    assert_eq!(info["sd_model_name"], "tiny-sd1");
    assert_eq!(info["infotexts"][0], expected_text.as_str());
    assert_eq!(answer.body["parameters"]["steps"], 10);
    assert_eq!(answer.body["parameters"]["scheduler"], "Automatic");

    // DPM++ 2M Karras is DPM-Solver++ with Karras sigmas.
    let answer = post(&url, "/sdapi/v1/txt2img", &base_body("DPM++ 2M Karras"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (pixels, _, text) = first_image(&answer.body);
    let karras = GenerateRequest {
        karras: Some(true),
        ..base_request("dpm-solver++")
    };
    let (expected, expected_text) = library("tiny-sd1", &karras);
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert!(
        expected_text.contains("Sampler: DPM++ 2M, Schedule type: Karras"),
        "{expected_text}"
    );
    assert_eq!(text.as_deref(), Some(expected_text.as_str()));
    let plain = library("tiny-sd1", &base_request("dpm-solver++")).0;
    assert_ne!(
        plain.as_raw(),
        expected.as_raw(),
        "Karras sigmas change the image"
    );

    // Two batches of two: four images, seeds 42 and 44.
    let mut body = base_body("Euler a");
    body["batch_size"] = json!(2);
    body["n_iter"] = json!(2);
    body["steps"] = json!(2);
    let answer = post(&url, "/sdapi/v1/txt2img", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["images"].as_array().unwrap().len(), 4);
    let info: Value = serde_json::from_str(answer.body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], json!([42, 42, 44, 44]));
    server.stop().unwrap();
}

#[test]
fn img2img_and_inpainting_are_the_librarys() {
    let server = start(config());
    let url = server.url();
    let init = image_crate::open(pipeline_fixture("init.png"))
        .unwrap()
        .to_rgb8();
    let mut body = base_body("DDIM");
    body["init_images"] = json!([base64_file(&pipeline_fixture("init.png"))]);
    body["denoising_strength"] = json!(0.6);
    let answer = post(&url, "/sdapi/v1/img2img", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (pixels, _, text) = first_image(&answer.body);
    let request = GenerateRequest {
        init: Some(ImageInput {
            image: init.clone(),
            mask: None,
            strength: 0.6,
        }),
        ..base_request("ddim")
    };
    let (expected, expected_text) = library("tiny-sd1", &request);
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert!(
        expected_text.contains("Denoising strength: 0.6"),
        "{expected_text}"
    );
    assert_eq!(text.as_deref(), Some(expected_text.as_str()));
    let diffusers = image_crate::open(pipeline_fixture("img2img-ddim-0.png"))
        .unwrap()
        .to_rgb8();
    assert!(max_difference(&pixels, diffusers.as_raw()) <= 2);
    assert_eq!(answer.body["parameters"]["init_images"], Value::Null);

    // Inpainting: the mask as a data URL, inpainting_fill 1 ("original").
    body["mask"] = json!(format!(
        "data:image/png;base64,{}",
        base64_file(&pipeline_fixture("mask.png"))
    ));
    body["denoising_strength"] = json!(1.0);
    body["inpainting_fill"] = json!(1);
    let answer = post(&url, "/sdapi/v1/img2img", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (pixels, _, _) = first_image(&answer.body);
    let diffusers = image_crate::open(pipeline_fixture("inpaint-tiny-sd1-0.png"))
        .unwrap()
        .to_rgb8();
    assert!(max_difference(&pixels, diffusers.as_raw()) <= 2);

    // Fills that do not map are refused by name.
    body["inpainting_fill"] = json!(2);
    let answer = post(&url, "/sdapi/v1/img2img", &body);
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body["field"], "inpainting_fill");
    server.stop().unwrap();
}

#[test]
fn openai_generations_give_b64_pngs() {
    let server = start(config());
    let url = server.url();
    let body = json!({
        "prompt": "a photo of a cat", "n": 1, "size": "64x64", "response_format": "b64_json",
        "steps": 10, "seed": 42, "cfg_scale": 7.5, "negative_prompt": "blurry", "model": "dall-e-3",
    });
    let answer = post(&url, "/v1/images/generations", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let data = answer.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let (pixels, size, _) = read_png(&unbase64(data[0]["b64_json"].as_str().unwrap()));
    assert_eq!(size, (64, 64));
    // A1111's default sampler, Euler.
    let (expected, _) = library("tiny-sd1", &base_request("euler"));
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert!(answer.body["created"].as_u64().unwrap() > 1_600_000_000);

    let answer = post(
        &url,
        "/v1/images/generations",
        &json!({"prompt": "x", "response_format": "url"}),
    );
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body["error"]["param"], "response_format");
    assert_eq!(answer.body["error"]["type"], "invalid_request_error");
    server.stop().unwrap();
}

#[test]
fn listings_and_options() {
    let server = start(config());
    let url = server.url();
    let models = get(&url, "/sdapi/v1/sd-models").body;
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2"]);
    let samplers = get(&url, "/sdapi/v1/samplers").body;
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["DDIM", "DDPM", "PLMS", "LMS", "Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"]
    );
    assert_eq!(
        samplers[5]["aliases"],
        json!(["k_euler_a", "euler-ancestral"])
    );
    assert_eq!(samplers[0]["aliases"], json!(["ddim"]));
    assert_eq!(samplers[7]["options"], json!({"scheduler": "karras"}));
    let schedulers = get(&url, "/sdapi/v1/schedulers").body;
    assert_eq!(schedulers[1]["label"], "Karras");
    assert_eq!(get(&url, "/sdapi/v1/loras").body, json!([]));

    let options = get(&url, "/sdapi/v1/options").body;
    assert_eq!(options["sd_model_checkpoint"], "tiny-sd1");
    assert_eq!(options["CLIP_stop_at_last_layers"], 1);

    // Clip skip 2 as the default of later requests.
    let answer = post(
        &url,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": 2, "some_unknown_option": true}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["CLIP_stop_at_last_layers"], 2);
    let mut body = base_body("Euler");
    body["steps"] = json!(3);
    let answer = post(&url, "/sdapi/v1/txt2img", &body);
    let (pixels, _, text) = first_image(&answer.body);
    let request = GenerateRequest {
        clip_skip: 2,
        steps: 3,
        ..base_request("euler")
    };
    let (expected, expected_text) = library("tiny-sd1", &request);
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert!(text.unwrap().ends_with("Clip skip: 2"), "{expected_text}");

    // Switching to SD 2: the same request now gives the SD 2 model's image.
    let answer = post(
        &url,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny-sd2", "CLIP_stop_at_last_layers": 1}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        get(&url, "/sdapi/v1/options").body["sd_model_checkpoint"],
        "tiny-sd2"
    );
    let answer = post(&url, "/sdapi/v1/txt2img", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (pixels, _, text) = first_image(&answer.body);
    let request = GenerateRequest {
        steps: 3,
        ..base_request("euler")
    };
    let (expected, _) = library("tiny-sd2", &request);
    assert_eq!(pixels, expected.as_raw().as_slice());
    assert!(text.unwrap().contains("Model: tiny-sd2"));
    server.stop().unwrap();
}

#[test]
fn lora_tags_choose_side_branches_from_the_lora_dir() {
    let dir = std::env::temp_dir().join(format!("sd-server-loras-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = pipeline_fixture("../lora");
    for file in ["kohya.safetensors", "loha.safetensors"] {
        std::fs::copy(fixtures.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a LoRA").unwrap();
    let mut config = config();
    config.lora_dir = Some(dir.clone());
    let server = start(config);
    let url = server.url();
    let loras = get(&url, "/sdapi/v1/loras").body;
    let names: Vec<&str> = loras
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kohya", "loha"]);

    // fixtures/lora/cases.json: the base case with PNDM, against diffusers' images.
    for (tags, reference) in [
        ("", "../pipeline/txt2img-pndm-0.png"),
        (" <lora:kohya:0.5:0.8>", "kohya-te0.5-unet0.8.png"),
        (" <lora:loha>", "loha.png"),
    ] {
        let mut body = base_body("PLMS");
        body["prompt"] = json!(format!("a photo of a cat{tags}"));
        let answer = post(&url, "/sdapi/v1/txt2img", &body);
        assert_eq!(answer.status, 200, "{tags}: {}", answer.body);
        let (pixels, _, _) = first_image(&answer.body);
        let expected = image_crate::open(fixtures.join(reference))
            .unwrap()
            .to_rgb8();
        let diff = max_difference(&pixels, expected.as_raw());
        assert!(diff <= 2, "{tags}: {diff} levels from diffusers");
    }
    let mut body = base_body("PLMS");
    body["prompt"] = json!("a photo of a cat <lora:peft:1>");
    let answer = post(&url, "/sdapi/v1/txt2img", &body);
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.body["field"], "prompt");
    assert!(answer.body["detail"].as_str().unwrap().contains("peft"));
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
