//! Single-file checkpoints against the diffusers folders they were made from.
//!
//! fixtures/checkpoint/ (tools/fixtures/checkpoint.py) holds tiny-sd1 as an LDM `.safetensors`
//! and tiny-sd2 as an LDM `.ckpt`; diffusers' own converters turn each back into the folder's
//! exact state dict (the script asserts it), so "equal to the folder" here means "equal to what
//! diffusers reads from the file".

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sd_pipeline::checkpoint::Error;
use sd_pipeline::checkpoint::{
    self, ckpt::CkptFile, merge, ConfigOverride, Family, LoadOptions, ModelWeights, NamedTensors,
};
use sd_scheduler::PredictionType;
use sd_unet::{DownBlockType, UpBlockType};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/checkpoint").join(name)
}
fn folder(name: &str) -> PathBuf {
    root().join("fixtures/pipeline").join(name)
}
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-checkpoint-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn with_configs_of(name: &str) -> Result<LoadOptions> {
    Ok(LoadOptions {
        config_override: ConfigOverride::from_diffusers_folder(folder(name))?,
        ..LoadOptions::default()
    })
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Same names, dtypes, shapes and values (every f16/bf16/f32 value is exact in f64).
fn assert_same(what: &str, got: &NamedTensors, want: &NamedTensors) {
    let mut missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let mut extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    missing.sort();
    extra.sort();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dtype(), w.dtype(), "{what} {name} dtype");
        assert_eq!(g.dims(), w.dims(), "{what} {name} shape");
        assert!(values(g) == values(w), "{what} {name} values differ");
    }
}

fn assert_same_model(got: &ModelWeights, want: &ModelWeights) {
    assert_same("unet", &got.unet, &want.unet);
    assert_same("vae", &got.vae, &want.vae);
    assert_same("text encoder", &got.text_encoder, &want.text_encoder);
}

#[test]
fn sd1_safetensors_gives_the_folder_tensors() -> Result<()> {
    let file = checkpoint::load_single_file(
        fixture("tiny-sd1.safetensors"),
        &with_configs_of("tiny-sd1")?,
    )?;
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    assert_same_model(&file, &dir);
    assert_eq!(file.unet["conv_in.weight"].dtype(), DType::F32);
    assert_eq!(
        file.text_encoder["embeddings.token_embedding.weight"].dtype(),
        DType::F16
    );
    assert_eq!(file.unet_config, dir.unet_config);
    assert!(file.unknown_keys.is_empty(), "{:?}", file.unknown_keys);
    Ok(())
}

#[test]
fn sd2_ckpt_gives_the_folder_tensors() -> Result<()> {
    let file =
        checkpoint::load_single_file(fixture("tiny-sd2.ckpt"), &with_configs_of("tiny-sd2")?)?;
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd2"))?;
    assert_same_model(&file, &dir);
    assert_eq!(file.kind.family, Family::Sd2);
    assert_eq!(file.kind.prediction, PredictionType::VPrediction);
    assert!(file.unknown_keys.is_empty(), "{:?}", file.unknown_keys);
    Ok(())
}

#[test]
fn loaded_tensors_build_the_three_networks() -> Result<()> {
    for (file, config) in [
        ("tiny-sd1.safetensors", "tiny-sd1"),
        ("tiny-sd2.ckpt", "tiny-sd2"),
    ] {
        let w = checkpoint::load_single_file(fixture(file), &with_configs_of(config)?)?;
        let dev = Device::Cpu;
        let vb = |t: &NamedTensors| VarBuilder::from_tensors(t.clone(), DType::F32, &dev);
        sd_unet::UNet2DConditionModel::new(&w.unet_config, vb(&w.unet))?;
        sd_vae::AutoencoderKl::new(&w.vae_config, vb(&w.vae))?;
        sd_clip::ClipTextModel::new(&w.text_encoder_config, vb(&w.text_encoder))?;
    }
    Ok(())
}

#[test]
fn detection_from_shapes_alone() -> Result<()> {
    let sd1 =
        checkpoint::load_single_file(fixture("tiny-sd1.safetensors"), &LoadOptions::default())?;
    let want = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    assert_eq!(sd1.kind.family, Family::Sd1);
    assert!(!sd1.kind.inpainting);
    assert_eq!(sd1.kind.prediction, PredictionType::Epsilon);
    let (u, w) = (&sd1.unet_config, &want.unet_config);
    assert_eq!(u.block_out_channels, vec![8, 16, 16]);
    assert_eq!(u.layers_per_block, 2);
    assert_eq!(u.in_channels, 4);
    assert_eq!(u.cross_attention_dim, 8);
    assert!(!u.use_linear_projection);
    assert_eq!(u.down_block_types, w.down_block_types);
    assert_eq!(u.up_block_types, w.up_block_types);
    assert_eq!(u.down_block_types[2], DownBlockType::DownBlock2D);
    assert_eq!(u.up_block_types[0], UpBlockType::UpBlock2D);
    let v = &sd1.vae_config;
    assert_eq!(v.block_out_channels, want.vae_config.block_out_channels);
    assert_eq!(v.layers_per_block, 1);
    assert_eq!(v.latent_channels, 4);
    let t = &sd1.text_encoder_config;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.num_hidden_layers,
            t.intermediate_size
        ),
        (49408, 8, 3, 16)
    );
    // Head counts are not in the shapes: without a config the tensors are the same anyway.
    assert_same_model(&sd1, &want);

    let sd2 = checkpoint::load_single_file(fixture("tiny-sd2.ckpt"), &LoadOptions::default())?;
    assert_eq!(sd2.kind.family, Family::Sd2);
    assert_eq!(sd2.kind.prediction, PredictionType::VPrediction);
    assert!(sd2.unet_config.use_linear_projection);
    assert!(sd2.unet_config.upcast_attention);
    assert_eq!(
        sd2.scheduler_config.prediction_type,
        PredictionType::VPrediction
    );
    assert_eq!(
        sd2.text_encoder_config.hidden_act,
        sd_clip::Activation::Gelu
    );
    assert_eq!(sd2.text_encoder_config.num_hidden_layers, 3);

    let told = LoadOptions {
        prediction: Some(PredictionType::Epsilon),
        ..LoadOptions::default()
    };
    let sd2_base = checkpoint::load_single_file(fixture("tiny-sd2.ckpt"), &told)?;
    assert_eq!(sd2_base.kind.prediction, PredictionType::Epsilon);
    assert_eq!(
        sd2_base.scheduler_config.prediction_type,
        PredictionType::Epsilon
    );
    Ok(())
}

#[test]
fn inpainting_is_detected_from_nine_input_channels() -> Result<()> {
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd1-inpaint"))?;
    let path = temp("inpaint.safetensors");
    dir.save_single_file(&path)?;
    let back = checkpoint::load_single_file(&path, &with_configs_of("tiny-sd1-inpaint")?)?;
    assert!(back.kind.inpainting);
    assert_eq!(back.kind.family, Family::Sd1);
    assert_eq!(back.kind.prediction, PredictionType::Epsilon);
    assert_eq!(back.unet_config.in_channels, 9);
    assert_same_model(&back, &dir);
    Ok(())
}

/// A saved model gets the permissions of any new file under the umask (safetensors alone
/// leaves its private 0600 temporary file's mode; issue 15, item 9).
#[cfg(unix)]
#[test]
fn saved_files_follow_the_umask() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let weights = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    let file = temp("umask.safetensors");
    weights.save_single_file(&file)?;
    let plain = temp("umask-plain.txt");
    std::fs::write(&plain, b"x")?;
    assert_eq!(mode(&file), mode(&plain), "single file");
    let dir = temp("umask-folder");
    weights.save_diffusers_folder(&dir)?;
    let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
    assert_eq!(mode(&unet), mode(&plain), "folder");
    Ok(())
}

/// diffusers → LDM through the reverse table gives the file diffusers' converters accept.
#[test]
fn reverse_table_writes_the_proven_files() -> Result<()> {
    for (name, file) in [
        ("tiny-sd1", "tiny-sd1.safetensors"),
        ("tiny-sd2", "tiny-sd2.ckpt"),
    ] {
        let dir = ModelWeights::from_diffusers_folder(folder(name))?;
        let out = temp(&format!("{name}-rewritten.safetensors"));
        dir.save_single_file(&out)?;
        let written = candle_core::safetensors::load(&out, &Device::Cpu)?;
        let ckpt_or_st = sd_pipeline_reference(&fixture(file))?;
        // The fixture also carries extras real files have; the weights must match exactly.
        let extras = [
            "alphas_cumprod",
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            "cond_stage_model.model.text_projection",
            "cond_stage_model.model.logit_scale",
        ];
        let reference: NamedTensors = ckpt_or_st
            .into_iter()
            .filter(|(k, _)| !extras.contains(&k.as_str()))
            .collect();
        assert_same(name, &written, &reference);
    }
    Ok(())
}

/// Every tensor of a fixture file by its LDM name.
fn sd_pipeline_reference(path: &Path) -> Result<NamedTensors> {
    if path.extension().is_some_and(|e| e == "ckpt") {
        let ckpt = CkptFile::open(path)?;
        let names: Vec<String> = ckpt.tensor_infos().map(|(n, ..)| n.to_string()).collect();
        names
            .into_iter()
            .map(|n| Ok((n.clone(), ckpt.load(&n, &Device::Cpu)?)))
            .collect()
    } else {
        Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
    }
}

#[test]
fn table_round_trips_every_name() -> Result<()> {
    for (name, file) in [
        ("tiny-sd1", "tiny-sd1.safetensors"),
        ("tiny-sd2", "tiny-sd2.ckpt"),
    ] {
        let dir = ModelWeights::from_diffusers_folder(folder(name))?;
        let table = dir.name_table();
        let mut mapped = 0;
        for key in sd_pipeline_reference(&fixture(file))?.keys() {
            let Some((component, target)) = table.to_diffusers(key) else {
                assert_eq!(key, "alphas_cumprod", "{name}: {key} has no diffusers name");
                continue;
            };
            use checkpoint::ldm_names::{ToDiffusers as D, ToLdm as L};
            let diffusers: Vec<String> = match target {
                D::Rename(n) | D::ConvToLinear(n) => vec![n],
                D::SplitQkv(names) => names.to_vec(),
                D::Ignore => continue,
            };
            for (i, d) in diffusers.iter().enumerate() {
                assert!(
                    dir.component(component).contains_key(d),
                    "{name}: {key} -> {d} not in the folder"
                );
                let back = match table.to_ldm(component, d) {
                    Some(L::Rename(n) | L::LinearToConv(n)) => n,
                    Some(L::QkvPart { name, index }) => {
                        assert_eq!(index, i);
                        name
                    }
                    None => panic!("{d} has no LDM name"),
                };
                assert_eq!(&back, key, "{name}: {key} -> {d} -> {back}");
                mapped += 1;
            }
        }
        let total: usize = [&dir.unet, &dir.vae, &dir.text_encoder]
            .iter()
            .map(|m| m.len())
            .sum();
        assert_eq!(
            mapped, total,
            "{name}: every folder tensor is reached from the file"
        );
    }
    Ok(())
}

fn to_ldm_unet(dir: &ModelWeights, unet: &NamedTensors) -> NamedTensors {
    let table = dir.name_table();
    unet.iter()
        .map(
            |(k, v)| match table.to_ldm(checkpoint::Component::Unet, k) {
                Some(checkpoint::ldm_names::ToLdm::Rename(n)) => (n, v.clone()),
                other => panic!("{k}: {other:?}"),
            },
        )
        .collect()
}

#[test]
fn ema_weights_are_used_when_present_unless_told_not_to() -> Result<()> {
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    let unet_b = candle_core::safetensors::load(fixture("unet-b.safetensors"), &Device::Cpu)?;
    let mut file = candle_core::safetensors::load(fixture("tiny-sd1.safetensors"), &Device::Cpu)?;
    // LDM's LitEma: model_ema.<name after "model." without dots>, as diffusers' converter reads it
    // (checked against convert_ldm_unet_checkpoint(extract_ema=True) in the fixture script).
    for (k, v) in to_ldm_unet(&dir, &unet_b) {
        let flat = k.strip_prefix("model.").unwrap().replace('.', "");
        file.insert(format!("model_ema.{flat}"), v);
    }
    file.insert(
        "model_ema.decay".into(),
        Tensor::new(0.9999f32, &Device::Cpu)?,
    );
    file.insert(
        "model_ema.num_updates".into(),
        Tensor::new(1000i64, &Device::Cpu)?,
    );
    let path = temp("ema.safetensors");
    candle_core::safetensors::save(&file, &path)?;

    let options = with_configs_of("tiny-sd1")?;
    let ema = checkpoint::load_single_file(&path, &options)?;
    assert_same("ema unet", &ema.unet, &unet_b);
    assert_same("vae", &ema.vae, &dir.vae);
    let plain = checkpoint::load_single_file(
        &path,
        &LoadOptions {
            ema: false,
            ..options
        },
    )?;
    assert_same("non-ema unet", &plain.unet, &dir.unet);
    let report = checkpoint::inspect(&path)?;
    assert_eq!(report.ema_tensors, unet_b.len());
    Ok(())
}

#[test]
fn malicious_pickle_is_refused_without_running_it() {
    let path = fixture("malicious.ckpt");
    let err = checkpoint::load_single_file(&path, &LoadOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert!(text.contains("malicious.ckpt"), "{text}");
    assert!(
        text.contains("posix.system") || text.contains("os.system"),
        "{text}"
    );
    assert!(CkptFile::open(&path).is_err());
}

#[test]
fn pickled_tensor_layouts_in_both_torch_formats() -> Result<()> {
    let want = candle_core::safetensors::load(fixture("mixed.safetensors"), &Device::Cpu)?;
    for file in ["mixed.ckpt", "mixed-legacy.ckpt"] {
        let ckpt = CkptFile::open(fixture(file))?;
        let got: NamedTensors = ckpt
            .tensor_infos()
            .map(|(n, ..)| n.to_string())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| Ok((n.clone(), ckpt.load(&n, &Device::Cpu)?)))
            .collect::<Result<_>>()?;
        assert_same(file, &got, &want);
    }
    Ok(())
}

fn corrupt_copy(src: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    edit(&mut bytes);
    let path = temp(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    for file in ["tiny-sd1.safetensors", "tiny-sd2.ckpt", "mixed-legacy.ckpt"] {
        let len = std::fs::metadata(fixture(file)).unwrap().len() as usize;
        for cut in [0, 5, 9, 100, 1000, len / 2, len - 200, len - 1] {
            let name = format!("cut-{cut}-{file}");
            let path = corrupt_copy(&fixture(file), &name, |b| b.truncate(cut));
            let err = checkpoint::load_single_file(&path, &LoadOptions::default())
                .map(|_| ())
                .and_then(|_| CkptFile::open(&path).map(|_| ()))
                .expect_err(&name);
            assert!(err.to_string().contains(&name), "{err}");
        }
    }
}

#[test]
fn flipped_bytes_never_panic() -> Result<()> {
    let len = std::fs::metadata(fixture("tiny-sd2.ckpt"))?.len() as usize;
    let mut errors = 0;
    // The pickle sits at the start of the zip; its central directory at the end.
    let spots: Vec<usize> = (40..400)
        .step_by(7)
        .chain((len - 300..len).step_by(11))
        .collect();
    for at in &spots {
        let name = format!("flip-{at}.ckpt");
        let path = corrupt_copy(&fixture("tiny-sd2.ckpt"), &name, |b| b[*at] ^= 0xa5);
        if let Err(err) = checkpoint::load_single_file(&path, &LoadOptions::default()) {
            assert!(err.to_string().contains(&name), "{err}");
            errors += 1;
        }
    }
    assert!(
        errors > spots.len() / 2,
        "only {errors} of {} corruptions noticed",
        spots.len()
    );
    let garbage = corrupt_copy(&fixture("tiny-sd1.safetensors"), "garbage.bin", |b| {
        b[..16].fill(b'#')
    });
    let err = checkpoint::inspect(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.bin"), "{err}");
    Ok(())
}

fn with_unet(model: &ModelWeights, unet: NamedTensors) -> ModelWeights {
    ModelWeights {
        unet,
        ..model.clone()
    }
}

fn blend_f32(a: &Tensor, b: &Tensor, c: &Tensor, scale: f32) -> Vec<f64> {
    let f = |t: &Tensor| -> Vec<f32> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b, c) = (f(a), f(b), f(c));
    a.iter()
        .zip(b)
        .zip(c)
        .map(|((a, b), c)| (a + (b - c) * scale) as f64)
        .collect()
}

#[test]
fn weighted_sum_and_add_difference() -> Result<()> {
    let a = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    let b = with_unet(
        &a,
        candle_core::safetensors::load(fixture("unet-b.safetensors"), &Device::Cpu)?,
    );
    for scale in [0.3f32, 1.5, -0.5] {
        let mixed = merge::weighted_sum(&a, &b, scale as f64, merge::Components::UnetOnly)?;
        for (name, t) in &mixed.unet {
            assert_eq!(t.dtype(), a.unet[name].dtype());
            assert_eq!(
                values(t),
                blend_f32(&a.unet[name], &b.unet[name], &a.unet[name], scale),
                "{name} at {scale}"
            );
        }
        assert_same("vae untouched", &mixed.vae, &a.vae);
    }
    // The same tensors three ways: a + (b - c) * s with c = a is the weighted sum.
    let diff = merge::add_difference(&a, &b, &a, 0.7, merge::Components::All)?;
    let sum = merge::weighted_sum(&a, &b, 0.7, merge::Components::All)?;
    assert_same_model(&diff, &sum);
    let c = with_unet(
        &a,
        b.unet
            .iter()
            .map(|(k, v)| (k.clone(), (v.to_dtype(DType::F32).unwrap() * 0.5).unwrap()))
            .collect(),
    );
    let diff = merge::add_difference(&a, &b, &c, 2.0, merge::Components::UnetOnly)?;
    let name = "down_blocks.0.attentions.0.proj_in.weight";
    assert_eq!(
        values(&diff.unet[name]),
        blend_f32(&a.unet[name], &b.unet[name], &c.unet[name], 2.0)
    );
    Ok(())
}

#[test]
fn mixing_mismatched_models_names_the_tensor() -> Result<()> {
    let a = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    let inpaint = ModelWeights::from_diffusers_folder(folder("tiny-sd1-inpaint"))?;
    let err = merge::weighted_sum(&a, &inpaint, 0.5, merge::Components::UnetOnly)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv_in.weight") && err.contains("[8, 9, 3, 3]"),
        "{err}"
    );
    let mut fewer = a.clone();
    fewer.unet.remove("conv_out.bias");
    let err = merge::weighted_sum(&a, &fewer, 0.5, merge::Components::All)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv_out.bias") && err.contains("missing"),
        "{err}"
    );
    let err = merge::weighted_sum(&fewer, &a, 0.5, merge::Components::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv_out.bias"), "{err}");
    let sd2 = ModelWeights::from_diffusers_folder(folder("tiny-sd2"))?;
    let err = merge::weighted_sum(&a, &sd2, 0.5, merge::Components::UnetOnly)
        .unwrap_err()
        .to_string();
    assert!(err.contains("proj_in.weight"), "{err}");
    Ok(())
}

#[test]
fn merged_model_saves_and_reloads_as_folder_and_single_file() -> Result<()> {
    let a = ModelWeights::from_diffusers_folder(folder("tiny-sd2"))?;
    let b = checkpoint::load_single_file(fixture("tiny-sd2.ckpt"), &with_configs_of("tiny-sd2")?)?;
    let mixed = merge::weighted_sum(&a, &b, 0.25, merge::Components::All)?;
    let dir = temp("merged-folder");
    mixed.save_diffusers_folder(&dir)?;
    let back = ModelWeights::from_diffusers_folder(&dir)?;
    assert_same_model(&back, &mixed);
    assert_eq!(back.unet_config, mixed.unet_config);
    assert_eq!(back.vae_config, mixed.vae_config);
    assert_eq!(back.text_encoder_config, mixed.text_encoder_config);
    assert_eq!(
        back.scheduler_config.prediction_type,
        PredictionType::VPrediction
    );
    let file = temp("merged.safetensors");
    mixed.save_single_file(&file)?;
    let options = LoadOptions {
        config_override: ConfigOverride::from_diffusers_folder(&dir)?,
        ..LoadOptions::default()
    };
    assert_same_model(&checkpoint::load_single_file(&file, &options)?, &mixed);
    Ok(())
}

#[test]
fn inspect_reports_kind_dtypes_parameters_and_unknown_keys() -> Result<()> {
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    let report = checkpoint::inspect(fixture("tiny-sd1.safetensors"))?;
    assert_eq!(report.format, checkpoint::FileFormat::Safetensors);
    let kind = report.kind.clone().map_err(anyhow::Error::msg)?;
    assert_eq!(kind.to_string(), "SD 1.x, epsilon");
    let count = |m: &NamedTensors| m.values().map(|t| t.elem_count()).sum::<usize>();
    use checkpoint::Component::*;
    assert_eq!(report.components[&Unet].parameters, count(&dir.unet));
    assert_eq!(report.components[&Vae].parameters, count(&dir.vae));
    assert_eq!(
        report.components[&TextEncoder].parameters,
        count(&dir.text_encoder)
    );
    assert_eq!(
        report.components[&TextEncoder].dtypes,
        [("f16".to_string(), 52)].into()
    );
    assert_eq!(
        report.components[&Unet].dtypes,
        [("f32".to_string(), 494)].into()
    );
    assert!(report.ignored_keys.contains(&"alphas_cumprod".to_string()));
    assert!(report.unknown_keys.is_empty());
    let text = report.to_string();
    assert!(
        text.contains("SD 1.x") && text.contains("unet:") && text.contains("f16 x52"),
        "{text}"
    );

    let sd2 = checkpoint::inspect(fixture("tiny-sd2.ckpt"))?;
    assert_eq!(sd2.format, checkpoint::FileFormat::CkptZip);
    assert_eq!(
        sd2.kind.clone().map_err(anyhow::Error::msg)?.to_string(),
        "SD 2.x, v-prediction"
    );
    for ignored in [
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.logit_scale",
    ] {
        assert!(sd2.ignored_keys.iter().any(|k| k == ignored), "{ignored}");
    }

    let mut tensors =
        candle_core::safetensors::load(fixture("tiny-sd1.safetensors"), &Device::Cpu)?;
    tensors.insert(
        "lora_te_text_model.alpha".into(),
        Tensor::new(1f32, &Device::Cpu)?,
    );
    let path = temp("unknown.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    assert_eq!(
        checkpoint::inspect(&path)?.unknown_keys,
        vec!["lora_te_text_model.alpha".to_string()]
    );
    let loaded = checkpoint::load_single_file(&path, &LoadOptions::default())?;
    assert_eq!(
        loaded.unknown_keys,
        vec!["lora_te_text_model.alpha".to_string()]
    );
    Ok(())
}

#[test]
fn old_transformers_clip_keys_without_text_model_level() -> Result<()> {
    let file = candle_core::safetensors::load(fixture("tiny-sd1.safetensors"), &Device::Cpu)?;
    let renamed: NamedTensors = file
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace(
                    "cond_stage_model.transformer.text_model.",
                    "cond_stage_model.transformer.",
                ),
                v,
            )
        })
        .collect();
    let path = temp("old-clip-keys.safetensors");
    candle_core::safetensors::save(&renamed, &path)?;
    let loaded = checkpoint::load_single_file(&path, &with_configs_of("tiny-sd1")?)?;
    let dir = ModelWeights::from_diffusers_folder(folder("tiny-sd1"))?;
    assert_same_model(&loaded, &dir);
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    Ok(())
}
