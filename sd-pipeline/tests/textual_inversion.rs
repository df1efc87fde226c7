//! Textual-inversion embeddings against diffusers' `load_textual_inversion` (tools/fixtures/lora.py,
//! "embeddings" case): an A1111 `.pt` of two vectors in the prompt, an A1111 `.safetensors` in the
//! negative prompt and a diffusers `{token: vector}` file, on tiny-sd1.

mod common;

use std::path::PathBuf;

use anyhow::{Context, Result};
use common::{lora_case_request, lora_fixture, max_difference, pipeline_fixture};
use sd_pipeline::image_crate;
use sd_pipeline::prompt::prompt_windows_with;
use sd_pipeline::textual_inversion::Embeddings;
use sd_pipeline::{Error, StableDiffusion};
use serde_json::Value;

const FILES: [&str; 3] = ["tinyemb.pt", "negemb.safetensors", "dfemb.bin"];

fn case() -> Result<Value> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(lora_fixture("cases.json"))?)?;
    meta["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .find(|c| c["name"] == "embeddings")
        .cloned()
        .context("no embeddings case")
}

fn with_embeddings(files: &[&str]) -> Result<StableDiffusion> {
    let mut builder = StableDiffusion::builder(pipeline_fixture("tiny-sd1"));
    for file in files {
        builder = builder.embedding(lora_fixture(file));
    }
    Ok(builder.build()?)
}

#[test]
fn the_three_layouts_match_diffusers() -> Result<()> {
    let case = case()?;
    let files: Vec<&str> = case["embeddings"]
        .as_array()
        .context("embeddings")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files, FILES);
    let sd = with_embeddings(&files)?;
    assert_eq!(
        sd.embeddings(),
        [
            ("dfemb".to_string(), 1),
            ("negemb".to_string(), 1),
            ("tinyemb".to_string(), 2)
        ]
    );
    let expected =
        image_crate::open(lora_fixture(case["image"].as_str().context("image")?))?.to_rgb8();
    let ours = sd
        .generate_simple(&lora_case_request(&case))?
        .images
        .remove(0);
    let diff = max_difference(&ours, &expected);
    println!("embeddings: {diff} levels from diffusers");
    assert!(diff <= 2, "{diff} levels from diffusers");

    // The words alone, without the embeddings, give another image: the vectors did the work.
    let plain = with_embeddings(&[])?
        .generate_simple(&lora_case_request(&case))?
        .images
        .remove(0);
    let changed = max_difference(&plain, &expected);
    assert!(changed > 10, "only {changed} levels from the plain words");
    Ok(())
}

#[test]
fn an_embedding_takes_one_slot_per_vector() -> Result<()> {
    let sd = with_embeddings(&[])?;
    let config = sd_pipeline::checkpoint::ModelWeights::open(
        pipeline_fixture("tiny-sd1"),
        &Default::default(),
    )?
    .text_encoder_config;
    let paths: Vec<PathBuf> = FILES.iter().map(|f| lora_fixture(f)).collect();
    let embeddings = Embeddings::load(&paths, sd.tokenizer(), &config)?;
    let vocab = config.vocab_size as u32;
    // Files in the order given: tinyemb (2 vectors) first, then negemb, then dfemb.
    let windows = prompt_windows_with(sd.tokenizer(), &embeddings, "(tinyemb:1.5) cat dfemb")?;
    let cat = sd.tokenizer().tokenize("cat")?[0];
    assert_eq!(
        &windows[0].ids[..6],
        &[
            sd.tokenizer().bos(),
            vocab,
            vocab + 1,
            cat,
            vocab + 3,
            sd.tokenizer().eos()
        ]
    );
    assert_eq!(&windows[0].weights[..5], &[1.0, 1.5, 1.5, 1.0, 1.0]);
    // Part of a longer word is not the embedding's word.
    let windows = prompt_windows_with(sd.tokenizer(), &embeddings, "tinyembs")?;
    assert!(windows[0].ids.iter().all(|&id| id < vocab));
    Ok(())
}

#[test]
fn a_width_that_does_not_fit_is_an_error_naming_the_file() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sd-ti-width-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("wide.safetensors");
    let v = sd_pipeline::candle_core::Tensor::ones(
        (2, 768),
        sd_pipeline::candle_core::DType::F32,
        &sd_pipeline::candle_core::Device::Cpu,
    )?;
    sd_pipeline::candle_core::safetensors::save(
        &[("emb_params".to_string(), v)].into_iter().collect(),
        &path,
    )?;
    let err = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .embedding(&path)
        .build()
        .err()
        .context("a 768-wide embedding on an 8-wide text encoder")?;
    assert!(matches!(err, Error::Embedding { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("wide.safetensors") && message.contains("768 wide"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
