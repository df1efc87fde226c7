//! A `VarBuilder` backend over memory-mapped safetensors files that remembers which tensor, in
//! which file, made loading fail, so that the error the user sees can name both.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Float dtypes (as safetensors spells them) that weights may be stored in.
const FLOAT_DTYPES: [&str; 4] = ["F16", "BF16", "F32", "F64"];

/// Where the first failed lookup is kept; shared by the backend and the code that built it.
pub(crate) type FailureSlot = Arc<Mutex<Option<Error>>>;

struct FileBackend {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    failure: FailureSlot,
}

impl FileBackend {
    fn fail(&self, err: Error) -> candle_core::Error {
        let msg = err.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(err);
        }
        candle_core::Error::Msg(msg)
    }

    fn find(&self, name: &str) -> Option<&(PathBuf, MmapedSafetensors)> {
        self.files.iter().rev().find(|(_, st)| st.get(name).is_ok())
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some((path, st)) = self.find(name) else {
            return Err(self.fail(Error::MissingTensor {
                name: name.to_string(),
                files: self.files.iter().map(|(p, _)| p.clone()).collect(),
            }));
        };
        let view = st.get(name)?;
        let file_dtype = format!("{:?}", view.dtype());
        if !FLOAT_DTYPES.contains(&file_dtype.as_str()) {
            return Err(self.fail(Error::TensorDtype {
                name: name.to_string(),
                file: path.clone(),
                dtype: file_dtype,
            }));
        }
        if let Some(expected) = expected {
            if view.shape() != expected.dims() {
                return Err(self.fail(Error::TensorShape {
                    name: name.to_string(),
                    file: path.clone(),
                    expected: expected.dims().to_vec(),
                    found: view.shape().to_vec(),
                }));
            }
        }
        st.load(name, dev)?.to_dtype(dtype)
    }
}

impl SimpleBackend for FileBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// Memory-maps `paths` into a `VarBuilder` of the given compute dtype; later files win when a
/// name appears twice. The returned slot receives the first lookup failure.
pub(crate) fn mmap_var_builder(
    paths: &[impl AsRef<Path>],
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, FailureSlot)> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref();
        // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on nobody
        // truncating or rewriting the weights file while the model is alive.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|source| Error::WeightFile {
            path: path.to_path_buf(),
            source,
        })?;
        files.push((path.to_path_buf(), st));
    }
    let failure = FailureSlot::default();
    let backend = FileBackend {
        files,
        failure: failure.clone(),
    };
    Ok((
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone()),
        failure,
    ))
}

/// Replaces a generic load error by the recorded, precise one when there is one.
pub(crate) fn precise(err: Error, slot: &FailureSlot) -> Error {
    match slot.lock().ok().and_then(|mut s| s.take()) {
        Some(recorded) => recorded,
        None => err,
    }
}
