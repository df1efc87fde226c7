//! Parity with diffusers 0.42.1: every scheduler, config and step count recorded by
//! `tools/fixtures/schedulers.py` (see `fixtures/scheduler/reference.json` for versions).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use sd_scheduler::{build, Scheduler, SchedulerConfig, SchedulerKind};
use serde_json::Value;

/// Final samples: relative L2 error bound of the brief (f32 loops of up to 99 model calls).
const SAMPLE_TOL: f64 = 1e-5;

struct Fixtures {
    reference: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixtures() -> Fixtures {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scheduler");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let tensors = candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu)
        .expect("tensors.safetensors");
    Fixtures {
        reference: serde_json::from_str(&text).expect("json"),
        tensors,
    }
}

impl Fixtures {
    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("missing tensor {key}"))
    }

    fn config(&self, name: &str, kind: &str) -> SchedulerConfig {
        let json = serde_json::to_string(&self.reference["configs"][name]).expect("config");
        let mut config = SchedulerConfig::from_json(&json).expect("parse config");
        if kind == "ddim-eta" {
            config.eta = self.reference["meta"]["ddim_eta"].as_f64().expect("eta");
        }
        config
    }

    fn noise(&self, i: usize) -> Tensor {
        self.tensor("noise_bank").get(i).expect("noise bank entry")
    }
}

fn kind_of(name: &str) -> SchedulerKind {
    name.trim_end_matches("-eta").parse().expect("kind")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float"))
        .collect()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let norm = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    (diff / norm).sqrt()
}

fn fake_model(x_in: &Tensor, t: f64) -> Tensor {
    x_in.affine(0.9, 0.1 * (t / 100.0).sin()).unwrap()
}

/// Runs the loop from `begin`, feeding noise from the bank in draw order; returns the final
/// sample, the sample after `mid_after` steps, and the number of draws.
fn run(
    fx: &Fixtures,
    s: &mut dyn Scheduler,
    mut x: Tensor,
    begin: usize,
    mid_after: Option<usize>,
) -> (Tensor, Option<Tensor>, usize) {
    let mut draws = 0;
    let mut mid = None;
    for i in begin..s.timesteps().len() {
        let x_in = s.scale_model_input(&x, i).unwrap();
        let eps = fake_model(&x_in, s.timesteps()[i]);
        let noise = s.noise_needed(i).then(|| {
            draws += 1;
            fx.noise(draws - 1)
        });
        x = s.step(i, &eps, &x, noise.as_ref()).unwrap();
        if Some(i + 1 - begin) == mid_after {
            mid = Some(x.clone());
        }
    }
    (x, mid, draws)
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-30))
        .fold(0.0, f64::max)
}

#[test]
fn alphas_cumprod_match_diffusers() {
    let fx = fixtures();
    for (name, schedule) in fx.reference["schedules"].as_object().unwrap() {
        let config = fx.config(name, "ddim");
        let ours = sd_scheduler::alphas_cumprod(
            &config,
            config.beta_start.unwrap_or(1e-4),
            config.beta_end.unwrap_or(0.02),
        )
        .unwrap();
        let err = max_rel(&ours, &floats(&schedule["alphas_cumprod"]));
        // diffusers' float32 linspace differs from ours in the last bit of some betas.
        assert!(
            err < 2e-6,
            "{name}: alphas_cumprod max relative error {err}"
        );
    }
}

#[test]
fn every_scheduler_matches_diffusers() {
    let fx = fixtures();
    let latents = fx.tensor("latents");
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut worst_timestep = 0.0f64;
    let mut failures = Vec::new();
    for case in fx.reference["cases"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let (cname, kname) = (
            case["config"].as_str().unwrap(),
            case["kind"].as_str().unwrap(),
        );
        let steps = case["steps"].as_u64().unwrap() as usize;
        let built = build(kind_of(kname), &fx.config(cname, kname), steps);
        if case.get("error").is_some() {
            assert!(
                built.is_err(),
                "{key}: diffusers fails ({}), we build",
                case["error"]
            );
            continue;
        }
        let mut s = built.unwrap_or_else(|e| panic!("{key}: {e}"));
        let karras = cname == "linspace_karras" && matches!(kname, "lms" | "euler" | "heun");
        let ts_err = max_abs(s.timesteps(), &floats(&case["timesteps"]));
        // Karras timesteps of the Euler family are fractional float32 values found by inverting
        // float32 log sigmas; numpy's SIMD float32 log may differ from ours in the last bit,
        // which moves a timestep by one float32 ulp (6.1e-5 at t in [512, 1000)): allow two.
        let ts_tol = if karras { 1.25e-4 } else { 1e-9 };
        worst_timestep = worst_timestep.max(ts_err);
        if ts_err > ts_tol {
            failures.push(format!(
                "{key}: timesteps differ by {ts_err}: {:?}",
                s.timesteps()
            ));
        }
        if let Some(sigmas) = case["sigmas"].as_array() {
            let expected: Vec<f64> = sigmas.iter().map(|v| v.as_f64().unwrap()).collect();
            let ours = s.sigmas().expect("sigmas");
            let err = if ours.len() == expected.len() {
                max_abs_rel(ours, &expected)
            } else {
                f64::INFINITY
            };
            if err > 1e-6 {
                failures.push(format!("{key}: sigmas differ by {err}"));
            }
        }
        let ins = case["init_noise_sigma"].as_f64().unwrap();
        if (s.init_noise_sigma() - ins).abs() > 1e-6 * ins {
            failures.push(format!(
                "{key}: init_noise_sigma {} vs {ins}",
                s.init_noise_sigma()
            ));
        }
        assert_eq!(
            s.order(),
            case["order"].as_u64().unwrap() as usize,
            "{key}: order"
        );
        let x = latents.affine(s.init_noise_sigma(), 0.0).unwrap();
        let mid_after = case["mid_after"].as_u64().map(|m| m as usize);
        let (final_x, mid, draws) = run(&fx, s.as_mut(), x, 0, mid_after);
        assert_eq!(
            draws,
            case["noise_calls"].as_u64().unwrap() as usize,
            "{key}: noise draws"
        );
        let mut err = rel_l2(&final_x, fx.tensor(&format!("{key}/final")));
        if let Some(mid) = mid {
            err = err.max(rel_l2(&mid, fx.tensor(&format!("{key}/mid"))));
        }
        let entry = worst
            .entry(kname.to_string())
            .or_insert((0.0, String::new()));
        if err > entry.0 {
            *entry = (err, key.to_string());
        }
        if err.is_nan() || err > SAMPLE_TOL {
            failures.push(format!("{key}: sample relative L2 error {err:e}"));
        }
    }
    eprintln!("largest timestep difference: {worst_timestep:e}");
    for (kind, (err, key)) in &worst {
        eprintln!("{kind:16} max relative L2 error {err:.2e} ({key})");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn img2img_loops_match_diffusers() {
    let fx = fixtures();
    let mut failures = Vec::new();
    for case in fx.reference["img2img"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let (cname, kname) = (
            case["config"].as_str().unwrap(),
            case["kind"].as_str().unwrap(),
        );
        let steps = case["steps"].as_u64().unwrap() as usize;
        let begin = case["begin_index"].as_u64().unwrap() as usize;
        let mut s = build(kind_of(kname), &fx.config(cname, kname), steps).unwrap();
        let start = s
            .add_noise(fx.tensor("x0"), fx.tensor("img2img_noise"), begin)
            .unwrap();
        let start_err = rel_l2(&start, fx.tensor(&format!("{key}/start")));
        let (final_x, _, draws) = run(&fx, s.as_mut(), start, begin, None);
        assert_eq!(
            draws,
            case["noise_calls"].as_u64().unwrap() as usize,
            "{key}: noise draws"
        );
        let err = rel_l2(&final_x, fx.tensor(&format!("{key}/final")));
        eprintln!("{key:40} add_noise {start_err:.2e} final {err:.2e}");
        if start_err.is_nan() || err.is_nan() || start_err > 1e-6 || err > SAMPLE_TOL {
            failures.push(format!(
                "{key}: add_noise error {start_err:e}, final error {err:e}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs_rel(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-6))
        .fold(0.0, f64::max)
}
