//! A `.safetensors` file read one tensor at a time from a memory map. Each tensor is copied
//! out when asked for and this process's copy of its pages is dropped right after, so reading a
//! 3.4 GB UNet never holds the file's pages and all the copies at once (candle's `load` reads
//! the whole file first), and a network built tensor by tensor holds one read copy at a time.

use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, Metadata, TensorView};

use super::checkpoint_error;
use crate::error::Result;

/// An open `.safetensors` file (header parsed and checked against the file's length).
pub struct MappedSafetensors {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Where the tensor data begins (after the length prefix and the header).
    data_start: usize,
    metadata: Metadata,
}

impl MappedSafetensors {
    /// Maps `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |e: String| checkpoint_error(path, format!("cannot read weights: {e}"));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        // SAFETY: a read-only mapping; as with any mapping, the file must not be truncated
        // while it is read (the header's offsets are checked against the length up front).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| fail(e.to_string()))?;
        let (header, metadata) =
            safetensors::SafeTensors::read_metadata(&map).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header,
            metadata,
        })
    }

    /// The tensors' names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys().into_iter().collect()
    }

    /// The header's `__metadata__` strings (e.g. diffusers' `lora_adapter_metadata`), if any.
    pub fn header_metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    /// Whether the file has a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// A copy of tensor `name` (`None` when the file has none), in its stored dtype.
    pub fn load(&self, name: &str) -> Result<Option<Tensor>> {
        self.read(name, None)
    }

    /// A copy of tensor `name` cast to `dtype` (`None` when the file has none). f32 tensors
    /// read as f32 or bf16 are copied or rounded straight from the mapping by all threads, with
    /// no copy in the stored dtype first.
    pub fn load_as(&self, name: &str, dtype: DType) -> Result<Option<Tensor>> {
        self.read(name, Some(dtype))
    }

    fn read(&self, name: &str, dtype: Option<DType>) -> Result<Option<Tensor>> {
        let Some(info) = self.metadata.info(name) else {
            return Ok(None);
        };
        let fail = |e: String| checkpoint_error(&self.path, format!("cannot read {name}: {e}"));
        let (start, end) = info.data_offsets;
        let (start, end) = (self.data_start + start, self.data_start + end);
        let bytes = &self.map[start..end];
        // Checks that the shape and dtype account for exactly these bytes.
        let view = TensorView::new(info.dtype, info.shape.clone(), bytes)
            .map_err(|e| fail(e.to_string()))?;
        let direct = match (info.dtype, dtype, f32_values(bytes)) {
            (Dtype::F32, Some(DType::F32), Some(v)) => Some(Tensor::from_vec(
                sd_kernels::cast::copy_f32(v),
                info.shape.as_slice(),
                &Device::Cpu,
            )),
            (Dtype::F32, Some(DType::BF16), Some(v)) => Some(Tensor::from_vec(
                sd_kernels::cast::f32_to_bf16(v),
                info.shape.as_slice(),
                &Device::Cpu,
            )),
            _ => None,
        };
        let tensor = match direct {
            Some(t) => t,
            None => view.load(&Device::Cpu).and_then(|t| match dtype {
                Some(d) => t.to_dtype(d),
                None => Ok(t),
            }),
        }
        .map_err(|e| fail(e.to_string()))?;
        self.drop_pages(start, end);
        Ok(Some(tensor))
    }

    /// Drops this process's copy of the whole pages in `[start, end)` of the mapping.
    fn drop_pages(&self, start: usize, end: usize) {
        let page = 4096;
        let (first, last) = (start.div_ceil(page) * page, end / page * page);
        if last > first {
            // SAFETY: DONTNEED on a read-only file mapping only drops this process's copy of
            // the pages (the data stays in the file and the page cache); nothing reads them.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    last - first,
                )
            };
        }
    }
}

/// The little-endian f32 values in `bytes`, read in place when they are aligned (a
/// safetensors header of any length can leave them unaligned: then `None`).
fn f32_values(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32; `align_to` only puts aligned whole values in
    // the middle part.
    let (head, values, tail) = unsafe { bytes.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file of `a` (f32 `[2, 3]`, `values`) and `h` (f16 `[2]`: 0.5, -3)
    /// whose header is padded with `pad` spaces, so the data can start unaligned.
    fn write_file(path: &Path, pad: usize, values: &[f32]) {
        let header = format!(
            "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}},\
             \"h\":{{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]}}}}{}",
            " ".repeat(pad)
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for h in [0x3800u16, 0xC200] {
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn tensors_read_as_a_dtype_equal_the_stored_ones_cast() {
        let dir = std::env::temp_dir().join(format!("sd-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A bf16 rounding tie (1 + 2^-8 rounds to even: 1), a value beyond f16's range.
        let values = [1.0f32, -2.5, 3.1e-3, 70000.0, 1.0 + 1.0 / 256.0, -0.0];
        // Aligned data (read in place by all threads) and unaligned data (through candle).
        for pad in 0..4 {
            let path = dir.join(format!("pad{pad}.safetensors"));
            write_file(&path, pad, &values);
            let st = MappedSafetensors::open(&path).unwrap();
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                for name in ["a", "h"] {
                    let stored = st.load(name).unwrap().unwrap();
                    let got = st.load_as(name, dtype).unwrap().unwrap();
                    assert_eq!(got.dtype(), dtype);
                    assert_eq!(got.dims(), stored.dims());
                    let bits = |t: Tensor| -> Vec<u32> {
                        let t = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                        t.to_vec1::<f32>()
                            .unwrap()
                            .iter()
                            .map(|x| x.to_bits())
                            .collect()
                    };
                    let want = bits(stored.to_dtype(dtype).unwrap());
                    assert_eq!(bits(got), want, "pad {pad} {name} {dtype:?}");
                }
            }
            let a = st.load_as("a", DType::F32).unwrap().unwrap();
            assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), values);
            let rounded = st.load_as("a", DType::BF16).unwrap().unwrap();
            let rounded = rounded.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            assert_eq!(rounded.to_vec1::<f32>().unwrap()[4], 1.0);
            assert!(st.load_as("missing", DType::F32).unwrap().is_none());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
