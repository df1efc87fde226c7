//! The f16 "black image" overflow: a model whose activations exceed f16's 65504 must still decode
//! to the f32 image, by redoing the pass in f32.
//!
//! The model is the sd1 fixture with `decoder.conv_in` (weight and bias) multiplied by the
//! `overflow_scale` recorded in fixtures/vae/overflow.safetensors; diffusers' f32 decode of
//! `latents_b` by that model is the reference, and the fixture script checked that torch's f16
//! decode of it is not finite.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{assert_close, config, tensors, weights};
use sd_vae::AutoencoderKl;

fn overflow_scale() -> f64 {
    let path = common::fixture_dir().join("overflow.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors_header(&bytes);
    meta["overflow_scale"].as_str().unwrap().parse().unwrap()
}

/// Reads the JSON header of a safetensors file (8-byte little-endian length, then JSON).
fn safetensors_header(bytes: &[u8]) -> (usize, serde_json::Value) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (len, header["__metadata__"].clone())
}

fn overflow_weights() -> HashMap<String, Tensor> {
    let mut ts = candle_core::safetensors::load(weights("sd1"), &Device::Cpu).unwrap();
    let scale = overflow_scale();
    for name in ["decoder.conv_in.weight", "decoder.conv_in.bias"] {
        let t = (&ts[name] * scale).unwrap();
        ts.insert(name.to_string(), t);
    }
    ts
}

fn reference() -> Tensor {
    tensors("overflow.safetensors")["decode_b"].clone()
}

#[test]
fn f32_decode_of_the_overflow_model_matches_diffusers() {
    let vb = VarBuilder::from_tensors(overflow_weights(), DType::F32, &Device::Cpu);
    let vae = AutoencoderKl::new(&config("sd1"), vb).unwrap();
    let out = vae
        .decode_with_status(&tensors("inputs.safetensors")["latents_b"], None)
        .unwrap();
    assert!(!out.upcast_to_f32);
    assert_close("overflow f32", &out.sample, &reference(), 1e-4);
}

/// Weights come from a `VarBuilder` in f16, so the fallback upcasts the f16-rounded weights
/// (as diffusers' `upcast_vae`): the f32 pass then differs from the reference by the weights'
/// rounding, relative 4.9e-4 each; measured 6.8e-4.
#[test]
fn f16_overflow_is_redone_in_f32_from_upcast_weights() {
    let vb = VarBuilder::from_tensors(overflow_weights(), DType::F16, &Device::Cpu);
    let vae = AutoencoderKl::new(&config("sd1"), vb).unwrap();
    let latents = &tensors("inputs.safetensors")["latents_b"];
    let out = vae.decode_with_status(latents, None).unwrap();
    assert!(out.upcast_to_f32, "the f16 pass should have overflowed");
    assert_eq!(out.sample.dtype(), DType::F16);
    assert_close(
        "overflow f16 (upcast weights)",
        &out.sample,
        &reference(),
        5e-3,
    );
    // The same through the plain API, twice (the second run reuses the cached f32 decoder).
    for _ in 0..2 {
        let image = vae.decode(latents).unwrap();
        assert_close("overflow f16 decode()", &image, &reference(), 5e-3);
    }
}

/// Weights come from files: the fallback re-reads them at their stored f32 precision, so the
/// result equals the f32 one up to the final rounding to f16 (relative 4.9e-4 at most).
#[test]
fn f16_overflow_is_redone_in_f32_from_the_files() {
    let dir = std::env::temp_dir().join(format!("sd-vae-overflow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&overflow_weights(), &file).unwrap();
    let vae = AutoencoderKl::from_safetensors(&config("sd1"), &[&file], DType::F16, &Device::Cpu)
        .unwrap();
    let out = vae
        .decode_with_status(&tensors("inputs.safetensors")["latents_b"], None)
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.upcast_to_f32);
    assert_close(
        "overflow f16 (file weights)",
        &out.sample,
        &reference(),
        5e-4,
    );
}

/// Tiled decoding redoes only the tiles that overflow and still matches the f32 tiled result.
#[test]
fn f16_overflow_fallback_works_per_tile() {
    let latents = &tensors("inputs.safetensors")["latents_b"];
    let tiles = sd_vae::TileOptions {
        sample_size: 32,
        latent_size: 4,
        overlap_factor: 0.25,
    };
    let f32_vae = AutoencoderKl::new(
        &config("sd1"),
        VarBuilder::from_tensors(overflow_weights(), DType::F32, &Device::Cpu),
    )
    .unwrap();
    let expected = f32_vae.tiled_decode(latents, &tiles).unwrap();
    let f16_vae = AutoencoderKl::new(
        &config("sd1"),
        VarBuilder::from_tensors(overflow_weights(), DType::F16, &Device::Cpu),
    )
    .unwrap();
    let out = f16_vae.decode_with_status(latents, Some(&tiles)).unwrap();
    assert!(out.upcast_to_f32);
    assert_close("overflow f16 tiled", &out.sample, &expected, 5e-3);
}

/// Without the overflow the f16 path is left alone (no silent f32 pass).
#[test]
fn ordinary_f16_decode_does_not_upcast() {
    let vae = common::load("sd1", DType::F16);
    let out = vae
        .decode_with_status(&tensors("inputs.safetensors")["latents_b"], None)
        .unwrap();
    assert!(!out.upcast_to_f32);
}

/// bf16 has f32's exponent range: the model that overflows f16 decodes in bf16 with no f32
/// pass (bf16 keeps no fallback) and within bf16's bound of diffusers' f32 result.
#[test]
fn bf16_decodes_the_overflow_model_without_an_f32_pass() {
    let vb = VarBuilder::from_tensors(overflow_weights(), DType::BF16, &Device::Cpu);
    let vae = AutoencoderKl::new(&config("sd1"), vb).unwrap();
    let out = vae
        .decode_with_status(&tensors("inputs.safetensors")["latents_b"], None)
        .unwrap();
    assert!(!out.upcast_to_f32);
    assert_eq!(out.sample.dtype(), DType::BF16);
    assert_close("overflow bf16", &out.sample, &reference(), 4e-2);
}
