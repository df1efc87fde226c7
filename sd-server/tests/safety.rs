//! Safe by default: credentials on every route when set, bodies / sizes / steps capped, model
//! names never paths, and every bad request a clear 4xx naming the field, after which the
//! server serves on.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

fn small_body() -> serde_json::Value {
    let mut body = base_body("Euler");
    body["steps"] = json!(2);
    body
}

#[test]
fn credentials_are_required_on_every_route_when_set() {
    let mut config = config();
    config.auth.api_key = Some("s3cret".into());
    config.auth.basic = sd_server::Auth::parse_basic("ann:pw").unwrap();
    let server = start(config);
    let url = server.url();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ann:pw")
    );
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/sdapi/v1/options"),
        ("GET", "/sdapi/v1/progress"),
        ("POST", "/sdapi/v1/interrupt"),
        ("POST", "/sdapi/v1/txt2img"),
        ("POST", "/v1/images/generations"),
        ("GET", "/no/such/route"),
    ] {
        let full = format!("{url}{path}");
        let body = (method == "POST").then_some("{}");
        let refused = send(method, &full, body, None);
        assert_eq!(refused.status, 401, "{method} {path}: {}", refused.body);
        assert_eq!(refused.body["error"], "Unauthorized");
        assert!(refused
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("www-authenticate") && v.starts_with("Basic")));
        let wrong = send(method, &full, body, Some("Bearer s3cre"));
        assert_eq!(wrong.status, 401, "{method} {path}");
        let wrong = send(method, &full, body, Some("Basic YW5uOnB3Mg=="));
        assert_eq!(wrong.status, 401, "{method} {path}");
    }
    for authorization in ["Bearer s3cret", basic.as_str()] {
        let answer = send(
            "GET",
            &format!("{url}/sdapi/v1/options"),
            None,
            Some(authorization),
        );
        assert_eq!(answer.status, 200, "{authorization}");
        assert_eq!(answer.body["sd_model_checkpoint"], "tiny-sd1");
        let answer = send(
            "POST",
            &format!("{url}/sdapi/v1/txt2img"),
            Some(&small_body().to_string()),
            Some(authorization),
        );
        assert_eq!(answer.status, 200, "{authorization}: {}", answer.body);
    }
    server.stop().unwrap();
}

#[test]
fn bad_requests_get_clear_4xx_and_the_server_serves_on() {
    let mut config = config();
    config.limits.max_body = 100_000;
    config.limits.max_pixels = 128 * 128;
    config.limits.max_steps = 20;
    let server = start(config);
    let url = server.url();
    let txt2img = format!("{url}/sdapi/v1/txt2img");

    let malformed = send("POST", &txt2img, Some("{\"prompt\": "), None);
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert_eq!(malformed.body["error"], "MalformedJson");
    assert!(malformed.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("the body is not valid JSON"));

    // Just over the cap: the server reads the whole body before it answers, so it closes a
    // drained connection. (Far over it, it answers 413 at the cap and closes with the rest
    // unread, and a client still writing may see a broken pipe before it reads the answer.)
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(100_000));
    assert_eq!(huge.len(), 100_014);
    let too_large = send("POST", &txt2img, Some(&huge), None);
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(
        too_large.body["detail"],
        "the request body is larger than the 100000 bytes this server accepts (--max-body)"
    );

    for (body, field, status, detail_start) in [
        (
            json!({"override_settings": {"sd_model_checkpoint": "tiny-sd2"}}),
            "override_settings.sd_model_checkpoint",
            422,
            "override_settings.sd_model_checkpoint: tiny-sd2 is not the loaded model (tiny-sd1)",
        ),
        (
            json!({"override_settings": {"sd_model_checkpoint": "../x"}}),
            "override_settings.sd_model_checkpoint",
            400,
            "override_settings.sd_model_checkpoint: \"../x\" is not a model name",
        ),
        (
            json!({"steps": "ten"}),
            "steps",
            422,
            "steps: invalid type: string \"ten\"",
        ),
        (
            json!({"cfg_scale": [7]}),
            "cfg_scale",
            422,
            "cfg_scale: invalid type: sequence",
        ),
        (
            json!({"width": 100, "height": 64}),
            "width",
            422,
            "width: 100 is not a positive multiple of 8",
        ),
        (
            json!({"width": 256, "height": 256}),
            "width",
            422,
            "width: 256x256 is 65536 pixels",
        ),
        (
            json!({"steps": 21}),
            "steps",
            422,
            "steps: 21 steps; this server runs at most 20",
        ),
        (
            json!({"sampler_name": "DPM++ SDE"}),
            "sampler_name",
            422,
            "sampler_name: \"DPM++ SDE\" is not a sampler",
        ),
        (
            json!({"sampler_name": "DDIM", "scheduler": "Karras"}),
            "scheduler",
            422,
            "scheduler: Karras with DDIM",
        ),
        (
            json!({"override_settings": {"CLIP_stop_at_last_layers": "2"}}),
            "override_settings.CLIP_stop_at_last_layers",
            422,
            "override_settings.CLIP_stop_at_last_layers: invalid type",
        ),
        (
            json!({"restore_faces": true}),
            "restore_faces",
            422,
            "restore_faces: face restoration is not available",
        ),
        (
            json!({"prompt": "<lora:missing:1> cat"}),
            "prompt",
            422,
            "prompt: ",
        ),
    ] {
        // Each case on top of a request that is good otherwise.
        let mut full = small_body();
        for (k, v) in body.as_object().unwrap() {
            full[k] = v.clone();
        }
        let answer = send("POST", &txt2img, Some(&full.to_string()), None);
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.body["field"], field, "{body}: {}", answer.body);
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(detail.starts_with(detail_start), "{body}: {detail}");
    }

    let options = format!("{url}/sdapi/v1/options");
    for name in [
        "../pipeline/tiny-sd2",
        "/etc/passwd",
        "..",
        "tiny-sd2/../tiny-sd1",
    ] {
        let body = json!({ "sd_model_checkpoint": name }).to_string();
        let answer = send("POST", &options, Some(&body), None);
        assert_eq!(answer.status, 400, "{name}: {}", answer.body);
        assert_eq!(answer.body["error"], "PathNotAllowed");
        assert_eq!(answer.body["field"], "sd_model_checkpoint");
    }
    let answer = send(
        "POST",
        &options,
        Some(r#"{"sd_model_checkpoint": "init.png"}"#),
        None,
    );
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body["detail"]
        .as_str()
        .unwrap()
        .contains("there are: tiny-sd1, tiny-sd1-inpaint, tiny-sd2"));
    let answer = send(
        "POST",
        &options,
        Some(r#"{"sd_model_checkpoint": 3}"#),
        None,
    );
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body["field"], "sd_model_checkpoint");
    let answer = send(
        "POST",
        &options,
        Some(r#"{"CLIP_stop_at_last_layers": 13}"#),
        None,
    );
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body["field"], "CLIP_stop_at_last_layers");
    assert_eq!(
        get(&url, "/sdapi/v1/options").body["sd_model_checkpoint"],
        "tiny-sd1"
    );

    let answer = get(&url, "/sdapi/v2/nothing");
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["detail"], "no route /sdapi/v2/nothing");

    // After all that, a good request is served (naming the resident model is fine).
    let mut good = small_body();
    good["override_settings"] = json!({"sd_model_checkpoint": "tiny-sd1"});
    let answer = send("POST", &txt2img, Some(&good.to_string()), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        server.stats().failed,
        1,
        "only the LoRA tag reached the worker"
    );
    server.stop().unwrap();
}
