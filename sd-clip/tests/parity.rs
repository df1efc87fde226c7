//! Outputs against transformers' `CLIPTextModel` on the tiny fixtures (tools/fixtures/clip.py).

mod common;

use candle_core::{DType, Tensor};
use common::{model, reference, rel_l2};

const CONFIGS: [&str; 2] = ["sd1-tiny", "sd2-tiny"];

/// f32: DESIGN.md's component tolerance.
const F32_TOL: f64 = 1e-4;
/// f16 keeps 11 significant bits (unit roundoff 4.9e-4); errors of that size compound over
/// the layers and the final layer norm, measured at most ~1e-3 on these fixtures.
const F16_TOL: f64 = 1e-2;
/// bf16 keeps 8 bits (unit roundoff 3.9e-3), eight times coarser than f16; measured at most
/// ~8e-3 on these fixtures.
const BF16_TOL: f64 = 3e-2;

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => F16_TOL,
        DType::BF16 => BF16_TOL,
        _ => F32_TOL,
    }
}

fn windows(ids: &Tensor) -> Vec<Vec<u32>> {
    ids.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap()
}

/// Every output of one config in one dtype; returns the largest relative error seen.
fn check_config(name: &str, dtype: DType) -> f64 {
    let model = model(name, dtype);
    let reference = reference(name);
    let tol = tolerance(dtype);
    let n = model.config().num_hidden_layers;
    let mut worst: f64 = 0.0;
    let mut check = |what: String, actual: &Tensor, expected: &Tensor| {
        assert_eq!(actual.dtype(), dtype);
        let err = rel_l2(actual, expected);
        println!("{name} {dtype:?} {what}: rel L2 {err:.3e}");
        assert!(
            err < tol,
            "{name} {dtype:?} {what}: rel L2 {err:.3e} >= {tol:e}"
        );
        worst = worst.max(err);
    };

    let ids = &reference["input_ids"];
    let last = model.forward(ids).unwrap();
    check(
        "last_hidden_state".into(),
        &last,
        &reference["last_hidden_state"],
    );
    let ids_u32 = ids.to_dtype(DType::U32).unwrap();
    for k in 1..=n {
        let out = model.forward_with_clip_skip(&ids_u32, k).unwrap();
        check(
            format!("clip_skip_{k}"),
            &out,
            &reference[&format!("clip_skip_{k}")],
        );
    }
    let windows = windows(&reference["window_ids"]);
    for k in 1..=n {
        let out = model.encode_windows(&windows, k).unwrap();
        let key = format!("windows_clip_skip_{k}");
        check(key.clone(), &out, &reference[&key]);
    }
    worst
}

#[test]
fn f32_matches_transformers() {
    for name in CONFIGS {
        let worst = check_config(name, DType::F32);
        println!("{name} f32 max rel L2 {worst:.3e}");
    }
}

#[test]
fn f16_matches_within_bound() {
    for name in CONFIGS {
        let worst = check_config(name, DType::F16);
        println!("{name} f16 max rel L2 {worst:.3e}");
    }
}

#[test]
fn bf16_matches_within_bound() {
    for name in CONFIGS {
        let worst = check_config(name, DType::BF16);
        println!("{name} bf16 max rel L2 {worst:.3e}");
    }
}

/// Clip skips are different tensors: a test that compared clip_skip_2 against clip_skip_1 by
/// mistake would fail here, and the penultimate layer is not the last.
#[test]
fn clip_skip_changes_the_output() {
    let model = model("sd1-tiny", DType::F32);
    let reference = reference("sd1-tiny");
    let ids = &reference["input_ids"];
    let skip2 = model.forward_with_clip_skip(ids, 2).unwrap();
    assert!(rel_l2(&skip2, &reference["clip_skip_1"]) > 0.1);
    assert!(rel_l2(&skip2, &reference["clip_skip_2"]) < F32_TOL);
}

/// A window encoded alone equals its slice of the batched two-window encoding.
#[test]
fn windows_are_independent() {
    let model = model("sd2-tiny", DType::F32);
    let reference = reference("sd2-tiny");
    let windows = windows(&reference["window_ids"]);
    let both = model.encode_windows(&windows, 1).unwrap();
    let second = model.encode_windows(&windows[1..], 1).unwrap();
    assert_eq!(second.dims(), &[1, 77, 40]);
    let slice = both.narrow(1, 77, 77).unwrap();
    assert!(rel_l2(&second, &slice) < 1e-6);
}
