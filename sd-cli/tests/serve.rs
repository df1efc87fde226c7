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
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(frame.buffer_size());
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone());
    (pixels, text)
}

#[test]
fn serve_txt2img_is_sd_generates_png() {
    let server = Serving::start(&[]);
    let body = serde_json::json!({
        "prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": 10, "cfg_scale": 7.5,
        "seed": 42, "width": 64, "height": 64, "sampler_name": "Euler a",
    });
    let answer: serde_json::Value = ureq::post(&format!("{}/sdapi/v1/txt2img", server.url))
        .send_json(body)
        .unwrap()
        .into_json()
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(answer["images"][0].as_str().unwrap())
        .unwrap();
    let served = read_png(&png);

    let dir = TempDir::new("serve");
    let out = dir.path("cat.png");
    let model = folder("tiny-sd1");
    let generated = sd(&[
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
        "--scheduler",
        "euler-ancestral",
        "-q",
        "-o",
        s(&out),
    ]);
    assert!(generated.status.success());
    let expected = read_png(&std::fs::read(&out).unwrap());
    assert_eq!(served.0, expected.0, "pixels");
    assert_eq!(served.1, expected.1, "parameters");
    assert!(served
        .1
        .unwrap()
        .contains("Steps: 10, Sampler: Euler a, CFG scale: 7.5, Seed: 42"));
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
