//! What the sd-server integration tests share: a server on 127.0.0.1 port 0 over the tiny
//! fixture models (`fixtures/pipeline/`, tools/fixtures/pipeline.py), and a real HTTP client.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use sd_server::{RunningServer, Server, ServerConfig};
use serde_json::Value;

/// A file or model folder under `fixtures/pipeline/`.
pub fn pipeline_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/pipeline")
        .join(name)
}

/// A config serving `fixtures/pipeline/` (tiny-sd1 first) on a free local port.
pub fn config() -> ServerConfig {
    let mut config = ServerConfig::new(pipeline_fixture(""));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A server with `config`, running on its own thread.
pub fn start(config: ServerConfig) -> RunningServer {
    Server::bind(config).unwrap().spawn().unwrap()
}

/// The base case of cases.json (prompt, negative, 10 steps, CFG 7.5, seed 42, 64x64) in
/// A1111's field names, with `sampler`.
pub fn base_body(sampler: &str) -> Value {
    serde_json::json!({
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
        "steps": 10,
        "cfg_scale": 7.5,
        "seed": 42,
        "width": 64,
        "height": 64,
        "sampler_name": sampler,
    })
}

/// An HTTP answer: status and body (JSON when it parses, else a string value).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

fn answer(response: ureq::Response) -> Answer {
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|h| {
            let v = response.header(&h).unwrap_or_default().to_string();
            (h, v)
        })
        .collect();
    let text = response.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

/// Sends `method url` with an optional raw body and `Authorization` header.
pub fn send(method: &str, url: &str, body: Option<&str>, authorization: Option<&str>) -> Answer {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut request = agent.request(method, url);
    if let Some(a) = authorization {
        request = request.set("Authorization", a);
    }
    let result = match body {
        Some(b) => request
            .set("Content-Type", "application/json")
            .send_string(b),
        None => request.call(),
    };
    match result {
        Ok(r) => answer(r),
        Err(ureq::Error::Status(_, r)) => answer(r),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// `GET base + path`.
pub fn get(base: &str, path: &str) -> Answer {
    send("GET", &format!("{base}{path}"), None, None)
}

/// `POST base + path` with `body` as JSON.
pub fn post(base: &str, path: &str, body: &Value) -> Answer {
    send(
        "POST",
        &format!("{base}{path}"),
        Some(&body.to_string()),
        None,
    )
}

/// The bytes of a base64 string.
pub fn unbase64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Base64 of a file's bytes.
pub fn base64_file(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Pixels (RGB), size and the `parameters` text of PNG bytes.
pub fn read_png(bytes: &[u8]) -> (Vec<u8>, (u32, u32), Option<String>) {
    let image = sd_pipeline::image_crate::load_from_memory(bytes)
        .unwrap()
        .to_rgb8();
    let text = sd_pipeline::png::read_parameters(bytes).unwrap();
    (image.as_raw().clone(), image.dimensions(), text)
}

/// Polls `/sdapi/v1/progress` until `done` holds for its body, or panics after `timeout`.
pub fn wait_for(base: &str, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let p = get(base, "/sdapi/v1/progress?skip_current_image=true");
        assert_eq!(p.status, 200);
        if done(&p.body) {
            return p.body;
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: still {} after {timeout:?}",
            p.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
