//! PyTorch's pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`): the zip format torch writes
//! since 1.6 and the older legacy (non-zip) format, memory-mapped and read with the safe
//! allow-list pickle reader (`checkpoint/pickle.rs`).
//!
//! Zip format: `<name>/data.pkl` is the pickled object; each storage is an uncompressed record
//! `<name>/data/<key>`. Legacy format: five pickles back to back (magic number, protocol
//! version, system info, the object, the list of storage keys), then every storage in that
//! order as an 8-byte little-endian element count followed by its raw bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use super::pickle::{self, TensorRef, Value};
use crate::error::{Error, Result};

/// Which of torch's two serialization formats a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CkptFormat {
    /// `torch.save` since 1.6: a zip archive of a pickle and raw storages.
    Zip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and torch < 1.6.
    Legacy,
}

/// torch's `MAGIC_NUMBER` of the legacy format, 0x1950a86a20f9469cfc6c, as little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// An opened pickled checkpoint: tensor descriptions, their bytes still in the mapped file.
pub struct CkptFile {
    path: PathBuf,
    mmap: Mmap,
    format: CkptFormat,
    storages: HashMap<String, Range<usize>>,
    tensors: BTreeMap<String, TensorRef>,
}

impl std::fmt::Debug for CkptFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CkptFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl CkptFile {
    /// Maps `path` and reads its pickle. Tensors nested anywhere in the object are listed under
    /// dotted names; when the object is a dict with a `state_dict` dict, only that one counts
    /// (Lightning checkpoints keep optimizer and trainer state beside it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fail = |message: String| Error::Checkpoint {
            path: path.clone(),
            message,
        };
        let file = std::fs::File::open(&path).map_err(|e| fail(format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only; like every mmap reader (candle, safetensors) we rely on
        // the file not being truncated by another process while it is mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map: {e}")))?;
        let (format, object, storages) = if mmap.starts_with(b"PK\x03\x04") {
            let (object, storages) = read_zip(&mmap).map_err(fail)?;
            (CkptFormat::Zip, object, storages)
        } else if mmap.starts_with(&[0x80]) {
            let (object, storages) = read_legacy(&mmap).map_err(fail)?;
            (CkptFormat::Legacy, object, storages)
        } else {
            return Err(fail(
                "not a PyTorch checkpoint (neither a zip archive nor a pickle)".into(),
            ));
        };
        let mut tensors = BTreeMap::new();
        let root = match &object {
            Value::Dict(items) => items
                .iter()
                .find(|(k, v)| *k == Value::Str("state_dict".into()) && matches!(v, Value::Dict(_)))
                .map(|(_, v)| v)
                .unwrap_or(&object),
            _ => &object,
        };
        flatten(root, String::new(), &mut tensors);
        for (name, tensor) in &tensors {
            check_bounds(tensor, &storages).map_err(|m| fail(format!("tensor {name}: {m}")))?;
        }
        Ok(Self {
            path,
            mmap,
            format,
            storages,
            tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The serialization format of the file.
    pub fn format(&self) -> CkptFormat {
        self.format
    }

    /// Every tensor's name, dtype and shape, without reading any tensor data.
    pub fn tensor_infos(&self) -> impl Iterator<Item = (&str, DType, &[usize])> {
        self.tensors
            .iter()
            .map(|(name, t)| (name.as_str(), t.storage.dtype, t.shape.as_slice()))
    }

    /// Copies one tensor out of the mapped file (made contiguous), in its stored dtype.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let fail = |message: String| Error::Checkpoint {
            path: self.path.clone(),
            message,
        };
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| fail(format!("no tensor named {name}")))?;
        // Bounds were checked in `open`, so the slicing below cannot go out of range.
        let range = self.storages[&t.storage.key].clone();
        let data = &self.mmap[range];
        let size = t.storage.dtype.size_in_bytes();
        // `open` checked that the product of the dimensions fits.
        let numel: usize = t.shape.iter().product();
        let tensor = if numel == 0 {
            Tensor::zeros(t.shape.as_slice(), t.storage.dtype, device)
        } else if is_contiguous(&t.shape, &t.stride) {
            let bytes = &data[t.offset * size..(t.offset + numel) * size];
            Tensor::from_raw_buffer(bytes, t.storage.dtype, &t.shape, device)
        } else {
            let bytes = gather(data, size, t);
            Tensor::from_raw_buffer(&bytes, t.storage.dtype, &t.shape, device)
        };
        tensor.map_err(|e| fail(format!("tensor {name}: {e}")))
    }
}

fn flatten(value: &Value, prefix: String, out: &mut BTreeMap<String, TensorRef>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Tensor(t) => {
            out.insert(prefix, t.clone());
        }
        Value::Dict(items) => {
            for (key, value) in items {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(value, join(&key), out);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, value) in items.iter().enumerate() {
                flatten(value, join(&i.to_string()), out);
            }
        }
        _ => {}
    }
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (dim, st) in shape.iter().zip(stride).rev() {
        if *dim != 1 && *st != expected {
            return false;
        }
        expected *= dim;
    }
    true
}

/// Copies a strided view element by element into row-major order.
fn gather(data: &[u8], size: usize, t: &TensorRef) -> Vec<u8> {
    let numel: usize = t.shape.iter().product();
    let mut out = Vec::with_capacity(numel * size);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&data[at * size..(at + 1) * size]);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

fn check_bounds(
    t: &TensorRef,
    storages: &HashMap<String, Range<usize>>,
) -> std::result::Result<(), String> {
    let range = storages
        .get(&t.storage.key)
        .ok_or_else(|| format!("its storage {:?} is missing from the file", t.storage.key))?;
    let size = t.storage.dtype.size_in_bytes();
    let available = range.len() / size;
    // Even an empty shape must have dimensions whose product fits (candle multiplies them all);
    // without a zero, this product is the element count.
    let numel = t
        .shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("its shape's element count overflows")?;
    if t.shape.contains(&0) {
        return Ok(());
    }
    // A view cannot hold more elements than its storage unless strides repeat them (0 or
    // overlapping); loading such a view would allocate its full size (terabytes, for a hostile
    // shape), so it is refused.
    if numel > available {
        return Err(format!(
            "it has {numel} elements but its storage holds {available}: the file is corrupt"
        ));
    }
    let mut last = t.offset;
    for (dim, stride) in t.shape.iter().zip(&t.stride) {
        last = (dim - 1)
            .checked_mul(*stride)
            .and_then(|span| last.checked_add(span))
            .ok_or("its strides overflow")?;
    }
    if last >= available {
        return Err(format!(
            "it reads element {last} of a storage holding {available} ({} bytes): the file is truncated or corrupt",
            range.len()
        ));
    }
    Ok(())
}

type Storages = HashMap<String, Range<usize>>;

fn read_zip(data: &[u8]) -> std::result::Result<(Value, Storages), String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(data))
        .map_err(|e| format!("the zip archive is unreadable: {e}"))?;
    let mut records = HashMap::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i} is unreadable: {e}"))?;
        let name = entry
            .name()
            .map_err(|e| format!("zip entry {i}: {e}"))?
            .into_owned();
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "zip entry {name} is compressed; torch stores records uncompressed"
            ));
        }
        let start = entry
            .data_start()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("zip entry {name} has no data offset"))?;
        let len = usize::try_from(entry.compressed_size())
            .map_err(|_| format!("zip entry {name} is too large"))?;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| {
                format!("zip entry {name} runs past the end of the file (truncated?)")
            })?;
        records.insert(name, start..end);
    }
    let pkl_name = records
        .keys()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .cloned()
        .ok_or("the zip archive has no data.pkl: not a torch checkpoint")?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let (object, _) = pickle::read(&data[records[&pkl_name].clone()])?;
    let data_prefix = format!("{prefix}data/");
    let storages = records
        .into_iter()
        .filter_map(|(name, range)| {
            name.strip_prefix(&data_prefix)
                .map(|key| (key.to_string(), range))
        })
        .collect();
    Ok((object, storages))
}

fn read_legacy(data: &[u8]) -> std::result::Result<(Value, Storages), String> {
    let mut pos = 0;
    let mut next = |what: &str| -> std::result::Result<Value, String> {
        let (value, used) = pickle::read(&data[pos..]).map_err(|e| format!("{what}: {e}"))?;
        pos += used;
        Ok(value)
    };
    match next("magic number")? {
        Value::BigInt(bytes) if bytes == LEGACY_MAGIC => {}
        _ => return Err("a pickle, but not a torch checkpoint (no torch magic number)".into()),
    }
    next("protocol version")?;
    if let Value::Dict(info) = next("system info")? {
        let big_endian = info
            .iter()
            .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(false));
        if big_endian {
            return Err("the checkpoint was written on a big-endian machine".into());
        }
    }
    let object = next("the saved object")?;
    let keys = match next("storage keys")? {
        Value::List(keys) => keys,
        other => return Err(format!("storage keys should be a list, not {other:?}")),
    };
    let mut dtypes = HashMap::new();
    collect_storages(&object, &mut dtypes);
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("a storage key is not a string".into());
        };
        let dtype = dtypes.get(&key).copied().ok_or_else(|| {
            format!("storage {key} is listed but never used, its size is unknown")
        })?;
        let header = data
            .get(pos..pos + 8)
            .ok_or_else(|| format!("the file ends before storage {key} (truncated)"))?;
        let count = u64::from_le_bytes(header.try_into().map_err(|_| "bad storage header")?);
        let len = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| format!("storage {key} claims {count} elements"))?;
        let start = pos + 8;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| format!("the file ends inside storage {key} (truncated)"))?;
        storages.insert(key, start..end);
        pos = end;
    }
    Ok((object, storages))
}

fn collect_storages(value: &Value, out: &mut HashMap<String, DType>) {
    match value {
        Value::Tensor(t) => {
            out.insert(t.storage.key.clone(), t.storage.dtype);
        }
        Value::Storage(s) => {
            out.insert(s.key.clone(), s.dtype);
        }
        Value::Dict(items) => items.iter().for_each(|(k, v)| {
            collect_storages(k, out);
            collect_storages(v, out);
        }),
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|v| collect_storages(v, out))
        }
        _ => {}
    }
}
