//! One memory-mapped weights file of either kind, told apart by its first bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::ckpt::{CkptFile, CkptFormat};
use super::detect::TensorInfo;
use crate::error::{Error, Result};

/// The container format of a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// A `.safetensors` file.
    Safetensors,
    /// A PyTorch pickle in the zip format.
    CkptZip,
    /// A PyTorch pickle in the legacy format.
    CkptLegacy,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::CkptZip => "PyTorch pickle (zip format)",
            FileFormat::CkptLegacy => "PyTorch pickle (legacy format)",
        })
    }
}

/// An opened weights file: names, dtypes and shapes up front, data read per tensor.
pub(crate) enum Source {
    Safetensors(PathBuf, MmapedSafetensors),
    Ckpt(CkptFile),
}

fn st_dtype(dtype: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match dtype {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I16 => DType::I16,
        S::U32 => DType::U32,
        S::U8 | S::BOOL => DType::U8,
        _ => return None,
    })
}

impl Source {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let mut head = [0u8; 9];
        let read = {
            use std::io::Read;
            let mut file =
                std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
            file.read(&mut head)
                .map_err(|e| fail(format!("cannot read: {e}")))?
        };
        if read < 9 {
            return Err(fail(format!("only {read} bytes long: not a weights file")));
        }
        // A safetensors header is JSON after its 8-byte length: checked first, since a length
        // whose low byte is 0x80 (a 128-byte header, say) starts like a pickle.
        let header_len = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        if head[8] == b'{' && header_len < 1 << 32 {
            // SAFETY: read-only map; the file must not be truncated while mapped (as in candle).
            let st = unsafe { MmapedSafetensors::new(path) }
                .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
            return Ok(Self::Safetensors(path.to_path_buf(), st));
        }
        if head.starts_with(b"PK\x03\x04") || head[0] == 0x80 {
            return Ok(Self::Ckpt(CkptFile::open(path)?));
        }
        Err(fail(
            "neither a safetensors file nor a PyTorch checkpoint (unknown first bytes)".into(),
        ))
    }

    pub(crate) fn format(&self) -> FileFormat {
        match self {
            Source::Safetensors(..) => FileFormat::Safetensors,
            Source::Ckpt(c) if c.format() == CkptFormat::Zip => FileFormat::CkptZip,
            Source::Ckpt(_) => FileFormat::CkptLegacy,
        }
    }

    /// Every tensor's dtype and shape (tensors of dtypes candle lacks, e.g. fp8, are errors).
    pub(crate) fn infos(&self) -> Result<BTreeMap<String, TensorInfo>> {
        match self {
            Source::Safetensors(path, st) => st
                .tensors()
                .into_iter()
                .map(|(name, view)| {
                    let dtype = st_dtype(view.dtype()).ok_or_else(|| Error::Checkpoint {
                        path: path.clone(),
                        message: format!(
                            "tensor {name} has dtype {:?}, which is not supported",
                            view.dtype()
                        ),
                    })?;
                    let shape = view.shape().to_vec();
                    Ok((name, TensorInfo { dtype, shape }))
                })
                .collect(),
            Source::Ckpt(c) => Ok(c
                .tensor_infos()
                .map(|(name, dtype, shape)| {
                    (
                        name.to_string(),
                        TensorInfo {
                            dtype,
                            shape: shape.to_vec(),
                        },
                    )
                })
                .collect()),
        }
    }

    /// Reads one tensor in its stored dtype, on the CPU.
    pub(crate) fn load(&self, name: &str) -> Result<Tensor> {
        match self {
            Source::Safetensors(path, st) => {
                st.load(name, &Device::Cpu).map_err(|e| Error::Checkpoint {
                    path: path.clone(),
                    message: format!("tensor {name}: {e}"),
                })
            }
            Source::Ckpt(c) => c.load(name, &Device::Cpu),
        }
    }
}
