//! `sd bench`, run as a user runs it, on the tiny SD 1.x fixture folder (`fixtures/pipeline/`,
//! tools/fixtures/pipeline.py) at 64x64 pixels and 2 steps: it reports every number, and bad
//! arguments are errors naming the argument.

mod common;

use common::{folder, s, sd};
use serde_json::Value;

fn run_err(args: &[&str]) -> String {
    let out = sd(args);
    assert!(!out.status.success(), "sd {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn json_reports_every_phase_for_the_tiny_model() {
    let model = folder("tiny-sd1");
    let args = [
        "bench",
        "--model",
        s(&model),
        "--size",
        "64",
        "--steps",
        "2",
        "--json",
    ];
    let out = sd(&args);
    assert!(
        out.status.success(),
        "sd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "load_seconds",
        "text_encode_seconds",
        "denoise_seconds",
        "unet_seconds_per_call",
        "unet_seconds_min",
        "iterations_per_second",
        "unet_gflop_per_call",
        "unet_gflops",
        "vae_decode_seconds",
        "peak_rss_mib",
    ] {
        let value = report[key].as_f64();
        assert!(
            value.is_some_and(|v| v.is_finite() && v > 0.0),
            "{key}: {:?} in {report}",
            report[key]
        );
    }
    assert_eq!(report["steps"], 2);
    assert_eq!(report["size"], 64);
    assert_eq!(report["latent_size"], 8);
    assert_eq!(report["dtype"], "f32");
    assert!(report["isa"].as_str().is_some_and(|isa| !isa.is_empty()));
    // The fixture's scheduler is PNDM (skip_prk_steps), which makes steps + 1 calls.
    assert_eq!(report["scheduler"], "pndm");
    assert_eq!(report["unet_calls"], 3);
    let (mean, min) = (
        report["unet_seconds_per_call"].as_f64().unwrap(),
        report["unet_seconds_min"].as_f64().unwrap(),
    );
    assert!(min <= mean * (1.0 + 1e-9), "min {min} > mean {mean}");
}

#[test]
fn table_names_each_phase() {
    let model = folder("tiny-sd1");
    let out = sd(&[
        "bench",
        "--model",
        s(&model),
        "--size",
        "64",
        "--steps",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for phase in [
        "load",
        "text encode",
        "UNet call",
        "VAE decode",
        "GFLOP/s",
        "peak RSS",
    ] {
        assert!(table.contains(phase), "no {phase:?} in\n{table}");
    }
}

#[test]
fn size_not_a_multiple_of_8_names_size() {
    let model = folder("tiny-sd1");
    let err = run_err(&[
        "bench",
        "--model",
        s(&model),
        "--size",
        "60",
        "--steps",
        "2",
    ]);
    assert!(err.contains("--size") && err.contains("60"), "{err}");
}

#[test]
fn bad_arguments_name_the_argument() {
    let model = folder("tiny-sd1");
    let model = s(&model);
    let err = run_err(&["bench", "--model", model, "--size", "64", "--steps", "0"]);
    assert!(err.contains("--steps"), "{err}");
    let err = run_err(&["bench", "--model", model, "--dtype", "f8"]);
    assert!(err.contains("--dtype"), "{err}");
    let err = run_err(&["bench", "--model", model, "--random", "sd15"]);
    assert!(err.contains("--model") && err.contains("--random"), "{err}");
    let err = run_err(&["bench", "--size", "64"]);
    assert!(err.contains("--model") && err.contains("--random"), "{err}");
    let err = run_err(&[
        "bench",
        "--model",
        "no/such/model.safetensors",
        "--size",
        "64",
    ]);
    assert!(err.contains("--model no/such/model.safetensors"), "{err}");
}

#[test]
fn random_weights_refuse_bad_sizes_before_making_anything() {
    // Making 1.07 G random values is for release builds; a bad size is refused first.
    let err = run_err(&["bench", "--random", "sd15", "--size", "60", "--steps", "1"]);
    assert!(err.contains("--size"), "{err}");
}
