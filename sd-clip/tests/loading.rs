//! Weight layouts, loading errors, config parsing and input checks.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{config, fixture_dir, reference, rel_l2, TempDir};
use sd_clip::{expected_tensors, ClipTextConfig, ClipTextModel, Error, WeightLayout};

fn fixture_weights(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir(name).join("model.safetensors"), &Device::Cpu)
        .unwrap()
}

fn save(dir: &TempDir, file: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.0.join(file);
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

/// The fixture's weights under transformers 4 names, with the int64 `position_ids` buffer that
/// hub files carry (the model must ignore it).
fn transformers4_weights(name: &str) -> HashMap<String, Tensor> {
    let mut tensors: HashMap<String, Tensor> = fixture_weights(name)
        .into_iter()
        .map(|(k, v)| (format!("text_model.{k}"), v))
        .collect();
    let position_ids = Tensor::arange(0i64, 77, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    tensors.insert("text_model.embeddings.position_ids".into(), position_ids);
    tensors
}

fn load(name: &str, paths: &[PathBuf]) -> sd_clip::Result<ClipTextModel> {
    ClipTextModel::from_safetensors(&config(name), paths, DType::F32, &Device::Cpu)
}

#[test]
fn transformers4_layout_loads_to_the_same_model() {
    for name in ["sd1-tiny", "sd2-tiny"] {
        let dir = TempDir::new(&format!("t4-{name}"));
        let path = save(&dir, "model.safetensors", &transformers4_weights(name));
        let reference = reference(name);
        let ids = &reference["input_ids"];

        let t4 = load(name, std::slice::from_ref(&path)).unwrap();
        let t5 = common::model(name, DType::F32);
        let (a, b) = (t4.forward(ids).unwrap(), t5.forward(ids).unwrap());
        assert_eq!(
            rel_l2(&a, &b),
            0.0,
            "{name}: the two layouts give different models"
        );
        assert!(rel_l2(&a, &reference["last_hidden_state"]) < 1e-4);

        // Through `new` with a plain VarBuilder, as the pipeline builds it.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
            .unwrap();
        assert_eq!(WeightLayout::detect(&vb), WeightLayout::Transformers4);
        let via_new = ClipTextModel::new(&config(name), vb).unwrap();
        assert_eq!(rel_l2(&via_new.forward(ids).unwrap(), &b), 0.0);
    }
}

#[test]
fn transformers5_layout_is_detected() {
    let path = fixture_dir("sd1-tiny").join("model.safetensors");
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.unwrap();
    assert_eq!(WeightLayout::detect(&vb), WeightLayout::Transformers5);
}

/// A checkpoint split over two files loads from both.
#[test]
fn sharded_weights_load() {
    let dir = TempDir::new("shards");
    let (mut first, mut second) = (HashMap::new(), HashMap::new());
    for (i, (k, v)) in fixture_weights("sd1-tiny").into_iter().enumerate() {
        if i % 2 == 0 { &mut first } else { &mut second }.insert(k, v);
    }
    let paths = [
        save(&dir, "a.safetensors", &first),
        save(&dir, "b.safetensors", &second),
    ];
    let model = load("sd1-tiny", &paths).unwrap();
    let reference = reference("sd1-tiny");
    let out = model.forward(&reference["input_ids"]).unwrap();
    assert!(rel_l2(&out, &reference["last_hidden_state"]) < 1e-4);
}

fn error_text(name: &str, tensors: &HashMap<String, Tensor>, tag: &str) -> (Error, PathBuf) {
    let dir = TempDir::new(tag);
    let path = save(&dir, "model.safetensors", tensors);
    let err = load(name, std::slice::from_ref(&path)).unwrap_err();
    (err, path)
}

fn assert_names(err: &Error, tensor: &str, file: &Path) {
    let text = err.to_string();
    assert!(text.contains(tensor), "`{text}` does not name {tensor}");
    assert!(
        text.contains(&file.display().to_string()),
        "`{text}` does not name the file"
    );
}

#[test]
fn missing_tensor_names_tensor_and_file() {
    let mut tensors = transformers4_weights("sd1-tiny");
    let gone = "text_model.encoder.layers.1.mlp.fc2.bias";
    tensors.remove(gone).unwrap();
    let (err, path) = error_text("sd1-tiny", &tensors, "missing");
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name == gone),
        "{err}"
    );
    assert_names(&err, gone, &path);
}

#[test]
fn wrong_shape_names_tensor_and_file() {
    let mut tensors = fixture_weights("sd2-tiny");
    let key = "encoder.layers.2.mlp.fc1.weight";
    let transposed = tensors[key].t().unwrap().contiguous().unwrap();
    tensors.insert(key.into(), transposed);
    let (err, path) = error_text("sd2-tiny", &tensors, "shape");
    match &err {
        Error::ShapeMismatch {
            name,
            expected,
            got,
            ..
        } => {
            assert_eq!(name, key);
            assert_eq!(
                (expected.as_slice(), got.as_slice()),
                (&[64, 40][..], &[40, 64][..])
            );
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert_names(&err, key, &path);
}

#[test]
fn integer_weights_are_refused_by_name() {
    let mut tensors = fixture_weights("sd1-tiny");
    let key = "final_layer_norm.bias";
    let as_int = tensors[key].to_dtype(DType::I64).unwrap();
    tensors.insert(key.into(), as_int);
    let (err, path) = error_text("sd1-tiny", &tensors, "dtype");
    assert!(
        matches!(&err, Error::UnsupportedDtype { name, .. } if name == key),
        "{err}"
    );
    assert_names(&err, key, &path);
}

#[test]
fn missing_file_is_named() {
    let path = PathBuf::from("/nonexistent/sd-clip/model.safetensors");
    let err = load("sd1-tiny", std::slice::from_ref(&path)).unwrap_err();
    assert!(matches!(err, Error::WeightsFile { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("/nonexistent/sd-clip/model.safetensors"));
}

/// Weights stored in f16 load into an f32 model (cast at load).
#[test]
fn half_precision_file_loads_as_f32() {
    let tensors: HashMap<String, Tensor> = fixture_weights("sd1-tiny")
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    let dir = TempDir::new("f16-file");
    let path = save(&dir, "model.fp16.safetensors", &tensors);
    let model = load("sd1-tiny", &[path]).unwrap();
    let reference = reference("sd1-tiny");
    let out = model.forward(&reference["input_ids"]).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    // Only the weights were rounded to f16 (unit roundoff 4.9e-4).
    let err = rel_l2(&out, &reference["last_hidden_state"]);
    assert!(err < 5e-3, "{err}");
}

#[test]
fn clip_skip_out_of_range_is_an_error() {
    let model = common::model("sd1-tiny", DType::F32);
    let ids = &reference("sd1-tiny")["input_ids"];
    for k in [0, 4, 100] {
        let err = model.forward_with_clip_skip(ids, k).unwrap_err();
        assert!(
            matches!(err, Error::ClipSkip { clip_skip, num_layers: 3 } if clip_skip == k),
            "{err}"
        );
        assert!(model.encode_windows(&[vec![0u32; 77]], k).is_err());
    }
}

#[test]
fn bad_input_ids_are_typed_errors() {
    let model = common::model("sd1-tiny", DType::F32);
    let dev = Device::Cpu;
    let mut ids = vec![5u32; 2 * 77];
    ids[77 + 10] = 1000; // vocab_size is 1000
    let err = model
        .forward(&Tensor::from_vec(ids, (2, 77), &dev).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                id: 1000,
                batch: 1,
                position: 10,
                vocab_size: 1000
            }
        ),
        "{err}"
    );

    let negative = Tensor::new(&[[3i64, -1]], &dev).unwrap();
    assert!(matches!(
        model.forward(&negative).unwrap_err(),
        Error::TokenOutOfRange { id: -1, .. }
    ));

    let too_long = Tensor::zeros((1, 78), DType::U32, &dev).unwrap();
    assert!(matches!(
        model.forward(&too_long).unwrap_err(),
        Error::SequenceLength {
            seq_len: 78,
            max_position_embeddings: 77
        }
    ));

    let three_d = Tensor::zeros((1, 2, 77), DType::U32, &dev).unwrap();
    assert!(matches!(
        model.forward(&three_d).unwrap_err(),
        Error::InputIds { .. }
    ));
    let floats = Tensor::zeros((1, 77), DType::F32, &dev).unwrap();
    assert!(matches!(
        model.forward(&floats).unwrap_err(),
        Error::InputIds { .. }
    ));

    assert!(matches!(
        model
            .encode_windows(&[vec![0u32; 77], vec![0u32; 76]], 1)
            .unwrap_err(),
        Error::Windows(_)
    ));
    let none: [Vec<u32>; 0] = [];
    assert!(matches!(
        model.encode_windows(&none, 1).unwrap_err(),
        Error::Windows(_)
    ));
}

/// Shorter sequences use positions 0..S, so a prefix of a causal model's output depends only on
/// the prefix of the input.
#[test]
fn short_sequences_use_the_first_positions() {
    let model = common::model("sd2-tiny", DType::F32);
    let reference = reference("sd2-tiny");
    let ids = reference["input_ids"].narrow(1, 0, 20).unwrap();
    let out = model.forward(&ids).unwrap();
    let expected = reference["last_hidden_state"].narrow(1, 0, 20).unwrap();
    assert!(rel_l2(&out, &expected) < 1e-4);
}

#[test]
fn config_reads_fixture_and_names_bad_files() {
    let cfg = config("sd2-tiny");
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_hidden_layers,
            cfg.vocab_size
        ),
        (40, 5, 4, 1000)
    );
    assert_eq!(cfg.hidden_act, sd_clip::Activation::Gelu);
    assert_eq!((cfg.bos_token_id, cfg.eos_token_id), (Some(998), Some(999)));

    let dir = TempDir::new("config");
    let bad = dir.0.join("config.json");
    std::fs::write(&bad, r#"{"hidden_act": "swish"}"#).unwrap();
    let err = ClipTextConfig::from_file(&bad).unwrap_err();
    assert!(matches!(err, Error::ConfigParse { .. }));
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );

    std::fs::write(&bad, r#"{"hidden_size": 30, "num_attention_heads": 4}"#).unwrap();
    assert!(matches!(
        ClipTextConfig::from_file(&bad).unwrap_err(),
        Error::InvalidConfig(_)
    ));

    let missing = dir.0.join("absent.json");
    assert!(matches!(
        ClipTextConfig::from_file(missing).unwrap_err(),
        Error::ConfigRead { .. }
    ));
}

#[test]
fn config_defaults() {
    // Missing keys: transformers' CLIPTextConfig() defaults; a list of eos ids keeps the first.
    let cfg: ClipTextConfig =
        serde_json::from_str(r#"{"eos_token_id": [49407, 2], "layer_norm_eps": null}"#).unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size
        ),
        (512, 8, 2048)
    );
    assert_eq!(cfg.eos_token_id, Some(49407));
    assert_eq!(cfg.layer_norm_eps, 1e-5);
    assert_eq!(cfg.hidden_act, sd_clip::Activation::QuickGelu);

    // Default: SD 1.5's text_encoder/config.json.
    let sd15 = ClipTextConfig::default();
    assert_eq!(
        (
            sd15.hidden_size,
            sd15.intermediate_size,
            sd15.num_hidden_layers,
            sd15.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!((sd15.vocab_size, sd15.projection_dim), (49408, Some(768)));
    let sd2 = ClipTextConfig::sd2();
    assert_eq!(
        (sd2.hidden_size, sd2.num_hidden_layers, sd2.hidden_act),
        (1024, 23, sd_clip::Activation::Gelu)
    );
}

/// `expected_tensors` lists exactly what the fixture file holds.
#[test]
fn expected_tensors_match_the_fixture() {
    let mut expected: Vec<(String, Vec<usize>)> = expected_tensors(&config("sd2-tiny"));
    let mut actual: Vec<(String, Vec<usize>)> = fixture_weights("sd2-tiny")
        .into_iter()
        .map(|(k, v)| (k, v.dims().to_vec()))
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(expected, actual);
}
