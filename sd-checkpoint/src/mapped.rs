//! A `.safetensors` file read one tensor at a time from a memory map. Each tensor is copied
//! out when asked for and this process's copy of its pages is dropped right after, so reading a
//! 3.4 GB UNet never holds the file's pages and all the copies at once (candle's `load` reads
//! the whole file first), and a network built tensor by tensor holds one read copy at a time.

use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use safetensors::tensor::{Metadata, TensorView};

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
        let Some(info) = self.metadata.info(name) else {
            return Ok(None);
        };
        let fail = |e: String| checkpoint_error(&self.path, format!("cannot read {name}: {e}"));
        let (start, end) = info.data_offsets;
        let (start, end) = (self.data_start + start, self.data_start + end);
        let view = TensorView::new(info.dtype, info.shape.clone(), &self.map[start..end])
            .map_err(|e| fail(e.to_string()))?;
        let tensor = view.load(&Device::Cpu).map_err(|e| fail(e.to_string()))?;
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
        Ok(Some(tensor))
    }
}
