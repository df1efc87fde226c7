//! The job queue seen through HTTP: progress moves while a job runs, `/interrupt` stops it, a
//! full queue answers 503, and a client that disconnects cancels its job.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A job long enough to watch: 900 steps of the tiny model at 128x128.
fn long_body() -> Value {
    let mut body = base_body("Euler");
    body["steps"] = json!(900);
    body["width"] = json!(128);
    body["height"] = json!(128);
    body
}

fn long_config() -> sd_server::ServerConfig {
    let mut config = config();
    config.limits.max_steps = 1000;
    config.queue_length = 1;
    config
}

#[test]
fn progress_moves_interrupt_stops_and_a_full_queue_refuses() {
    let server = start(long_config());
    let url = server.url();
    let idle = get(&url, "/sdapi/v1/progress").body;
    assert_eq!(idle["progress"], 0.0);
    assert_eq!(idle["state"]["job_count"], 0);
    assert_eq!(idle["current_image"], Value::Null);

    let long = {
        let url = url.clone();
        std::thread::spawn(move || post(&url, "/sdapi/v1/txt2img", &long_body()))
    };
    let first = wait_for(&url, Duration::from_secs(60), "the long job starts", |p| {
        p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 2
    });
    assert_eq!(first["state"]["sampling_steps"], 900);
    println!("long job: {} s left at step 2", first["eta_relative"]);
    assert_eq!(first["state"]["job"], "a photo of a cat");
    let step = first["state"]["sampling_step"].as_u64().unwrap();
    let later = wait_for(&url, Duration::from_secs(60), "progress moves", |p| {
        p["state"]["sampling_step"].as_u64().unwrap_or(0) > step
    });
    let fraction = later["progress"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction < 1.0, "{later}");
    assert!(later["eta_relative"].as_f64().unwrap() > 0.0, "{later}");
    assert!(
        later["textinfo"]
            .as_str()
            .unwrap()
            .starts_with("Batch 1/1, step "),
        "{later}"
    );
    // The live preview: the predicted picture at the latest step, at the image's size.
    let with_image = get(&url, "/sdapi/v1/progress").body;
    let (_, size, _) = read_png(&unbase64(with_image["current_image"].as_str().unwrap()));
    assert_eq!(size, (128, 128));

    // One job may wait behind the running one (--queue 1); the next is refused.
    let waiting = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut body = base_body("Euler");
            body["steps"] = json!(2);
            post(&url, "/sdapi/v1/txt2img", &body)
        })
    };
    wait_for(&url, Duration::from_secs(30), "the second job waits", |p| {
        p["state"]["job_count"] == 2
    });
    let refused = post(&url, "/sdapi/v1/txt2img", &base_body("Euler"));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"], "QueueFull");
    assert_eq!(
        refused.body["detail"],
        "the job queue is full (1 jobs waiting); try again later"
    );

    let started = Instant::now();
    let answer = post(&url, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(answer.body, json!({"interrupted": true}));
    let long = long.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(long.status, 409, "{}", long.body);
    let detail = long.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("interrupted at step "), "{detail}");
    let stopped_at: u64 = detail["interrupted at step ".len()..]
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(stopped_at > step && stopped_at < 900, "{detail}");

    // The waiting job runs next, and the server goes idle.
    let waiting = waiting.join().unwrap();
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    wait_for(&url, Duration::from_secs(10), "idle", |p| {
        p["state"]["job_count"] == 0
    });
    assert_eq!(
        post(&url, "/sdapi/v1/interrupt", &json!({})).body,
        json!({"interrupted": false})
    );
    let stats = server.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.refused,
            stats.cancelled,
            stats.completed
        ),
        (2, 1, 1, 1),
        "{stats:?}"
    );
    server.stop().unwrap();
}

#[test]
fn a_client_that_disconnects_cancels_its_job() {
    let server = start(long_config());
    let url = server.url();
    let impatient = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1500))
        .build();
    let result = impatient
        .post(&format!("{url}/sdapi/v1/txt2img"))
        .send_string(&long_body().to_string());
    assert!(result.is_err(), "a 900-step job answered within 1.5 s");
    // The job stops at its next step instead of running its 900.
    let started = Instant::now();
    wait_for(
        &url,
        Duration::from_secs(20),
        "the abandoned job stops",
        |p| p["state"]["job_count"] == 0,
    );
    println!(
        "abandoned job stopped {:?} after the client left",
        started.elapsed()
    );
    let stats = server.stats();
    assert_eq!((stats.cancelled, stats.completed), (1, 0), "{stats:?}");

    // A job whose client leaves while it waits is skipped, never run.
    let running = {
        let url = url.clone();
        std::thread::spawn(move || post(&url, "/sdapi/v1/txt2img", &long_body()))
    };
    wait_for(&url, Duration::from_secs(30), "the long job runs", |p| {
        p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1
    });
    let result = impatient
        .post(&format!("{url}/sdapi/v1/txt2img"))
        .send_string(&base_body("Euler").to_string());
    assert!(
        result.is_err(),
        "a job behind a 900-step one answered within 1.5 s"
    );
    assert_eq!(server.stats().accepted, 3);
    post(&url, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(running.join().unwrap().status, 409);
    wait_for(&url, Duration::from_secs(20), "the queue empties", |p| {
        p["state"]["job_count"] == 0
    });
    let stats = server.stats();
    assert_eq!((stats.cancelled, stats.completed), (3, 0), "{stats:?}");

    // The server serves on.
    let mut body = base_body("Euler");
    body["steps"] = json!(2);
    assert_eq!(post(&url, "/sdapi/v1/txt2img", &body).status, 200);
    server.stop().unwrap();
}

#[test]
fn an_idle_server_takes_a_job_even_with_no_queue() {
    let mut config = config();
    config.queue_length = 0;
    let server = start(config);
    let mut body = base_body("Euler");
    body["steps"] = json!(2);
    let answer = post(&server.url(), "/sdapi/v1/txt2img", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.stats().completed, 1);
    server.stop().unwrap();
}
