//! Weights files: safetensors and pickled `.ckpt` readers, and the detection that turns a
//! file's names and shapes into configs, through `sd-pipeline`'s public API.
//!
//! The readers take paths (they memory-map), so each input goes to a temp file (in `/dev/shm`
//! when there is one). Included by `sd-pipeline/tests/fuzz_regressions.rs`, so it uses
//! `sd_pipeline` only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sd_pipeline::candle_core::{DType, Device};
use sd_pipeline::checkpoint::ldm_names::ToDiffusers;
use sd_pipeline::checkpoint::{detect, inspect, CkptFile, LoadOptions, ModelWeights, NameTable};
use sd_pipeline::checkpoint::{Component, TensorInfo};
use sd_pipeline::checkpoint::{Error, Result};

/// `data` written to a file of its own, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(data: &[u8], extension: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("sd-fuzz-{}-{n}.{extension}", std::process::id()));
        std::fs::write(&path, data).expect("the temp file is written");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every refusal of a weights file must name the file (`Error::Checkpoint` with its path).
fn naming<T>(path: &Path, result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        assert!(
            matches!(e, Error::Checkpoint { path: p, .. } if p == path),
            "an error that does not name the file: {e:?}"
        );
    }
    result
}

/// What `sd inspect` and `sd generate` do with a file: inspect it, print the inspection, and
/// when it is a Stable Diffusion model, load it as the CLI does.
fn inspect_and_open(path: &Path) -> Result<()> {
    let inspection = naming(path, inspect(path))?;
    let _ = inspection.to_string();
    if inspection.kind.is_ok() {
        let weights = naming(path, ModelWeights::open(path, &LoadOptions::default()))?;
        let _ = weights.name_table();
    }
    Ok(())
}

/// `data` as a `.safetensors` file (the first bytes pick the reader, so a pickle here is read
/// as one).
pub fn safetensors_file(data: &[u8]) -> Result<()> {
    let file = TempFile::new(data, "safetensors");
    inspect_and_open(&file.0)
}

/// `data` as a `.ckpt`: opened by the pickle reader, every tensor copied out and checked
/// against its description, then inspected and opened as a model.
pub fn ckpt_file(data: &[u8]) -> Result<()> {
    let file = TempFile::new(data, "ckpt");
    let path = file.0.as_path();
    let ckpt = naming(path, CkptFile::open(path))?;
    let infos: Vec<(String, DType, Vec<usize>)> = ckpt
        .tensor_infos()
        .map(|(name, dtype, shape)| (name.to_string(), dtype, shape.to_vec()))
        .collect();
    for (name, dtype, shape) in infos {
        let tensor = naming(path, ckpt.load(&name, &Device::Cpu))?;
        assert_eq!(tensor.dims(), shape.as_slice(), "tensor {name}");
        assert_eq!(tensor.dtype(), dtype, "tensor {name}");
    }
    drop(ckpt);
    inspect_and_open(path)
}

/// Model detection and renaming on a list of tensor names and shapes, one per line:
/// `name dim dim ...` (a line without dims is a scalar; a word that is not a number ends the
/// shape). This is what a hostile header reaches once it parses: `detect`, then the renaming
/// table built from the detected configs, applied to every name and back.
pub fn detect_shapes(data: &[u8]) -> std::result::Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let mut infos = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let shape = words.map_while(|w| w.parse().ok()).collect();
        let info = TensorInfo {
            dtype: DType::F16,
            shape,
        };
        infos.insert(name.to_string(), info);
    }
    let detected = detect::detect(&infos, None)?;
    let _ = detected.kind.to_string();
    let table = NameTable::new(&detected.unet, &detected.vae, detected.text_layout);
    for name in infos.keys() {
        let Some((component, target)) = table.to_diffusers(name) else {
            continue;
        };
        let back = |diffusers: &str, component: Component| table.to_ldm(component, diffusers);
        match target {
            ToDiffusers::Rename(n) | ToDiffusers::ConvToLinear(n) => {
                back(&n, component);
            }
            ToDiffusers::SplitQkv(names) => names.iter().for_each(|n| {
                back(n, component);
            }),
            ToDiffusers::Ignore => {}
        }
    }
    Ok(())
}
