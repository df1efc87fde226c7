//! The web page at `/`: its form fields and the API routes its script calls are there, and in
//! headless Chromium (when installed) it lists the samplers, runs a job and shows the result
//! with its parameters.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn the_page_has_its_fields_and_calls_the_api() {
    let server = start(config());
    let page = get(&server.url(), "/");
    assert_eq!(page.status, 200);
    assert!(page
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/html")));
    let html = page.body.as_str().unwrap();
    for id in [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "steps",
        "cfg_scale",
        "sampler_name",
        "scheduler",
        "seed",
        "preview",
        "result",
        "parameters",
        "interrupt",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    for route in [
        "\"/sdapi/v1\"",
        "/txt2img",
        "/progress",
        "/samplers",
        "/interrupt",
    ] {
        assert!(html.contains(route), "the script does not call {route}");
    }
    server.stop().unwrap();
}

/// The Chromium binary, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn the_page_runs_a_job_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let server = start(config());
    let url = server.url();
    // A job through the API first: the page then works on a server that has run one.
    let mut body = base_body("Euler");
    body["steps"] = json!(2);
    assert_eq!(post(&url, "/sdapi/v1/txt2img", &body).status, 200);

    let page = format!(
        "{url}/?prompt=a%20red%20cube&width=64&height=64&steps=3&seed=7&sampler_name=DDIM&generate=1"
    );
    let profile = std::env::temp_dir().join(format!("sd-server-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &page])
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The script filled the sampler list from /samplers.
    assert!(dom.contains("<option>DPM++ 2M</option>"), "{dom}");
    // It ran the job and shows the picture with its parameters.
    assert!(
        dom.contains("id=\"result\" alt=\"result\" src=\"data:image/png;base64,"),
        "{dom}"
    );
    assert!(
        dom.contains("a red cube\nSteps: 3, Sampler: DDIM, CFG scale: 7, Seed: 7, Size: 64x64"),
        "{dom}"
    );
    assert!(
        dom.contains("<div id=\"status\" class=\"\">done</div>"),
        "{dom}"
    );
    assert_eq!(server.stats().completed, 2);
    server.stop().unwrap();
}
