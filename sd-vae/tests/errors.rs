//! Bad weights and bad inputs give typed errors that say what is wrong, never a panic.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{config, load, weights};
use sd_vae::{AutoencoderKl, AutoencoderKlConfig, Error, TileOptions};

/// Writes the sd1 weights, changed by `edit`, to a fresh file and tries to load it.
fn load_edited(tag: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> (PathBuf, Error) {
    let mut ts = candle_core::safetensors::load(weights("sd1"), &Device::Cpu).unwrap();
    edit(&mut ts);
    let dir = std::env::temp_dir().join(format!("sd-vae-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vae.safetensors");
    candle_core::safetensors::save(&ts, &file).unwrap();
    let result =
        AutoencoderKl::from_safetensors(&config("sd1"), &[&file], DType::F32, &Device::Cpu);
    std::fs::remove_dir_all(&dir).unwrap();
    match result {
        Ok(_) => panic!("{tag}: loading should fail"),
        Err(e) => (file, e),
    }
}

#[test]
fn missing_tensor_is_named_with_the_file() {
    let (file, err) = load_edited("missing", |ts| {
        ts.remove("decoder.up_blocks.2.resnets.0.conv_shortcut.weight");
    });
    let msg = err.to_string();
    match err {
        Error::MissingTensor { name, files } => {
            assert_eq!(name, "decoder.up_blocks.2.resnets.0.conv_shortcut.weight");
            assert_eq!(files, vec![file.clone()]);
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(
        msg.contains("conv_shortcut.weight") && msg.contains(&file.display().to_string()),
        "{msg}"
    );
}

#[test]
fn wrong_shape_is_named_with_the_file() {
    let (file, err) = load_edited("shape", |ts| {
        let t = Tensor::zeros((16, 4, 1, 1), DType::F32, &Device::Cpu).unwrap();
        ts.insert("decoder.conv_in.weight".into(), t);
    });
    match err {
        Error::TensorShape {
            name,
            file: f,
            expected,
            found,
        } => {
            assert_eq!(name, "decoder.conv_in.weight");
            assert_eq!(f, file);
            assert_eq!(expected, vec![16, 4, 3, 3]);
            assert_eq!(found, vec![16, 4, 1, 1]);
        }
        other => panic!("wrong error: {other:?}"),
    }
}

#[test]
fn integer_weights_are_rejected_with_their_dtype() {
    let (file, err) = load_edited("dtype", |ts| {
        let t = Tensor::zeros(8, DType::I64, &Device::Cpu).unwrap();
        ts.insert("encoder.conv_in.bias".into(), t);
    });
    match err {
        Error::TensorDtype {
            name,
            file: f,
            dtype,
        } => {
            assert_eq!(name, "encoder.conv_in.bias");
            assert_eq!(f, file);
            assert_eq!(dtype, "I64");
        }
        other => panic!("wrong error: {other:?}"),
    }
}

#[test]
fn missing_files_are_named() {
    let path = common::fixture_dir().join("no-such-file.safetensors");
    let err = AutoencoderKl::from_safetensors(&config("sd1"), &[&path], DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::WeightFile { path: p, .. } if *p == path),
        "{err:?}"
    );
    let err = AutoencoderKlConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(&err, Error::ConfigRead { path: p, .. } if *p == path),
        "{err:?}"
    );
    let bad = std::env::temp_dir().join(format!("sd-vae-bad-config-{}.json", std::process::id()));
    std::fs::write(&bad, "{\"block_out_channels\": \"many\"}").unwrap();
    let err = AutoencoderKlConfig::from_file(&bad).unwrap_err();
    std::fs::remove_file(&bad).unwrap();
    assert!(
        matches!(&err, Error::ConfigParse { path: p, .. } if *p == bad),
        "{err:?}"
    );
}

#[test]
fn unsupported_config_is_rejected_before_loading() {
    let mut cfg = config("sd1");
    cfg.act_fn = "mish".into();
    let err = AutoencoderKl::from_safetensors(&cfg, &[weights("sd1")], DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::UnsupportedConfig {
                field: "act_fn",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_latents_are_typed_errors() {
    let vae = load("sd1", DType::F32);
    let dev = Device::Cpu;
    for shape in [
        vec![1, 3, 8, 8],
        vec![4, 8, 8],
        vec![1, 4, 0, 8],
        vec![0, 4, 8, 8],
    ] {
        let z = Tensor::zeros(shape.as_slice(), DType::F32, &dev).unwrap();
        let err = vae.decode(&z).unwrap_err();
        assert!(
            matches!(&err, Error::LatentShape { channels: 4, shape: s } if *s == shape),
            "{shape:?}: {err:?}"
        );
    }
}

#[test]
fn bad_images_are_typed_errors() {
    let vae = load("sd1", DType::F32);
    let dev = Device::Cpu;
    let tiles = TileOptions::for_config(vae.config());
    for shape in [
        vec![1, 3, 60, 64],
        vec![1, 3, 64, 36],
        vec![1, 4, 64, 64],
        vec![3, 64, 64],
    ] {
        let x = Tensor::zeros(shape.as_slice(), DType::F32, &dev).unwrap();
        for err in [
            vae.encode(&x).unwrap_err(),
            vae.tiled_encode(&x, &tiles).unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::ImageShape { channels: 3, multiple: 8, shape: s } if *s == shape),
                "{shape:?}: {err:?}"
            );
        }
    }
}

#[test]
fn bad_noise_and_tiles_are_typed_errors() {
    let vae = load("sd1", DType::F32);
    let dev = Device::Cpu;
    let image = Tensor::zeros((1, 3, 16, 16), DType::F32, &dev).unwrap();
    let dist = vae.encode(&image).unwrap();
    let noise = Tensor::zeros((1, 4, 3, 2), DType::F32, &dev).unwrap();
    assert!(matches!(dist.sample(&noise), Err(Error::NoiseShape { .. })));
    let tiles = TileOptions {
        sample_size: 8,
        latent_size: 1,
        overlap_factor: 0.25,
    };
    let z = Tensor::zeros((1, 4, 3, 3), DType::F32, &dev).unwrap();
    assert!(matches!(
        vae.tiled_decode(&z, &tiles),
        Err(Error::TileOptions(_))
    ));
}
