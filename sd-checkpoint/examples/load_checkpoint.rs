//! Times loading a full-size Stable Diffusion 1.5-shaped single file (random weights) from a
//! `.safetensors` and from a torch zip `.ckpt` into the three networks' named tensors.
//!
//! Run: `cargo run --release -p sd-pipeline --example load_checkpoint [-- DIR] [--f32]`
//! (writes `DIR/sd15-random.{safetensors,ckpt}`, default DIR `/tmp`; about 2.1 GB each in f16,
//! 4.3 GB in f32; the files are left for reuse and are never part of the repository).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use sd_checkpoint::{
    self as checkpoint, Family, LoadOptions, ModelKind, ModelWeights, NamedTensors,
};

fn named(varmap: &VarMap) -> NamedTensors {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// SD 1.5's three networks with the weights their constructors draw.
fn random_sd15(dtype: DType) -> Result<ModelWeights> {
    let dev = Device::Cpu;
    let (unet_config, vae_config) = (
        sd_unet::UNet2DConditionConfig::default(),
        sd_vae::AutoencoderKlConfig::default(),
    );
    let text_encoder_config = sd_clip::ClipTextConfig::sd1();
    let (u, v, t) = (VarMap::new(), VarMap::new(), VarMap::new());
    sd_unet::UNet2DConditionModel::new(&unet_config, VarBuilder::from_varmap(&u, dtype, &dev))?;
    sd_vae::AutoencoderKl::new(&vae_config, VarBuilder::from_varmap(&v, dtype, &dev))?;
    sd_clip::ClipTextModel::new(
        &text_encoder_config,
        VarBuilder::from_varmap(&t, dtype, &dev),
    )?;
    Ok(ModelWeights {
        unet: named(&u),
        vae: named(&v),
        text_encoder: named(&t),
        unet_config,
        vae_config,
        text_encoder_config,
        scheduler_config: Default::default(),
        kind: ModelKind {
            family: Family::Sd1,
            inpainting: false,
            prediction: sd_scheduler::PredictionType::Epsilon,
        },
        unknown_keys: Vec::new(),
    })
}

/// One pickle string (BINUNICODE: protocol 2 has no shorter form).
fn pickle_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

fn pickle_int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend((v as i32).to_le_bytes());
}

fn pickle_ints(out: &mut Vec<u8>, values: &[usize]) {
    out.push(b'(');
    for v in values {
        pickle_int(out, *v);
    }
    out.push(b't');
}

/// Writes `{"state_dict": {name: tensor}}` the way `torch.save` does (zip format, protocol 2,
/// one storage record per tensor, 64-byte aligned), copying tensor bytes from `source`.
fn write_torch_zip(source: &MmapedSafetensors, path: &Path) -> Result<()> {
    let tensors = source.tensors();
    let mut pkl = vec![0x80, 2, b'}'];
    pickle_str(&mut pkl, "state_dict");
    pkl.extend([b'}', b'(']);
    for (i, (name, view)) in tensors.iter().enumerate() {
        let storage = match view.dtype() {
            safetensors::Dtype::F16 => "HalfStorage",
            safetensors::Dtype::BF16 => "BFloat16Storage",
            safetensors::Dtype::F32 => "FloatStorage",
            other => anyhow::bail!("{name}: dtype {other:?}"),
        };
        let shape = view.shape();
        let numel: usize = shape.iter().product();
        let mut stride = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        pickle_str(&mut pkl, name);
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pkl.push(b'(');
        pickle_str(&mut pkl, "storage");
        pkl.extend(format!("ctorch\n{storage}\n").as_bytes());
        pickle_str(&mut pkl, &i.to_string());
        pickle_str(&mut pkl, "cpu");
        pickle_int(&mut pkl, numel);
        pkl.extend([b't', b'Q']);
        pickle_int(&mut pkl, 0);
        pickle_ints(&mut pkl, shape);
        pickle_ints(&mut pkl, &stride);
        pkl.push(0x89);
        pkl.extend(b"ccollections\nOrderedDict\n)R");
        pkl.extend([b't', b'R']);
    }
    pkl.extend([b'u', b's', b'.']);

    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::with_capacity(1 << 22, file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true)
        .with_alignment(64);
    zip.start_file("archive/data.pkl", options)?;
    zip.write_all(&pkl)?;
    zip.start_file("archive/byteorder", options)?;
    zip.write_all(b"little")?;
    for (i, (_, view)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), options)?;
        zip.write_all(view.data())?;
    }
    zip.start_file("archive/version", options)?;
    zip.write_all(b"3\n")?;
    zip.finish()?.flush()?;
    Ok(())
}

fn time_load(path: &Path) -> Result<f64> {
    let start = Instant::now();
    let weights = checkpoint::load_single_file(path, &LoadOptions::default())?;
    let seconds = start.elapsed().as_secs_f64();
    let params: usize = [&weights.unet, &weights.vae, &weights.text_encoder]
        .iter()
        .flat_map(|m| m.values())
        .map(|t| t.elem_count())
        .sum();
    println!(
        "{}: {params} parameters ({}) in {seconds:.2} s",
        path.display(),
        weights.kind
    );
    Ok(seconds)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dtype = if args.iter().any(|a| a == "--f32") {
        DType::F32
    } else {
        DType::F16
    };
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let suffix = if dtype == DType::F32 { "-f32" } else { "" };
    let st = dir.join(format!("sd15-random{suffix}.safetensors"));
    let ckpt = dir.join(format!("sd15-random{suffix}.ckpt"));
    if !st.exists() || !ckpt.exists() {
        let start = Instant::now();
        random_sd15(dtype)?.save_single_file(&st)?;
        // SAFETY: read-only map of the file just written by this process.
        let source = unsafe { MmapedSafetensors::new(&st)? };
        write_torch_zip(&source, &ckpt)?;
        println!("wrote both files in {:.1} s", start.elapsed().as_secs_f64());
    }
    println!("{}", checkpoint::inspect(&st)?);
    for path in [&st, &ckpt, &st, &ckpt] {
        time_load(path)?;
    }
    Ok(())
}
