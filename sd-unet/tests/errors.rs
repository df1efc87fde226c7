//! Bad input gives a typed error that names what is wrong.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use sd_unet::{Error, PerBlock, UNet2DConditionConfig, UNet2DConditionModel};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/unet/sd1-tiny")
}

fn config() -> Result<UNet2DConditionConfig> {
    Ok(UNet2DConditionConfig::from_file(dir().join("config.json"))?)
}

fn model() -> Result<UNet2DConditionModel> {
    let weights = [dir().join("diffusion_pytorch_model.safetensors")];
    Ok(UNet2DConditionModel::from_safetensors(
        &config()?,
        &weights,
        DType::F32,
        &Device::Cpu,
    )?)
}

fn weights() -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        dir().join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )?)
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sd-unet-test-{}-{name}", std::process::id()))
}

const KEY: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";

#[test]
fn wrong_input_shapes_are_named() -> Result<()> {
    let unet = model()?;
    let dev = Device::Cpu;
    let ehs = Tensor::zeros((1, 77, 16), DType::F32, &dev)?;
    let nine = Tensor::zeros((1, 9, 8, 8), DType::F32, &dev)?;
    assert!(matches!(
        unet.forward(&nine, 1.0, &ehs),
        Err(Error::SampleShape { expected_channels: 4, got }) if got == [1, 9, 8, 8]
    ));
    let sample = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev)?;
    let wide = Tensor::zeros((1, 77, 24), DType::F32, &dev)?;
    assert!(matches!(
        unet.forward(&sample, 1.0, &wide),
        Err(Error::EncoderHiddenStatesShape {
            expected_dim: 16,
            ..
        })
    ));
    let batch2 = Tensor::zeros((2, 77, 16), DType::F32, &dev)?;
    assert!(matches!(
        unet.forward(&sample, 1.0, &batch2),
        Err(Error::EncoderHiddenStatesShape { batch: 1, .. })
    ));
    let short = Tensor::ones((1, 76), DType::F32, &dev)?;
    assert!(matches!(
        unet.forward_with_token_weights(&sample, 1.0, &ehs, Some(&short)),
        Err(Error::TokenWeightsShape {
            batch: 1,
            tokens: 77,
            ..
        })
    ));
    assert!(matches!(
        unet.forward(&sample, f64::NAN, &ehs),
        Err(Error::Timestep(_))
    ));
    Ok(())
}

#[test]
fn missing_tensor_names_tensor_and_file() -> Result<()> {
    let mut w = weights()?;
    w.remove(KEY);
    let path = temp_file("missing.safetensors");
    candle_core::safetensors::save(&w, &path)?;
    let err =
        UNet2DConditionModel::from_safetensors(&config()?, &[&path], DType::F32, &Device::Cpu);
    std::fs::remove_file(&path)?;
    match err {
        Err(e @ Error::MissingTensor { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(KEY) && msg.contains("missing.safetensors"),
                "{msg}"
            );
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    Ok(())
}

#[test]
fn wrong_shape_and_dtype_name_tensor_and_file() -> Result<()> {
    let mut w = weights()?;
    w.insert(
        KEY.into(),
        Tensor::zeros((16, 17), DType::F32, &Device::Cpu)?,
    );
    let path = temp_file("shape.safetensors");
    candle_core::safetensors::save(&w, &path)?;
    let err =
        UNet2DConditionModel::from_safetensors(&config()?, &[&path], DType::F16, &Device::Cpu);
    std::fs::remove_file(&path)?;
    match err {
        Err(Error::TensorShape {
            tensor,
            file,
            expected,
            got,
        }) => {
            assert_eq!(
                (tensor.as_str(), expected, got),
                (KEY, vec![16, 16], vec![16, 17])
            );
            assert_eq!(file, path);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }

    let mut w = weights()?;
    w.insert(
        KEY.into(),
        Tensor::zeros((16, 16), DType::I64, &Device::Cpu)?,
    );
    let path = temp_file("dtype.safetensors");
    candle_core::safetensors::save(&w, &path)?;
    let err =
        UNet2DConditionModel::from_safetensors(&config()?, &[&path], DType::F32, &Device::Cpu);
    std::fs::remove_file(&path)?;
    match err {
        Err(Error::TensorDtype {
            tensor,
            file,
            dtype,
        }) => {
            assert_eq!((tensor.as_str(), file), (KEY, path));
            assert!(dtype.contains("I64"), "{dtype}");
        }
        other => panic!("expected TensorDtype, got {other:?}"),
    }
    Ok(())
}

#[test]
fn weights_split_over_two_files_load() -> Result<()> {
    let w = weights()?;
    let (a, b): (HashMap<_, _>, HashMap<_, _>) =
        w.into_iter().partition(|(k, _)| k.starts_with("down"));
    let (pa, pb) = (temp_file("a.safetensors"), temp_file("b.safetensors"));
    candle_core::safetensors::save(&a, &pa)?;
    candle_core::safetensors::save(&b, &pb)?;
    let built =
        UNet2DConditionModel::from_safetensors(&config()?, &[&pa, &pb], DType::F32, &Device::Cpu);
    std::fs::remove_file(&pa)?;
    std::fs::remove_file(&pb)?;
    built?;
    Ok(())
}

#[test]
fn config_errors_are_named() -> Result<()> {
    let missing = UNet2DConditionConfig::from_file("/nonexistent/unet/config.json");
    assert!(
        matches!(missing, Err(Error::ConfigFile { path, .. }) if path.ends_with("unet/config.json"))
    );

    let sdxl_like = temp_file("config.json");
    std::fs::write(&sdxl_like, r#"{"addition_embed_type": "text_time"}"#)?;
    let err = UNet2DConditionConfig::from_file(&sdxl_like);
    std::fs::remove_file(&sdxl_like)?;
    assert!(matches!(
        err,
        Err(Error::UnsupportedConfig {
            key: "addition_embed_type",
            ..
        })
    ));

    let bad_list = UNet2DConditionConfig {
        attention_head_dim: PerBlock::Each(vec![8, 8]),
        ..Default::default()
    };
    assert!(
        matches!(bad_list.validate(), Err(Error::InvalidConfig(m)) if m.contains("attention_head_dim"))
    );
    let bad_heads = UNet2DConditionConfig {
        attention_head_dim: PerBlock::One(7),
        ..Default::default()
    };
    assert!(matches!(bad_heads.validate(), Err(Error::InvalidConfig(_))));
    Ok(())
}
