//! TAESD files in each layout read to the same diffusers-named tensors and config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sd_checkpoint::{TaesdLayout, TaesdWeights};
use sd_vae::AutoencoderTinyConfig;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vae/taesd")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-taesd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture().join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// Writes the fixture in the original release's layout: bare indices, the decoder's shifted by
/// one for its leading clamp.
fn write_original(dir: &Path) {
    let mut halves: [HashMap<String, Tensor>; 2] = Default::default();
    for (name, t) in fixture_tensors() {
        let (half, rest) = name.split_once(".layers.").unwrap();
        let (index, field) = rest.split_once('.').unwrap();
        let index: usize = index.parse().unwrap();
        let (slot, shift) = if half == "encoder" { (0, 0) } else { (1, 1) };
        halves[slot].insert(format!("{}.{field}", index + shift), t);
    }
    candle_core::safetensors::save(&halves[0], dir.join("taesd_encoder.safetensors")).unwrap();
    candle_core::safetensors::save(&halves[1], dir.join("taesd_decoder.safetensors")).unwrap();
}

fn assert_same_tensors(got: &TaesdWeights) {
    let want = fixture_tensors();
    assert_eq!(got.tensors.len(), want.len());
    for (name, w) in &want {
        let g = &got.tensors[name];
        let diff: f32 = (g - w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
}

#[test]
fn the_diffusers_folder_reads_with_its_config() {
    let w = TaesdWeights::open(fixture()).unwrap();
    assert_eq!(w.layout, TaesdLayout::Diffusers);
    assert!(w.has_encoder() && w.has_decoder());
    let config = AutoencoderTinyConfig::from_file(fixture().join("config.json")).unwrap();
    assert_eq!(w.config, config);
    assert_same_tensors(&w);
}

#[test]
fn a_single_diffusers_file_gets_its_config_from_the_tensors() {
    let w = TaesdWeights::open(fixture().join("diffusion_pytorch_model.safetensors")).unwrap();
    let config = AutoencoderTinyConfig::from_file(fixture().join("config.json")).unwrap();
    assert_eq!(w.config.num_encoder_blocks, vec![1, 2, 2, 2]);
    assert_eq!(w.config.num_decoder_blocks, vec![2, 2, 2, 1]);
    assert_eq!(w.config, config);
}

#[test]
fn original_files_are_renamed_and_shifted() {
    let dir = scratch("original");
    write_original(&dir);
    let config = AutoencoderTinyConfig::from_file(fixture().join("config.json")).unwrap();
    let w = TaesdWeights::open(&dir).unwrap();
    assert_eq!(w.layout, TaesdLayout::Original);
    assert_eq!(w.files.len(), 2);
    assert_eq!(w.config, config);
    assert_same_tensors(&w);

    // The decoder file alone, as A1111 ships it.
    let d = TaesdWeights::open(dir.join("taesd_decoder.safetensors")).unwrap();
    assert!(d.has_decoder() && !d.has_encoder());
    assert_eq!(d.config.num_decoder_blocks, vec![2, 2, 2, 1]);
    assert_eq!(d.config.decoder_block_out_channels, vec![8; 4]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_that_are_not_taesd_are_named_in_the_error() {
    let dir = scratch("bad");
    let other = dir.join("other.safetensors");
    let t = HashMap::from([(
        "model.weight".to_string(),
        Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )]);
    candle_core::safetensors::save(&t, &other).unwrap();
    let err = TaesdWeights::open(&other).unwrap_err().to_string();
    assert!(
        err.contains("other.safetensors") && err.contains("no TAESD tensors"),
        "{err}"
    );
    let err = TaesdWeights::open(&dir).unwrap_err().to_string();
    assert!(err.contains("is not a TAESD folder"), "{err}");
    let err = TaesdWeights::open(dir.join("missing.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pth"), "{err}");
    std::fs::write(
        dir.join("truncated.safetensors"),
        b"\x10\0\0\0\0\0\0\0{\"a\":",
    )
    .unwrap();
    let err = TaesdWeights::open(dir.join("truncated.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
