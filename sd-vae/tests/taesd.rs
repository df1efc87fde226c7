//! TAESD (`AutoencoderTiny`) against diffusers 0.42 on the tiny random model of
//! `tools/fixtures/taesd.py`.

mod common;

use candle_core::{DType, Device, Tensor};
use sd_vae::{AutoencoderTiny, AutoencoderTinyConfig, Error};

use common::{assert_close, fixture_dir, tensors};

fn load(dtype: DType) -> AutoencoderTiny {
    let dir = fixture_dir().join("taesd");
    let config = AutoencoderTinyConfig::from_file(dir.join("config.json")).unwrap();
    let weights = [dir.join("diffusion_pytorch_model.safetensors")];
    AutoencoderTiny::from_safetensors(&config, &weights, dtype, &Device::Cpu).unwrap()
}

#[test]
fn encode_and_decode_match_diffusers_in_f32() {
    let vae = load(DType::F32);
    assert!(vae.has_encoder() && vae.has_decoder());
    let inputs = tensors("inputs.safetensors");
    let expected = tensors("taesd/expected.safetensors");
    for name in ["a", "b"] {
        let latents = vae.encode(&inputs[&format!("image_{name}")]).unwrap();
        assert_close(
            &format!("taesd encode {name}"),
            &latents,
            &expected[&format!("latents_{name}")],
            1e-4,
        );
        let image = vae.decode(&inputs[&format!("latents_{name}")]).unwrap();
        assert_close(
            &format!("taesd decode {name}"),
            &image,
            &expected[&format!("decoded_{name}")],
            1e-4,
        );
    }
}

#[test]
fn bf16_weights_stay_close_to_diffusers() {
    let vae = load(DType::BF16);
    let inputs = tensors("inputs.safetensors");
    let expected = tensors("taesd/expected.safetensors");
    let image = vae.decode(&inputs["latents_a"]).unwrap();
    assert_eq!(image.dtype(), DType::BF16);
    assert_close("taesd decode bf16", &image, &expected["decoded_a"], 2e-2);
}

#[test]
fn a_decoder_alone_decodes_and_refuses_to_encode() {
    let dir = fixture_dir().join("taesd");
    let config = AutoencoderTinyConfig::from_file(dir.join("config.json")).unwrap();
    let all = tensors("taesd/diffusion_pytorch_model.safetensors");
    let decoder: std::collections::HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("decoder."))
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(decoder, DType::F32, &Device::Cpu);
    let vae = AutoencoderTiny::new(&config, vb).unwrap();
    assert!(!vae.has_encoder() && vae.has_decoder());
    let inputs = tensors("inputs.safetensors");
    let expected = tensors("taesd/expected.safetensors");
    let image = vae.decode(&inputs["latents_b"]).unwrap();
    assert_close("decoder only", &image, &expected["decoded_b"], 1e-4);
    let err = vae.encode(&inputs["image_b"]).unwrap_err();
    assert!(
        matches!(err, Error::MissingHalf { half: "encoder" }),
        "{err}"
    );
}

#[test]
fn bad_shapes_and_configs_are_typed_errors() {
    let vae = load(DType::F32);
    let odd = Tensor::zeros((1, 3, 60, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.encode(&odd), Err(Error::ImageShape { .. })));
    let wrong = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.decode(&wrong), Err(Error::LatentShape { .. })));

    let mut config = AutoencoderTinyConfig {
        decoder_block_out_channels: vec![8, 16, 8, 8],
        ..Default::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("decoder_block_out_channels"), "{err}");
    config = AutoencoderTinyConfig {
        upsample_fn: "bilinear".into(),
        ..Default::default()
    };
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("upsample_fn"));

    let dir = fixture_dir().join("taesd");
    let missing = dir.join("no-such.safetensors");
    let err = AutoencoderTiny::from_safetensors(
        &AutoencoderTinyConfig::default(),
        &[missing],
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("no-such.safetensors"), "{err}");
    // The published TAESD's 64-channel config on the 8-channel fixture: the shape error names
    // the tensor and the file.
    let weights = [dir.join("diffusion_pytorch_model.safetensors")];
    let err = AutoencoderTiny::from_safetensors(
        &AutoencoderTinyConfig::default(),
        &weights,
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("encoder.layers.0.weight") && text.contains("diffusion_pytorch_model"),
        "{text}"
    );
}
