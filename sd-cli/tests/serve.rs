//! `sd serve`, run as a user runs it: the PNG its txt2img answers is `sd generate`'s, pixel for
//! pixel and in its `parameters` text, and bad arguments are named.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use common::{folder, s, sd, TempDir};

/// `sd serve` on a free port; kills the process when dropped.
struct Serving {
    child: Child,
    url: String,
}

impl Serving {
    fn start(extra: &[&str]) -> Self {
        let models = folder("");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sd"))
            .args(["serve", "--models-dir", s(&models), "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sd serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("sd serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Serving { child, url }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pixels and the `parameters` text of PNG bytes.
fn read_png(bytes: &[u8]) -> (Vec<u8>, Option<String>) {
    let image = sd_pipeline::image_crate::load_from_memory(bytes)
        .unwrap()
        .to_rgb8();
    let text = sd_pipeline::png::read_parameters(bytes).unwrap();
    (image.into_raw(), text)
}

/// The first PNG the server answers `route` with for `body`: pixels and parameters.
fn served(server: &Serving, route: &str, body: serde_json::Value) -> (Vec<u8>, Option<String>) {
    let answer: serde_json::Value = ureq::post(&format!("{}{route}", server.url))
        .send_json(body)
        .unwrap()
        .into_json()
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(answer["images"][0].as_str().unwrap())
        .unwrap();
    read_png(&png)
}

/// `sd generate` on the base case (tiny-sd1, 10 steps, seed 42, 64x64) with `extra` arguments.
fn generated(extra: &[&str]) -> (Vec<u8>, Option<String>) {
    let dir = TempDir::new("serve");
    let out = dir.path("cat.png");
    let model = folder("tiny-sd1");
    let mut args = vec![
        "generate",
        "a photo of a cat",
        "--model",
        s(&model),
        "--negative-prompt",
        "blurry",
        "--steps",
        "10",
        "--seed",
        "42",
        "--width",
        "64",
        "--height",
        "64",
        "-q",
        "-o",
        s(&out),
    ];
    args.extend_from_slice(extra);
    let run = sd(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    read_png(&std::fs::read(&out).unwrap())
}

#[test]
fn serve_answers_sd_generates_pngs() {
    let server = Serving::start(&[]);
    let base = serde_json::json!({
        "prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": 10, "cfg_scale": 7.5,
        "seed": 42, "width": 64, "height": 64, "sampler_name": "Euler a",
    });
    let txt2img = served(&server, "/sdapi/v1/txt2img", base.clone());
    let expected = generated(&["--scheduler", "euler-ancestral"]);
    assert_eq!(txt2img.0, expected.0, "txt2img pixels");
    assert_eq!(txt2img.1, expected.1, "txt2img parameters");
    assert!(txt2img
        .1
        .unwrap()
        .contains("Steps: 10, Sampler: Euler a, CFG scale: 7.5, Seed: 42"));

    let init = folder("init.png");
    let mut body = base;
    body["sampler_name"] = "DDIM".into();
    body["denoising_strength"] = 0.6.into();
    body["init_images"] = serde_json::json!([
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&init).unwrap())
    ]);
    let img2img = served(&server, "/sdapi/v1/img2img", body);
    let expected = generated(&[
        "--scheduler",
        "ddim",
        "--init-image",
        s(&init),
        "--strength",
        "0.6",
    ]);
    assert_eq!(img2img.0, expected.0, "img2img pixels");
    assert_eq!(img2img.1, expected.1, "img2img parameters");
}

#[test]
fn serve_names_bad_arguments() {
    for (args, expected) in [
        (
            vec!["serve", "--models-dir", "/no/such/dir"],
            "--models-dir /no/such/dir: cannot read it",
        ),
        (
            vec!["serve", "--models-dir", ".", "--listen", "everywhere"],
            "--listen everywhere: not an IP address",
        ),
        (
            vec!["serve", "--models-dir", ".", "--api-auth", "nopassword"],
            "--api-auth: \"nopassword\" is not user:password",
        ),
    ] {
        let out = sd(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let models = folder("");
    let out = sd(&[
        "serve",
        "--models-dir",
        s(&models),
        "--model",
        "../tiny-sd1",
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--model ../tiny-sd1: "), "{err}");
    assert!(err.contains("paths are not accepted"), "{err}");
}
