//! Loading from `.safetensors` files with errors that name the tensor and the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::config::UNet2DConditionConfig;
use crate::error::{Error, Result};
use crate::unet::UNet2DConditionModel;

/// A `VarBuilder` backend over memory-mapped files that records the first failure as a typed
/// [`Error`] (candle's own errors say neither which file nor, for a dtype, which tensor).
struct CheckedFiles {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl CheckedFiles {
    fn fail(&self, error: Error) -> candle_core::Error {
        let message = error.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(error);
        }
        candle_core::Error::Msg(message)
    }

    fn find(&self, name: &str) -> Option<&(PathBuf, MmapedSafetensors)> {
        self.files.iter().find(|(_, st)| st.get(name).is_ok())
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
                tensor: name.to_string(),
                files: self.files.iter().map(|(p, _)| p.clone()).collect(),
            }));
        };
        let dtype_error = |found: String| Error::TensorDtype {
            tensor: name.to_string(),
            file: path.clone(),
            dtype: found,
        };
        let tensor = st
            .load(name, dev)
            .map_err(|e| self.fail(dtype_error(e.to_string())))?;
        if !matches!(
            tensor.dtype(),
            DType::F16 | DType::BF16 | DType::F32 | DType::F64
        ) {
            return Err(self.fail(dtype_error(format!("{:?}", tensor.dtype()))));
        }
        if let Some(shape) = expected {
            if tensor.shape() != shape {
                return Err(self.fail(Error::TensorShape {
                    tensor: name.to_string(),
                    file: path.clone(),
                    expected: shape.dims().to_vec(),
                    got: tensor.dims().to_vec(),
                }));
            }
        }
        tensor.to_dtype(dtype)
    }
}

impl SimpleBackend for CheckedFiles {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
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

impl UNet2DConditionModel {
    /// Builds the model from diffusers `.safetensors` weight files (e.g.
    /// `unet/diffusion_pytorch_model.safetensors`), casting every weight to `dtype`.
    /// Missing tensors, wrong shapes and non-float tensors are reported with the tensor's name
    /// and file.
    pub fn from_safetensors(
        config: &UNet2DConditionConfig,
        paths: &[impl AsRef<Path>],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            // SAFETY: the mapping is only read while the model is built (every tensor is copied
            // out); as with any memory map, the file must not be truncated meanwhile.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::WeightFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            files.push((path.to_path_buf(), st));
        }
        let failure = Arc::new(Mutex::new(None));
        let backend = CheckedFiles {
            files,
            failure: Arc::clone(&failure),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        match Self::new(config, vb) {
            Ok(model) => Ok(model),
            Err(e) => {
                let recorded = failure.lock().ok().and_then(|mut slot| slot.take());
                Err(recorded.unwrap_or(e))
            }
        }
    }
}
