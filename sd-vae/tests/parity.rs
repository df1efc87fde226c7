//! The tiny fixture models against diffusers 0.42.1 (tools/fixtures/vae.py): posterior, sample,
//! decode, tiled decode and tiled encode, in f32, f16 and bf16.

mod common;

use candle_core::DType;
use common::{assert_close, load, tensors};
use sd_vae::{AutoencoderKl, TileOptions};

/// DESIGN.md's f32 tolerance.
const F32_BOUND: f32 = 1e-4;
/// f16 keeps 11 significant bits (relative rounding 4.9e-4) on weights and on every activation
/// between ~25 layers; measured errors are 1e-3 .. 2e-3.
const F16_BOUND: f32 = 5e-3;
/// bf16 keeps 8 bits (relative rounding 3.9e-3); measured errors are 1e-2 .. 2e-2.
const BF16_BOUND: f32 = 4e-2;

fn check_posterior_and_decode(model: &str, dtype: DType, bound: f32) {
    let vae = load(model, dtype);
    let inputs = tensors("inputs.safetensors");
    let expected = tensors(&format!("{model}/expected.safetensors"));
    let tag = format!("{model} {dtype:?}");
    for case in ["a", "b"] {
        let dist = vae.encode(&inputs[&format!("image_{case}")]).unwrap();
        let key = |what: &str| format!("posterior_{case}_{what}");
        assert_close(
            &format!("{tag} mean {case}"),
            dist.mean(),
            &expected[&key("mean")],
            bound,
        );
        assert_close(
            &format!("{tag} logvar {case}"),
            dist.logvar(),
            &expected[&key("logvar")],
            bound,
        );
        assert_close(
            &format!("{tag} std {case}"),
            dist.std(),
            &expected[&key("std")],
            bound,
        );
        let sample = dist.sample(&inputs[&format!("noise_{case}")]).unwrap();
        assert_close(
            &format!("{tag} sample {case}"),
            &sample,
            &expected[&key("sample")],
            bound,
        );
        assert_eq!(dist.mode().dims(), dist.mean().dims());

        let image = vae.decode(&inputs[&format!("latents_{case}")]).unwrap();
        assert_eq!(image.dtype(), dtype);
        assert_close(
            &format!("{tag} decode {case}"),
            &image,
            &expected[&format!("decode_{case}")],
            bound,
        );
    }
}

#[test]
fn sd1_f32_matches_diffusers() {
    check_posterior_and_decode("sd1", DType::F32, F32_BOUND);
}

#[test]
fn deep_f32_matches_diffusers() {
    let vae = load("deep", DType::F32);
    assert_eq!(vae.config().layers_per_block, 2);
    assert_eq!(vae.config().scaling_factor, 0.13025);
    check_posterior_and_decode("deep", DType::F32, F32_BOUND);
}

#[test]
fn sd1_f16_within_bound() {
    check_posterior_and_decode("sd1", DType::F16, F16_BOUND);
}

#[test]
fn deep_f16_within_bound() {
    check_posterior_and_decode("deep", DType::F16, F16_BOUND);
}

#[test]
fn sd1_bf16_within_bound() {
    check_posterior_and_decode("sd1", DType::BF16, BF16_BOUND);
}

#[test]
fn deep_bf16_within_bound() {
    check_posterior_and_decode("deep", DType::BF16, BF16_BOUND);
}

/// The fixture's tile sizes (tools/fixtures/vae.py: TILE_SAMPLE, TILE_LATENT).
fn fixture_tiles() -> TileOptions {
    TileOptions {
        sample_size: 32,
        latent_size: 4,
        overlap_factor: 0.25,
    }
}

fn check_tiled(vae: &AutoencoderKl, tag: &str, bound: f32) {
    let inputs = tensors("inputs.safetensors");
    let expected = tensors("sd1/expected.safetensors");
    let tiles = fixture_tiles();
    for case in ["a", "b"] {
        let image = vae
            .tiled_decode(&inputs[&format!("latents_{case}")], &tiles)
            .unwrap();
        let reference = &expected[&format!("tiled_decode_{case}")];
        assert_close(
            &format!("{tag} tiled decode {case}"),
            &image,
            reference,
            bound,
        );
        // The tiled reference really differs from the plain one, so this checks the blending.
        let plain = &expected[&format!("decode_{case}")];
        assert!(common::rel_l2(reference, plain) > 1e-2);

        let dist = vae
            .tiled_encode(&inputs[&format!("image_{case}")], &tiles)
            .unwrap();
        let key = |what: &str| format!("tiled_posterior_{case}_{what}");
        assert_close(
            &format!("{tag} tiled mean {case}"),
            dist.mean(),
            &expected[&key("mean")],
            bound,
        );
        assert_close(
            &format!("{tag} tiled logvar {case}"),
            dist.logvar(),
            &expected[&key("logvar")],
            bound,
        );
        let sample = dist.sample(&inputs[&format!("noise_{case}")]).unwrap();
        assert_close(
            &format!("{tag} tiled sample {case}"),
            &sample,
            &expected[&key("sample")],
            bound,
        );
    }
}

#[test]
fn tiled_f32_matches_diffusers() {
    check_tiled(&load("sd1", DType::F32), "sd1 F32", F32_BOUND);
}

#[test]
fn tiled_f16_within_bound() {
    check_tiled(&load("sd1", DType::F16), "sd1 F16", F16_BOUND);
}

#[test]
fn tiles_larger_than_the_input_change_nothing() {
    let vae = load("sd1", DType::F32);
    let inputs = tensors("inputs.safetensors");
    let expected = tensors("sd1/expected.safetensors");
    let tiles = TileOptions::for_config(vae.config());
    assert_eq!((tiles.sample_size, tiles.latent_size), (64, 8));
    // latents_a is 8x8 and image_a 64x64: no larger than one tile, so no tiling (as diffusers).
    let image = vae.tiled_decode(&inputs["latents_a"], &tiles).unwrap();
    assert_close(
        "sd1 untiled via tiled_decode",
        &image,
        &expected["decode_a"],
        F32_BOUND,
    );
    let dist = vae.tiled_encode(&inputs["image_a"], &tiles).unwrap();
    assert_close(
        "sd1 untiled via tiled_encode",
        dist.mean(),
        &expected["posterior_a_mean"],
        F32_BOUND,
    );
}
