//! `TorchRng` against torch's own numbers (fixtures/rng, made by tools/fixtures/torch_rng.py):
//! every case seeds a generator, makes its draws in order, and must give torch's bits exactly.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use sd_pipeline::{randn_per_sample, NormalKernel, TorchRng};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rng")
}

struct Fixtures {
    cases: Vec<Value>,
    tensors: HashMap<String, Tensor>,
}

fn load() -> Result<Fixtures> {
    let dir = fixture_dir();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let cases = json["cases"].as_array().context("cases")?.clone();
    let tensors = candle_core::safetensors::load(dir.join("torch_rng.safetensors"), &Device::Cpu)?;
    Ok(Fixtures { cases, tensors })
}

fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" => DType::F64,
        other => bail!("unknown dtype {other}"),
    })
}

fn shape(draw: &Value) -> Result<Vec<usize>> {
    draw["shape"]
        .as_array()
        .context("shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).context("dim"))
        .collect()
}

/// Number of elements whose bits differ, and the largest absolute difference.
fn compare(got: &Tensor, want: Option<&Tensor>) -> Result<(usize, f64)> {
    let got = got.flatten_all()?;
    let Some(want) = want else {
        // torch's empty draws are not stored.
        return Ok((got.elem_count(), 0.0));
    };
    if got.dtype() != want.dtype() || got.elem_count() != want.elem_count() {
        bail!(
            "got {:?} x {}, want {:?} x {}",
            got.dtype(),
            got.elem_count(),
            want.dtype(),
            want.elem_count()
        );
    }
    // Widening to f64 is exact for every dtype here, so equal f64 bits mean equal bits.
    let g = got.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let w = want.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut differ = 0;
    let mut max = 0f64;
    for (a, b) in g.iter().zip(&w) {
        if a.to_bits() != b.to_bits() {
            differ += 1;
            max = max.max((a - b).abs());
        }
    }
    Ok((differ, max))
}

/// Runs every case whose kernel is `kernel`; returns a line per case that does not match exactly.
fn mismatches(kernel: &str) -> Result<(usize, Vec<String>)> {
    let fx = load()?;
    let mut checked = 0;
    let mut bad = Vec::new();
    for case in fx.cases.iter().filter(|c| c["kernel"] == kernel) {
        let name = case["name"].as_str().context("name")?;
        let k = if kernel == "avx2" {
            NormalKernel::Avx2
        } else {
            NormalKernel::Libm
        };
        let draws = case["draws"].as_array().context("draws")?;
        let mut results = Vec::new();
        if case["via"] == "diffusers" {
            let d = &draws[0];
            let (shape, dt) = (shape(d)?, dtype(d["dtype"].as_str().context("dtype")?)?);
            let t = match &case["seed"] {
                Value::Array(seeds) => {
                    let seeds: Vec<u64> = seeds.iter().filter_map(Value::as_u64).collect();
                    randn_per_sample(&mut TorchRng::from_seeds(&seeds), &shape, &Device::Cpu, dt)?
                }
                seed => TorchRng::new(seed.as_u64().context("seed")?).randn_tensor(
                    &shape,
                    &Device::Cpu,
                    dt,
                )?,
            };
            results.push((d, t));
        } else {
            let mut rng = TorchRng::with_kernel(case["seed"].as_u64().context("seed")?, k);
            for d in draws {
                let (shape, dt) = (shape(d)?, dtype(d["dtype"].as_str().context("dtype")?)?);
                let t = match d["op"].as_str() {
                    Some("randn") => rng.randn_tensor(&shape, &Device::Cpu, dt)?,
                    Some("rand") => rng.rand_tensor(&shape, &Device::Cpu, dt)?,
                    other => bail!("unknown op {other:?}"),
                };
                assert_eq!(t.dims(), shape.as_slice(), "{name}");
                results.push((d, t));
            }
        }
        for (i, (d, t)) in results.iter().enumerate() {
            let key = d["tensor"].as_str().context("tensor")?;
            let (differ, max) = compare(t, fx.tensors.get(key))?;
            checked += t.elem_count();
            if differ > 0 {
                bad.push(format!(
                    "{name} draw {i}: {differ}/{} differ, max |diff| {max:e}",
                    t.elem_count()
                ));
            }
        }
    }
    Ok((checked, bad))
}

#[test]
fn avx2_kernel_matches_torch_bit_for_bit() -> Result<()> {
    let (checked, bad) = mismatches("avx2")?;
    assert!(checked > 40_000, "only {checked} values checked");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    Ok(())
}

#[test]
fn libm_kernel_matches_torch_default_capability() -> Result<()> {
    let (checked, bad) = mismatches("default")?;
    assert!(checked > 300, "only {checked} values checked");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    Ok(())
}
