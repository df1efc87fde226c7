//! `sd merge`, run as a user runs it. The output is re-read with candle alone and compared with
//! the inputs as the library loads them (`ModelWeights::open`).
//!
//! The second model B is fixtures/pipeline/tiny-sd1 with its UNet replaced by
//! fixtures/checkpoint/unet-b.safetensors (tools/fixtures/checkpoint.py: the same config, seed 5,
//! f16) and its VAE doubled, so every network of B differs from A's.

use std::collections::HashMap;
mod common;

use std::path::Path;
use std::process::Output;

use common::{fixture, folder, root, s, TempDir};

use candle_core::{DType, Device, Tensor};
use sd_pipeline::checkpoint::{Family, LoadOptions, ModelWeights, NamedTensors};

/// `sd merge ARGS...`, which must succeed; its stdout.
fn merge(args: &[&str]) -> String {
    let out = merge_output(args);
    assert!(
        out.status.success(),
        "sd merge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn merge_output(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sd"))
        .arg("merge")
        .args(args)
        .output()
        .expect("the sd binary runs")
}

fn open(path: &Path) -> ModelWeights {
    ModelWeights::open(path, &LoadOptions::default()).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Same names, dtypes, shapes and values.
fn assert_same(what: &str, got: &NamedTensors, want: &NamedTensors) {
    let mut got_names: Vec<_> = got.keys().collect();
    let mut want_names: Vec<_> = want.keys().collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(got_names, want_names, "{what}: tensor names");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dtype(), w.dtype(), "{what} {name} dtype");
        assert_eq!(g.dims(), w.dims(), "{what} {name} shape");
        assert!(values(g) == values(w), "{what} {name} values differ");
    }
}

fn assert_same_model(what: &str, got: &ModelWeights, want: &ModelWeights) {
    assert_same(&format!("{what} unet"), &got.unet, &want.unet);
    assert_same(&format!("{what} vae"), &got.vae, &want.vae);
    assert_same(
        &format!("{what} text encoder"),
        &got.text_encoder,
        &want.text_encoder,
    );
}

/// The three networks of a diffusers folder, read with candle alone.
fn read_folder(dir: &Path) -> [NamedTensors; 3] {
    let load = |f: &str| candle_core::safetensors::load(dir.join(f), &Device::Cpu).unwrap();
    [
        load("unet/diffusion_pytorch_model.safetensors"),
        load("vae/diffusion_pytorch_model.safetensors"),
        load("text_encoder/model.safetensors"),
    ]
}

/// `got` is (a + b) / 2 within f32 rounding, element by element, stored in a's dtype (f32).
fn assert_mean(what: &str, got: &Tensor, a: &Tensor, b: &Tensor) {
    assert_eq!(got.dtype(), DType::F32, "{what}");
    assert_eq!(got.dims(), a.dims(), "{what}");
    let (got, a, b) = (values(got), values(a), values(b));
    let mut differs = false;
    for (i, ((g, a), b)) in got.iter().zip(&a).zip(&b).enumerate() {
        let mean = (f64::from(*a) + f64::from(*b)) / 2.0;
        // a + (b - a) * 0.5 in f32: two roundings, each at most half an ulp of max(|a|, |b|).
        let tolerance = 2.0 * f64::from(f32::EPSILON) * f64::from(a.abs().max(b.abs()));
        assert!(
            (f64::from(*g) - mean).abs() <= tolerance,
            "{what}[{i}]: {g} is not ({a} + {b}) / 2"
        );
        differs |= a != b;
    }
    assert!(differs, "{what}: a and b should differ for this check");
}

/// Copies the diffusers folder `name` to `to` (configs and weights; no tokenizer).
fn copy_folder(name: &str, to: &Path) {
    for sub in ["unet", "vae", "text_encoder", "scheduler"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(folder(name).join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(
        folder(name).join("model_index.json"),
        to.join("model_index.json"),
    )
    .unwrap();
}

/// Model B: tiny-sd1 with unet-b's UNet and twice tiny-sd1's VAE.
fn model_b(to: &Path) {
    copy_folder("tiny-sd1", to);
    std::fs::copy(
        fixture("unet-b.safetensors"),
        to.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let vae_file = to.join("vae/diffusion_pytorch_model.safetensors");
    let vae: HashMap<String, Tensor> = candle_core::safetensors::load(&vae_file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, (v * 2.0).unwrap()))
        .collect();
    candle_core::safetensors::save(&vae, &vae_file).unwrap();
}

#[test]
fn merging_a_model_with_itself_gives_it_back() {
    let tmp = TempDir::new("itself");
    let a = folder("tiny-sd1");
    let want = open(&a);
    for (i, scale) in ["0.3", "-0.5", "1.7", "0"].iter().enumerate() {
        let out = tmp.path(&format!("out-{i}"));
        let report = merge(&[s(&a), s(&a), "--scale", scale, "-o", s(&out)]);
        assert!(
            report.starts_with(&format!(
                "merged: A + (B - A) x {} (weighted sum), UNet, VAE and text encoder",
                scale.parse::<f64>().unwrap()
            )),
            "{report}"
        );
        assert!(report.contains(" s (loading "), "{report}");
        let [unet, vae, text] = read_folder(&out);
        assert_same(&format!("unet at {scale}"), &unet, &want.unet);
        assert_same(&format!("vae at {scale}"), &vae, &want.vae);
        assert_same(&format!("text at {scale}"), &text, &want.text_encoder);
    }

    // A diffusers folder with the single file made from it: the same weights, so the same model.
    let sd2 = folder("tiny-sd2");
    let out = tmp.path("sd2.safetensors");
    merge(&[
        s(&sd2),
        s(&fixture("tiny-sd2.ckpt")),
        "--scale",
        "0.3",
        "-o",
        s(&out),
    ]);
    let back = open(&out);
    assert_same_model("sd2 folder + ckpt", &back, &open(&sd2));
    assert_eq!(back.kind.family, Family::Sd2);
}

#[test]
fn half_way_between_two_models_is_their_mean() {
    let tmp = TempDir::new("mean");
    let (a_dir, b_dir) = (folder("tiny-sd1"), tmp.path("b"));
    model_b(&b_dir);
    let (a, b) = (open(&a_dir), open(&b_dir));

    // As a folder: every tensor, by its diffusers name.
    let out = tmp.path("mean");
    merge(&[s(&a_dir), s(&b_dir), "--scale", "0.5", "-o", s(&out)]);
    let [unet, vae, text] = read_folder(&out);
    for (name, t) in &unet {
        assert_mean(&format!("unet {name}"), t, &a.unet[name], &b.unet[name]);
    }
    for (name, t) in &vae {
        assert_mean(&format!("vae {name}"), t, &a.vae[name], &b.vae[name]);
    }
    assert_eq!(unet.len(), a.unet.len());
    assert_same("text encoder (the same in A and B)", &text, &a.text_encoder);
    assert_eq!(open(&out).kind.family, Family::Sd1);

    // As one LDM file: a few tensors by their single-file names (tools/fixtures/checkpoint.py's
    // unet_prefixes / vae_prefixes tables).
    let file = tmp.path("mean.safetensors");
    let report = merge(&[s(&a_dir), s(&b_dir), "--scale", "0.5", "-o", s(&file)]);
    assert!(report.contains("(single .safetensors file)"), "{report}");
    let ldm = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    for (ldm_name, name) in [
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            "conv_in.weight",
        ),
        ("model.diffusion_model.out.2.bias", "conv_out.bias"),
        (
            "model.diffusion_model.time_embed.0.weight",
            "time_embedding.linear_1.weight",
        ),
        (
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            "down_blocks.0.attentions.0.proj_in.weight",
        ),
        (
            "model.diffusion_model.middle_block.0.in_layers.2.weight",
            "mid_block.resnets.0.conv1.weight",
        ),
    ] {
        assert_mean(ldm_name, &ldm[ldm_name], &a.unet[name], &b.unet[name]);
    }
    assert_mean(
        "first_stage_model.encoder.conv_in.weight",
        &ldm["first_stage_model.encoder.conv_in.weight"],
        &a.vae["encoder.conv_in.weight"],
        &b.vae["encoder.conv_in.weight"],
    );
    let back = open(&file);
    assert_eq!(back.kind.family, Family::Sd1);
    assert_same_model("reopened file", &back, &open(&out));
}

#[test]
fn unet_only_keeps_a_vae_and_text_encoder() {
    let tmp = TempDir::new("unet-only");
    let (a_dir, b_dir) = (folder("tiny-sd1"), tmp.path("b"));
    model_b(&b_dir);
    let (a, b) = (open(&a_dir), open(&b_dir));
    let out = tmp.path("out");
    let report = merge(&[
        s(&a_dir),
        s(&b_dir),
        "--scale",
        "0.5",
        "--unet-only",
        "-o",
        s(&out),
    ]);
    assert!(report.contains("UNet only"), "{report}");
    let [unet, vae, text] = read_folder(&out);
    let name = "down_blocks.0.resnets.0.conv1.weight";
    assert_mean(name, &unet[name], &a.unet[name], &b.unet[name]);
    assert_same("vae", &vae, &a.vae);
    assert_same("text encoder", &text, &a.text_encoder);
}

#[test]
fn add_difference_with_c_equal_to_b_gives_a() {
    let tmp = TempDir::new("add-difference");
    let (a_dir, b_dir) = (folder("tiny-sd1"), tmp.path("b"));
    model_b(&b_dir);
    let out = tmp.path("out.safetensors");
    let report = merge(&[
        s(&a_dir),
        s(&b_dir),
        "--add-difference",
        s(&b_dir),
        "--scale",
        "1.3",
        "-o",
        s(&out),
    ]);
    assert!(report.starts_with("merged: A + (B - C) x 1.3"), "{report}");
    assert_same_model("a + (b - b) * 1.3", &open(&out), &open(&a_dir));

    // C = A is the weighted sum, computed the same way.
    let (diff, sum) = (tmp.path("diff"), tmp.path("sum"));
    let (a, b) = (s(&a_dir), s(&b_dir));
    merge(&[
        a,
        b,
        "--add-difference",
        a,
        "--scale",
        "0.7",
        "-o",
        s(&diff),
    ]);
    merge(&[a, b, "--scale", "0.7", "-o", s(&sum)]);
    assert_same_model("a + (b - a) * 0.7", &open(&diff), &open(&sum));
}

#[test]
fn existing_output_is_refused_unless_forced() {
    let tmp = TempDir::new("overwrite");
    let a = folder("tiny-sd1");
    let file = tmp.path("out.safetensors");
    std::fs::write(&file, b"keep me").unwrap();
    let run = |extra: &[&str], out: &Path| {
        let mut all = vec![s(&a), s(&a), "--scale", "0.5", "-o", s(out)];
        all.extend_from_slice(extra);
        merge_output(&all)
    };

    let refused = run(&[], &file);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(s(&file)) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let dir = tmp.path("folder");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let refused = run(&[], &dir);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");

    // An empty folder is filled without --force.
    let empty = tmp.path("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(run(&[], &empty).status.success());
    assert_same_model("into an empty folder", &open(&empty), &open(&a));

    assert!(run(&["--force"], &file).status.success());
    assert_same_model("forced file", &open(&file), &open(&a));
    assert!(run(&["--force"], &dir).status.success());
    assert!(
        !dir.join("notes.txt").exists(),
        "the old folder is replaced"
    );
    assert_same_model("forced folder", &open(&dir), &open(&a));
    assert_eq!(tmp.entries(), ["empty", "folder", "out.safetensors"]);

    let ckpt = tmp.path("out.ckpt");
    let refused = run(&[], &ckpt);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains(".safetensors"));
}

#[test]
fn a_failing_merge_leaves_no_output() {
    let tmp = TempDir::new("failing");
    let (sd1, sd2) = (folder("tiny-sd1"), folder("tiny-sd2"));
    for out in ["out.safetensors", "out"] {
        let out = tmp.path(out);
        let failed = merge_output(&[s(&sd1), s(&sd2), "--scale", "0.5", "-o", s(&out)]);
        assert!(!failed.status.success());
        let err = String::from_utf8_lossy(&failed.stderr);
        // SD 1.x projects with 1x1 convolutions, SD 2.x with linear layers.
        assert!(
            err.contains("down_blocks.0.attentions.0.proj_in.weight") && err.contains("[8, 8]"),
            "{err}"
        );
        assert!(failed.stdout.is_empty());
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    // With --force over an existing output, a failure keeps the old one.
    let out = tmp.path("kept.safetensors");
    std::fs::write(&out, b"old").unwrap();
    let failed = merge_output(&[s(&sd1), s(&sd2), "--scale", "0.5", "--force", "-o", s(&out)]);
    assert!(!failed.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(tmp.entries(), ["kept.safetensors"]);

    let missing = root().join("fixtures/checkpoint/no-such-model.safetensors");
    let failed = merge_output(&[
        s(&sd1),
        s(&missing),
        "--scale",
        "0.5",
        "-o",
        s(&tmp.path("x")),
    ]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no-such-model.safetensors"));
    assert_eq!(tmp.entries(), ["kept.safetensors"]);
}
