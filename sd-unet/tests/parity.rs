//! sd-unet against diffusers 0.42.1: tiny random UNets made by `tools/fixtures/unet.py`
//! (fixtures/unet/<config>/), their inputs and float32 CPU outputs in `io.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use sd_unet::{AttentionMode, UNet2DConditionConfig, UNet2DConditionModel};

const CONFIGS: [&str; 3] = ["sd1-tiny", "sd2-tiny", "inpaint-tiny"];
/// (case, timestep) as written by the script; "weighted" reuses the "square" inputs.
const CASES: [(&str, f64); 3] = [("square", 981.0), ("odd", 1.0), ("wide_long_prompt", 500.5)];

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/unet")
        .join(name)
}

struct Fixture {
    model: UNet2DConditionModel,
    io: HashMap<String, Tensor>,
}

fn load(name: &str, dtype: DType) -> Result<Fixture> {
    let dir = fixture_dir(name);
    let config = UNet2DConditionConfig::from_file(dir.join("config.json"))?;
    let weights = [dir.join("diffusion_pytorch_model.safetensors")];
    let model = UNet2DConditionModel::from_safetensors(&config, &weights, dtype, &Device::Cpu)?;
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu)?;
    Ok(Fixture { model, io })
}

impl Fixture {
    fn get(&self, key: &str) -> Result<&Tensor> {
        self.io
            .get(key)
            .with_context(|| format!("fixture tensor {key}"))
    }

    /// Runs one case and returns (output as f32, reference).
    fn run(&self, case: &str, timestep: f64) -> Result<(Tensor, Tensor)> {
        let (inputs, weights) = if case == "weighted" {
            ("square", Some(self.get("weighted.token_weights")?))
        } else {
            (case, None)
        };
        let sample = self.get(&format!("{inputs}.sample"))?;
        let ehs = self.get(&format!("{inputs}.encoder_hidden_states"))?;
        let out = self
            .model
            .forward_with_token_weights(sample, timestep, ehs, weights)?;
        Ok((
            out.to_dtype(DType::F32)?,
            self.get(&format!("{case}.out"))?.clone(),
        ))
    }

    fn all_cases(&self) -> Vec<(&'static str, f64)> {
        let mut cases = CASES.to_vec();
        cases.push(("weighted", 981.0));
        cases
    }
}

/// |a - b|_2 / |b|_2
fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let num = (a - b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    let den = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(num / den)
}

/// Worst relative L2 error over every case of `name` in `dtype`, asserting `bound` per case.
fn check_config(name: &str, dtype: DType, mode: AttentionMode, bound: f32) -> Result<f32> {
    let mut fx = load(name, dtype)?;
    fx.model.set_attention_mode(mode);
    let mut worst = 0f32;
    for (case, t) in fx.all_cases() {
        let (got, want) = fx.run(case, t)?;
        let err = rel_l2(&got, &want)?;
        println!("{name} {dtype:?} {mode:?} {case}: rel L2 {err:.3e}");
        assert!(
            err < bound,
            "{name} {case} {dtype:?}: rel L2 {err} >= {bound}"
        );
        worst = worst.max(err);
    }
    Ok(worst)
}

#[test]
fn f32_matches_diffusers_on_every_config_and_case() -> Result<()> {
    for name in CONFIGS {
        let worst = check_config(name, DType::F32, AttentionMode::Full, 1e-4)?;
        println!("{name} f32 worst {worst:.3e}");
    }
    Ok(())
}

#[test]
fn fused_attention_matches_diffusers() -> Result<()> {
    // The default mode (sd-kernels' attention): the same bounds as the full score tensor.
    for name in CONFIGS {
        let f32 = check_config(name, DType::F32, AttentionMode::Fused, 1e-4)?;
        let bf16 = check_config(name, DType::BF16, AttentionMode::Fused, 6e-2)?;
        println!("{name} fused worst f32 {f32:.3e} bf16 {bf16:.3e}");
    }
    Ok(())
}

#[test]
fn sliced_attention_matches_diffusers() -> Result<()> {
    // Chunk sizes that divide nothing here (rows are 2x2=4..2x4=8, queries 64/16/4/45/...).
    let mode = AttentionMode::Sliced {
        batch_heads: 3,
        query: 7,
    };
    for name in CONFIGS {
        check_config(name, DType::F32, mode, 1e-4)?;
    }
    Ok(())
}

#[test]
fn sliced_attention_equals_full_for_non_dividing_chunks() -> Result<()> {
    let mut fx = load("sd2-tiny", DType::F32)?;
    let cases = fx.all_cases();
    let full = cases
        .iter()
        .map(|(c, t)| fx.run(c, *t).map(|r| r.0))
        .collect::<Result<Vec<_>>>()?;
    let modes = [
        AttentionMode::Sliced {
            batch_heads: 3,
            query: 0,
        },
        AttentionMode::Sliced {
            batch_heads: 0,
            query: 5,
        },
        AttentionMode::Sliced {
            batch_heads: 7,
            query: 3,
        },
        AttentionMode::Sliced {
            batch_heads: 1,
            query: 1,
        },
        AttentionMode::Sliced {
            batch_heads: 1000,
            query: 1000,
        },
    ];
    for mode in modes {
        fx.model.set_attention_mode(mode);
        for ((case, t), want) in cases.iter().zip(&full) {
            let (got, _) = fx.run(case, *t)?;
            let err = rel_l2(&got, want)?;
            assert!(
                err < 1e-6,
                "{mode:?} {case}: sliced differs from full by {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn half_precision_stays_close_to_the_f32_reference() -> Result<()> {
    // Weights, inputs and every intermediate are rounded to 11 (f16) or 8 (bf16) significant
    // bits; over the ~40 layers of the tiny models this measured at most 3.0e-3 (f16) and
    // 2.0e-2 (bf16) relative L2 against diffusers' f32 output. Bounds: about 3x that.
    for name in CONFIGS {
        let f16 = check_config(name, DType::F16, AttentionMode::Full, 1e-2)?;
        let bf16 = check_config(name, DType::BF16, AttentionMode::Full, 6e-2)?;
        println!("{name} worst f16 {f16:.3e} bf16 {bf16:.3e}");
    }
    Ok(())
}

#[test]
fn token_weights_change_the_output_and_ones_do_not() -> Result<()> {
    let fx = load("sd1-tiny", DType::F32)?;
    let sample = fx.get("square.sample")?;
    let ehs = fx.get("square.encoder_hidden_states")?;
    let plain = fx.model.forward(sample, 981.0, ehs)?;
    let ones = Tensor::ones((2, 77), DType::F32, &Device::Cpu)?;
    let with_ones = fx
        .model
        .forward_with_token_weights(sample, 981.0, ehs, Some(&ones))?;
    assert!(rel_l2(&with_ones, &plain)? < 1e-6);
    let (weighted, want) = fx.run("weighted", 981.0)?;
    assert!(
        rel_l2(&weighted, &plain)? > 1e-2,
        "weights had no visible effect"
    );
    assert!(rel_l2(&weighted, &want)? < 1e-4);
    Ok(())
}
