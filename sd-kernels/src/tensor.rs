//! The glue between candle tensors and the kernels' slices: borrow an f32 CPU tensor's
//! contiguous data, and wrap a freshly computed buffer as a tensor without copying it.

use candle_core::{CpuStorage, DType, Device, Shape, Storage, Tensor};

use crate::error::{Error, Result};
use crate::gemm::{PackedMatrix, Precision, Side, Strided};

/// Whether the fast CPU path can take `t` (f32, on the CPU).
pub fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Runs `f` on the contiguous f32 data of `t` (made contiguous first if it is not).
pub fn with_f32<R>(op: &'static str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if !is_cpu_f32(t) {
        return Err(Error::Unsupported {
            op,
            dtype: t.dtype(),
            device: format!("{:?}", t.device()),
        });
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        unreachable!("checked: f32 on the CPU");
    };
    let start = layout.start_offset();
    Ok(f(&data[start..start + layout.shape().elem_count()]))
}

/// Packs the weight `t`, read as a row-major `[lines, depth]` matrix (any float dtype, any
/// device), to be the `side` operand of products in `precision`. bf16 weights are packed
/// from their own values (no f32 copy).
pub(crate) fn pack_weight(
    op: &'static str,
    t: &Tensor,
    (lines, depth): (usize, usize),
    side: Side,
    precision: Precision,
) -> Result<PackedMatrix> {
    pack_weight_rows(op, t, (lines, depth), side, precision, None)
}

/// [`pack_weight`] of a convolution's weight `[cout, cin, kh, kw]` with its depth in (ky, kx,
/// ci) order instead of the stored (ci, ky, kx): each output channel's row is transposed
/// (cin x taps -> taps x cin) in its own dtype, both threads at once, then packed.
pub(crate) fn pack_weight_taps_first(
    op: &'static str,
    t: &Tensor,
    side: Side,
    precision: Precision,
) -> Result<PackedMatrix> {
    let (cout, cin, kh, kw) = t.dims4()?;
    let shape = (cout, cin * kh * kw);
    pack_weight_rows(op, t, shape, side, precision, Some((cin, kh * kw)))
}

/// [`pack_weight`], each row first rewritten from (ci, tap) to (tap, ci) order when
/// `reorder` gives (cin, taps).
fn pack_weight_rows(
    op: &'static str,
    t: &Tensor,
    (lines, depth): (usize, usize),
    side: Side,
    precision: Precision,
    reorder: Option<(usize, usize)>,
) -> Result<PackedMatrix> {
    let t = t.to_device(&Device::Cpu)?;
    if t.dtype() == DType::BF16 {
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(CpuStorage::BF16(data)) = &*storage else {
            unreachable!("checked: bf16 on the CPU");
        };
        let start = layout.start_offset();
        let data = &data[start..start + layout.shape().elem_count()];
        let pack =
            |rows: &[half::bf16]| PackedMatrix::pack_bf16_rows(rows, lines, depth, side, precision);
        return Ok(match reorder {
            Some((cin, taps)) => pack(&taps_first(data, cin, taps)),
            None => pack(data),
        });
    }
    let t = t.to_dtype(DType::F32)?;
    with_f32(op, &t, |d| {
        let pack =
            |rows: &[f32]| PackedMatrix::pack(Strided::rows(rows, lines, depth), side, precision);
        match reorder {
            Some((cin, taps)) => pack(&taps_first(d, cin, taps)),
            None => pack(d),
        }
    })
}

/// Rows of `cin * taps` values in (ci, tap) order rewritten in (tap, ci) order.
fn taps_first<T: Copy + Default + Send + Sync>(src: &[T], cin: usize, taps: usize) -> Vec<T> {
    use rayon::prelude::*;
    let row = cin * taps;
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(row)
        .zip(src.par_chunks(row))
        .for_each(|(dst, src)| taps_first_row(src, cin, dst));
    out
}

/// One row of [`taps_first`]: `src[ci * taps + tap]` written to `dst[tap * cin + ci]`.
pub(crate) fn taps_first_row<T: Copy>(src: &[T], cin: usize, dst: &mut [T]) {
    debug_assert_eq!(src.len(), dst.len());
    let taps = src.len() / cin;
    for (ci, of_channel) in src.chunks_exact(taps).enumerate() {
        for (tap, v) in of_channel.iter().enumerate() {
            dst[tap * cin + ci] = *v;
        }
    }
}

/// [`with_f32`] for an optional tensor: `f(None)` when there is none.
pub fn with_f32_opt<R>(
    op: &'static str,
    t: Option<&Tensor>,
    f: impl FnOnce(Option<&[f32]>) -> R,
) -> Result<R> {
    match t {
        Some(t) => with_f32(op, t, |d| f(Some(d))),
        None => Ok(f(None)),
    }
}

/// A CPU f32 tensor of `shape` owning `data` (no copy).
pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, shape.into(), &Device::Cpu)?)
}

/// A zeroed output buffer of `len` values. Large ones come from `calloc`, i.e. fresh pages
/// the OS already zeroed, so this costs no extra pass over memory.
pub(crate) fn output(len: usize) -> Vec<f32> {
    vec![0f32; len]
}

/// An output buffer that a product writes in full before anything reads it: unlike
/// [`output`], no pass zeroes it (blocks the allocator reuses are not fresh zero pages; that
/// zeroing was ~5% of a bf16 UNet call).
pub(crate) struct Unwritten(Vec<std::mem::MaybeUninit<f32>>);

impl Unwritten {
    /// `len` values, none written yet. Builds with debug assertions (the tests) start them
    /// as NaN, so a value the writer missed fails any comparison instead of reading as 0.
    pub(crate) fn new(len: usize) -> Self {
        if cfg!(debug_assertions) {
            return Self(vec![std::mem::MaybeUninit::new(f32::NAN); len]);
        }
        let mut v = Vec::with_capacity(len);
        // SAFETY: `MaybeUninit` needs no initialisation.
        unsafe { v.set_len(len) };
        Self(v)
    }

    /// The values, to be written.
    pub(crate) fn slots(&mut self) -> &mut [std::mem::MaybeUninit<f32>] {
        &mut self.0
    }

    /// The buffer as values.
    ///
    /// # Safety
    /// Every value has been written.
    pub(crate) unsafe fn assume_written(self) -> Vec<f32> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        // SAFETY: same layout and allocation; all values are initialised (the caller's word).
        Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity())
    }
}
