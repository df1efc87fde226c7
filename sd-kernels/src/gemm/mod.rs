//! The matrix engine: C = A B (+ bias, + residual) in f32, or with bf16 products and f32
//! accumulation, on packed panels and the best micro-kernel for this CPU.
//!
//! - [`PackedMatrix`] packs a matrix once (weights at load), for the left or right side.
//! - [`matmul`] multiplies any mix of packed and [`Strided`] operands into a row-major C.
//!
//! Kernels: AMX 32x32 bf16 tiles, AVX-512 14x32 f32 and bf16 (`vdpbf16ps`), AVX2 6x16 f32,
//! portable 4x16 f32, chosen by [`Isa::active`](crate::cpu::Isa::active) and, for AMX, the
//! depth (a multiple of 32). Without bf16 instructions (or where they are slower) a bf16
//! product runs in f32 on the values rounded to bf16, so results agree across CPUs.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx_window;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod buffer;
mod driver;
mod generic;
mod kernel;
mod operand;

pub(crate) use buffer::AlignedBuf;
pub use driver::Epilogue;
pub use operand::Strided;
pub(crate) use operand::{ByRows, DepthRows};

use std::mem::MaybeUninit;

use crate::cpu::Isa;
pub(crate) use kernel::PackElem;
use kernel::{is_type, Kernel};
use operand::{Operand, Prepacked};
use rayon::prelude::*;

/// The arithmetic of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 inputs, f32 products and sums.
    F32,
    /// Inputs rounded to bf16, exact products, f32 sums (as `vdpbf16ps` and oneDNN do).
    Bf16,
}

/// Which micro-kernel a product runs on (fixed per process by the detected ISA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelId {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl KernelId {
    /// The kernel for products of `depth` (k) in `precision`: AMX tiles take depths that
    /// are multiples of 32 (so no partial tile is ever loaded), the rest run on AVX-512.
    fn select(precision: Precision, depth: usize) -> Self {
        let isa = Isa::active();
        #[cfg(target_arch = "x86_64")]
        {
            match (isa, precision) {
                (Isa::Amx, Precision::Bf16) if depth > 0 && depth.is_multiple_of(32) => {
                    return KernelId::Amx
                }
                (Isa::Avx512Bf16, Precision::Bf16) => return KernelId::Avx512Bf16,
                (Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512, _) => return KernelId::Avx512,
                (Isa::Avx2, _) => return KernelId::Avx2,
                _ => {}
            }
        }
        let _ = (isa, precision, depth);
        KernelId::Generic
    }

    /// Whether the kernel's packed values are bf16 bits (else f32).
    fn packs_bf16(self) -> bool {
        self.shape().2 == 2
    }

    /// k values per packed group on `side` (A panels of the AMX kernel group 32).
    fn group(self, side: Side) -> usize {
        fn of<K: Kernel>(side: Side) -> usize {
            if side == Side::Left {
                K::KPA
            } else {
                K::KP
            }
        }
        match self {
            KernelId::Generic => of::<generic::F32x4x16>(side),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx2 => of::<avx2::F32x6x16>(side),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512 => of::<avx512::F32x14x32>(side),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512Bf16 => of::<avx512::Bf16x14x32>(side),
            #[cfg(target_arch = "x86_64")]
            KernelId::Amx => of::<amx::AmxBf16x32x32>(side),
        }
    }

    /// (MR, NR, KP) of the kernel.
    fn shape(self) -> (usize, usize, usize) {
        fn of<K: Kernel>() -> (usize, usize, usize) {
            (K::MR, K::NR, K::KP)
        }
        match self {
            KernelId::Generic => of::<generic::F32x4x16>(),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx2 => of::<avx2::F32x6x16>(),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512 => of::<avx512::F32x14x32>(),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512Bf16 => of::<avx512::Bf16x14x32>(),
            #[cfg(target_arch = "x86_64")]
            KernelId::Amx => of::<amx::AmxBf16x32x32>(),
        }
    }
}

/// Whether a product of `depth` in `precision` runs on AMX tiles on this thread's tier.
pub(crate) fn runs_on_tiles(precision: Precision, depth: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        KernelId::select(precision, depth) == KernelId::Amx
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (precision, depth);
        false
    }
}

/// Whether a product of `depth` in `precision` runs, on this thread's tier, on an AVX-512
/// kernel whose left panels [`PackedMatrix::avx512_left_panels`] describes (bf16 on the
/// dot-product kernel, or f32).
pub(crate) fn runs_on_avx512_panels(precision: Precision, depth: usize) -> bool {
    match (precision, KernelId::select(precision, depth)) {
        #[cfg(target_arch = "x86_64")]
        (Precision::Bf16, KernelId::Avx512Bf16) | (Precision::F32, KernelId::Avx512) => true,
        _ => false,
    }
}

/// Which operand of `A B` a packed matrix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A: lines are the rows of the product.
    Left,
    /// B: lines are the columns of the product.
    Right,
}

/// Packed values (f32, or bf16 bits when `bf16`), in the 64-byte aligned buffer they were
/// packed into (no copy after packing).
struct PackedData {
    buf: AlignedBuf,
    len: usize,
    bf16: bool,
}

impl std::fmt::Debug for PackedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedData")
            .field("len", &self.len)
            .field("bf16", &self.bf16)
            .finish()
    }
}

/// A matrix packed once into micro-kernel panels (weights: pack at load, multiply many times).
/// Memory: `lines x depth` values (padded to whole panels), 4 bytes each in f32 and 2 in bf16
/// (when the CPU has bf16 dot products; else bf16-rounded values are kept as f32).
#[derive(Debug)]
pub struct PackedMatrix {
    side: Side,
    precision: Precision,
    kernel: KernelId,
    lines: usize,
    depth: usize,
    data: PackedData,
}

impl PackedMatrix {
    /// Packs `src` (lines x depth) to be the `side` operand of products in `precision`.
    pub fn pack(src: Strided, side: Side, precision: Precision) -> Self {
        assert!(src.in_bounds(), "PackedMatrix::pack: view out of bounds");
        if src.depth_stride == 1 {
            return Self::pack_rows(
                src.data,
                src.line_stride,
                src.lines,
                src.depth,
                side,
                precision,
            );
        }
        let (kernel, w, kp, len) = Self::layout(precision, src.lines, src.depth, side);
        let mut buf = AlignedBuf::new();
        let bf16 = kernel.packs_bf16();
        if bf16 {
            // Always copied into `buf`, which we keep (never the zero-copy view of `panels`).
            let _: operand::Panels<u16> =
                operand::pack_by_rows(&src, 0, src.lines, 0, src.depth, w, kp, &mut buf);
        } else {
            let rounded;
            let src = if precision == Precision::Bf16 {
                // Same numbers as the bf16 kernel: round to bf16, compute in f32.
                rounded = src_to_bf16_values(&src);
                Strided::rows(&rounded, src.lines, src.depth)
            } else {
                src
            };
            let _: operand::Panels<f32> =
                operand::pack_by_rows(&src, 0, src.lines, 0, src.depth, w, kp, &mut buf);
        }
        Self::assemble(side, precision, kernel, src.lines, src.depth, buf, len)
    }

    /// Packs the row-major `[lines, depth]` bf16 matrix in `data` (rows `line_stride` apart),
    /// as weights loaded in bf16 are: no detour through f32 copies. The products see the same
    /// numbers as with [`pack`](Self::pack) on the widened values.
    ///
    /// # Panics
    /// When `data` is too short.
    pub fn pack_bf16_rows(
        data: &[half::bf16],
        lines: usize,
        depth: usize,
        side: Side,
        precision: Precision,
    ) -> Self {
        Self::pack_rows(data, depth, lines, depth, side, precision)
    }

    /// Row-major sources, packed by both threads a few panels per task. f32 values meant for
    /// bf16 products are rounded as they are converted.
    fn pack_rows<S: operand::PackSource>(
        data: &[S],
        line_stride: usize,
        lines: usize,
        depth: usize,
        side: Side,
        precision: Precision,
    ) -> Self {
        assert!(
            lines == 0 || depth == 0 || (lines - 1) * line_stride + depth <= data.len(),
            "PackedMatrix::pack: rows out of bounds"
        );
        let (kernel, w, kp, len) = Self::layout(precision, lines, depth, side);
        let mut buf = AlignedBuf::new();
        let rows = (data, line_stride, lines, depth);
        match (kernel.packs_bf16(), precision) {
            (true, _) => pack_rows_parallel::<u16, S>(rows, w, kp, buf.get(len)),
            (false, Precision::F32) => pack_rows_parallel::<f32, S>(rows, w, kp, buf.get(len)),
            (false, Precision::Bf16) => {
                pack_rows_parallel::<RoundedF32, S>(rows, w, kp, buf.get(len))
            }
        }
        Self::assemble(side, precision, kernel, lines, depth, buf, len)
    }

    /// The kernel, panel width, depth group and packed length for a matrix.
    fn layout(
        precision: Precision,
        lines: usize,
        depth: usize,
        side: Side,
    ) -> (KernelId, usize, usize, usize) {
        let kernel = KernelId::select(precision, depth);
        let (mr, nr, _) = kernel.shape();
        let kp = kernel.group(side);
        let w = if side == Side::Left { mr } else { nr };
        let len = lines.div_ceil(w) * depth.div_ceil(kp) * w * kp;
        (kernel, w, kp, len)
    }

    fn assemble(
        side: Side,
        precision: Precision,
        kernel: KernelId,
        lines: usize,
        depth: usize,
        buf: AlignedBuf,
        len: usize,
    ) -> Self {
        Self {
            side,
            precision,
            kernel,
            lines,
            depth,
            data: PackedData {
                buf,
                len,
                bf16: kernel.packs_bf16(),
            },
        }
    }

    /// The packed values when they are left panels of an AVX-512 kernel, with `E` = u16 for
    /// bf16 products on the dot-product kernel (AVX512-BF16; k pairs) or f32 for f32 products
    /// (single k): panels of [`AVX512_LEFT_PANEL`] lines, `data[(p * groups + g) * kp *
    /// AVX512_LEFT_PANEL + kp l + q]` = depth `kp g + q` of line `p * AVX512_LEFT_PANEL + l`,
    /// zero past the lines or the depth. `None` for other kernels or element types.
    pub(crate) fn avx512_left_panels<E: PackElem>(&self) -> Option<&[E]> {
        self.is_avx512_left::<E>()
            .then(|| self.data.buf.slice(self.data.len))
    }

    /// The values of [`avx512_left_panels`](Self::avx512_left_panels), to be written.
    pub(crate) fn avx512_left_panels_mut<E: PackElem>(&mut self) -> Option<&mut [E]> {
        self.is_avx512_left::<E>()
            .then(|| self.data.buf.slice_mut(self.data.len))
    }

    /// Whether this is a left operand of the AVX-512 kernel that packs `E`, for its precision.
    fn is_avx512_left<E: PackElem>(&self) -> bool {
        avx512_kernel_of::<E>().is_some_and(|(kernel, precision)| {
            self.kernel == kernel && self.precision == precision && self.side == Side::Left
        })
    }

    /// A `lines x depth` left operand in the layout of
    /// [`avx512_left_panels`](Self::avx512_left_panels), its values not written yet, when
    /// products of this depth run on that kernel on this thread's tier (else `None`).
    ///
    /// # Safety
    /// Every value of [`avx512_left_panels_mut`](Self::avx512_left_panels_mut) must be
    /// written before the matrix is read.
    pub(crate) unsafe fn avx512_left_unwritten<E: PackElem>(
        lines: usize,
        depth: usize,
    ) -> Option<Self> {
        let (kernel, precision) = avx512_kernel_of::<E>()?;
        let (selected, _, _, len) = Self::layout(precision, lines, depth, Side::Left);
        if selected != kernel {
            return None;
        }
        let buf = AlignedBuf::unwritten::<E>(len);
        Some(Self::assemble(
            Side::Left,
            precision,
            kernel,
            lines,
            depth,
            buf,
            len,
        ))
    }

    /// Lines (rows for [`Side::Left`], columns for [`Side::Right`]).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The shared dimension k.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The precision products with this matrix run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Which side of the product it was packed for.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len * if self.data.bf16 { 2 } else { 4 }
    }

    /// Writes the `depth` values of line `line` into `out` as f32 (bf16 data widened exactly),
    /// i.e. the numbers products with this matrix use.
    ///
    /// # Panics
    /// When `line >= lines()` or `out.len() != depth()`.
    pub fn unpack_line(&self, line: usize, out: &mut [f32]) {
        assert!(line < self.lines, "unpack_line: line out of range");
        assert_eq!(out.len(), self.depth, "unpack_line: wrong output length");
        let (mr, nr, _) = self.kernel.shape();
        let kp = self.kernel.group(self.side);
        let w = if self.side == Side::Left { mr } else { nr };
        let panel_stride = self.depth.div_ceil(kp) * w * kp;
        let base = (line / w) * panel_stride + (line % w) * kp;
        let at = |k: usize| base + (k / kp) * w * kp + k % kp;
        if self.data.bf16 {
            let data: &[u16] = self.data.buf.slice(self.data.len);
            for (k, o) in out.iter_mut().enumerate() {
                *o = f32::from_bits((data[at(k)] as u32) << 16);
            }
        } else {
            let data: &[f32] = self.data.buf.slice(self.data.len);
            for (k, o) in out.iter_mut().enumerate() {
                *o = data[at(k)];
            }
        }
    }
}

/// Packs a row-major matrix `(data, line_stride, lines, depth)` into `dst` (whole panels of
/// `w` lines), about [`PACK_TASK_BYTES`] per rayon task.
fn pack_rows_parallel<E: PackElem, S: operand::PackSource>(
    (data, line_stride, lines, depth): (&[S], usize, usize, usize),
    w: usize,
    kp: usize,
    dst: &mut [E],
) {
    let panel_stride = depth.div_ceil(kp) * w * kp;
    if panel_stride == 0 {
        return;
    }
    let per_task = (PACK_TASK_BYTES / (panel_stride * std::mem::size_of::<E>())).max(1);
    dst.par_chunks_mut(per_task * panel_stride)
        .enumerate()
        .for_each(|(t, chunk)| {
            let l0 = t * per_task * w;
            let nl = (per_task * w).min(lines - l0);
            operand::pack_contiguous(data, line_stride, l0, nl, 0, depth, w, kp, chunk);
        });
}

/// Bytes of packed weights one rayon task of [`pack_rows_parallel`] writes.
const PACK_TASK_BYTES: usize = 1 << 20;

/// An f32 packed element that holds its value rounded to bf16: the f32 kernels' operands for
/// bf16 products on CPUs without bf16 instructions (same numbers as the bf16 kernels).
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct RoundedF32(f32);

impl PackElem for RoundedF32 {
    fn from_f32(x: f32) -> Self {
        RoundedF32(round_bf16(x))
    }

    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(x);
        }
    }

    fn from_bf16_slice(src: &[half::bf16], dst: &mut [Self]) {
        for (d, x) in dst.iter_mut().zip(src) {
            *d = RoundedF32(x.to_f32());
        }
    }
}

crate::simd::multiversion! {
    /// dst[i] = src[i] widened to f32 (exact).
    fn widen_bf16_slice(src: &[half::bf16], dst: &mut [f32]) {
        for (d, x) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((x.to_bits() as u32) << 16);
        }
    }
}

/// Copies a view into a dense lines x depth matrix of values rounded to bf16.
fn src_to_bf16_values(src: &Strided) -> Vec<f32> {
    let mut out = Vec::with_capacity(src.lines * src.depth);
    for l in 0..src.lines {
        for k in 0..src.depth {
            let v = src.data[l * src.line_stride + k * src.depth_stride];
            out.push(round_bf16(v));
        }
    }
    out
}

/// `x` rounded to the nearest bf16 (ties to even), as f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((kernel::bf16_bits(x) as u32) << 16)
}

/// One operand of [`matmul`]: packed once, or a strided view packed on the fly.
#[derive(Clone, Copy)]
pub enum MatOperand<'a> {
    /// Packed once.
    Packed(&'a PackedMatrix),
    /// Packed on the fly.
    Strided(Strided<'a>),
}

impl<'a> From<&'a PackedMatrix> for MatOperand<'a> {
    fn from(p: &'a PackedMatrix) -> Self {
        MatOperand::Packed(p)
    }
}

impl<'a> From<Strided<'a>> for MatOperand<'a> {
    fn from(s: Strided<'a>) -> Self {
        MatOperand::Strided(s)
    }
}

/// C = A B + epilogue for `a` (m lines x k) and `b` (n lines x k) into row-major `c`
/// (`m` rows, stride `ldc`). Packed operands must have been packed for their side in
/// `precision`.
///
/// # Panics
/// When shapes, sides, precisions or the output length disagree.
pub fn matmul(
    a: MatOperand,
    b: MatOperand,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue,
    precision: Precision,
) {
    // SAFETY: the product only ever stores initialised values into `c`.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_unwritten(a, b, c, ldc, epilogue, precision)
}

/// [`matmul`] into a buffer not yet written: the first pass over k stores every element of
/// C (rows `m`, columns `n`) before any later pass reads it.
pub(crate) fn matmul_unwritten(
    a: MatOperand,
    b: MatOperand,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    epilogue: &Epilogue,
    precision: Precision,
) {
    matmul_with_source::<NoSource>(a, RightOperand::Mat(b), c, ldc, epilogue, precision)
}

/// The right operand of a product, including the internal on-the-fly sources.
pub(crate) enum RightOperand<'a, S: DepthRows> {
    Mat(MatOperand<'a>),
    Rows {
        source: &'a S,
        lines: usize,
        depth: usize,
    },
    /// Panels of [`BF16_PAIR_PANEL`] lines already in the bf16 dot-product kernel's packed
    /// layout, read in place: with `groups` = depth / 2 rounded up,
    /// `data[(p * groups + g) * 64 + 2 l + r]` = depth `2 g + r` of line `32 p + l`, depth
    /// padded with zeros to even, the last panel's missing lines with anything finite. Only for
    /// products on that kernel.
    Bf16Pairs {
        data: &'a [u16],
        lines: usize,
        depth: usize,
    },
}

/// The lines of a left panel of the AVX-512 kernels (their MR); see
/// [`PackedMatrix::avx512_left_panels`].
pub(crate) const AVX512_LEFT_PANEL: usize = 14;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    AVX512_LEFT_PANEL == <avx512::Bf16x14x32 as Kernel>::MR
        && AVX512_LEFT_PANEL == <avx512::F32x14x32 as Kernel>::MR
);

/// The AVX-512 kernel whose packed element is `E`, and the precision of its products: u16
/// for bf16 on the dot-product kernel, f32 for f32.
fn avx512_kernel_of<E: PackElem>() -> Option<(KernelId, Precision)> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_type::<E, u16>() {
            return Some((KernelId::Avx512Bf16, Precision::Bf16));
        }
        if is_type::<E, f32>() {
            return Some((KernelId::Avx512, Precision::F32));
        }
    }
    None
}

/// The width of a [`RightOperand::Bf16Pairs`] panel: the bf16 dot-product kernel's NR.
pub(crate) const BF16_PAIR_PANEL: usize = 32;

impl<S: DepthRows> Clone for RightOperand<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S: DepthRows> Copy for RightOperand<'_, S> {}

/// A [`DepthRows`] type for products that use no custom source.
pub(crate) struct NoSource;
impl DepthRows for NoSource {
    fn row(&self, _: usize, _: usize, _: &mut [f32]) {
        unreachable!("NoSource is never read")
    }
}

fn dims(op: &MatOperand, side: Side, precision: Precision) -> (usize, usize) {
    match op {
        MatOperand::Packed(p) => {
            assert_eq!(p.side, side, "matmul: operand packed for the other side");
            assert_eq!(
                p.precision, precision,
                "matmul: operand packed for another precision"
            );
            (p.lines, p.depth)
        }
        MatOperand::Strided(s) => {
            assert!(s.in_bounds(), "matmul: strided operand out of bounds");
            (s.lines, s.depth)
        }
    }
}

pub(crate) fn matmul_with_source<S: DepthRows>(
    a: MatOperand,
    b: RightOperand<S>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    epi: &Epilogue,
    precision: Precision,
) {
    let (m, k) = dims(&a, Side::Left, precision);
    let (n, kb) = match &b {
        RightOperand::Mat(b) => dims(b, Side::Right, precision),
        RightOperand::Rows { lines, depth, .. } => (*lines, *depth),
        RightOperand::Bf16Pairs { data, lines, depth } => {
            let panels = lines.div_ceil(BF16_PAIR_PANEL);
            assert!(
                data.len() >= panels * depth.div_ceil(2) * 2 * BF16_PAIR_PANEL,
                "matmul: bf16 pair panels too small"
            );
            (*lines, *depth)
        }
    };
    assert_eq!(k, kb, "matmul: inner dimensions differ");
    assert!(
        ldc >= n && (m == 0 || c.len() >= (m - 1) * ldc + n),
        "matmul: output too small"
    );
    if let Some(b) = epi.bias_row {
        assert!(b.len() >= m, "matmul: row bias too short");
    }
    if let Some(b) = epi.bias_col {
        assert!(b.len() >= n, "matmul: column bias too short");
    }
    if let Some(r) = epi.residual {
        assert!(
            epi.residual_ld >= n && (m == 0 || r.len() >= (m - 1) * epi.residual_ld + n),
            "matmul: residual too small"
        );
    }
    let kernel = KernelId::select(precision, k);
    #[cfg(target_arch = "x86_64")]
    if let RightOperand::Bf16Pairs { .. } = b {
        assert_eq!(
            kernel,
            KernelId::Avx512Bf16,
            "matmul: bf16 pairs are for the bf16 dot-product kernel"
        );
    }
    for op in [
        Some(&a),
        if let RightOperand::Mat(b) = &b {
            Some(b)
        } else {
            None
        },
    ]
    .into_iter()
    .flatten()
    {
        if let MatOperand::Packed(p) = op {
            assert_eq!(p.kernel, kernel, "matmul: packed for another kernel");
        }
    }
    // SAFETY: shapes and lengths were checked above.
    unsafe {
        match kernel {
            KernelId::Generic => run::<generic::F32x4x16, S>(m, n, k, a, b, c, ldc, epi, precision),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx2 => run::<avx2::F32x6x16, S>(m, n, k, a, b, c, ldc, epi, precision),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512 => run::<avx512::F32x14x32, S>(m, n, k, a, b, c, ldc, epi, precision),
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512Bf16 => {
                run::<avx512::Bf16x14x32, S>(m, n, k, a, b, c, ldc, epi, precision)
            }
            #[cfg(target_arch = "x86_64")]
            KernelId::Amx => run::<amx::AmxBf16x32x32, S>(m, n, k, a, b, c, ldc, epi, precision),
        }
    }
}

/// Strided operands rounded to bf16 while packing (f32 kernels emulating bf16 products).
struct RoundedBf16<T>(T);

impl<T: DepthRows> DepthRows for RoundedBf16<T> {
    fn row(&self, k: usize, l0: usize, out: &mut [f32]) {
        self.0.row(k, l0, out);
        for v in out.iter_mut() {
            *v = round_bf16(*v);
        }
    }
}

trait PackedAccess<E> {
    fn prepacked(&self) -> Prepacked<'_, E>;
}

impl<E: PackElem> PackedAccess<E> for PackedMatrix {
    fn prepacked(&self) -> Prepacked<'_, E> {
        let kp = self.kernel.group(self.side);
        let groups_total = self.depth.div_ceil(kp);
        let matches = if self.data.bf16 {
            is_type::<E, u16>()
        } else {
            is_type::<E, f32>()
        };
        assert!(matches, "packed data type does not match its kernel");
        let data: &[E] = self.data.buf.slice(self.data.len);
        Prepacked { data, groups_total }
    }
}

/// Products with at most this many columns read a row-major f32 A in place (on kernels that
/// can); wider ones pack it. Packing pays when each A panel meets many B panels: paired runs,
/// AVX-512 f32, 2 threads, packed against in place: 2048³ 1.22x, 1024x320 -> 2560 1.11x,
/// 512x1280 -> 10240 1.08x, 1024x640 -> 1280 1.07x, but 8192x320 -> 320 0.90x,
/// 1024x1280 -> 320 0.88x; at 640 columns even (0.96-1.04x).
const DIRECT_A_MAX_COLS: usize = 640;

/// Dispatches the operand kinds to the monomorphised driver.
#[allow(clippy::too_many_arguments)]
unsafe fn run<K: Kernel, S: DepthRows>(
    m: usize,
    n: usize,
    k: usize,
    a: MatOperand,
    b: RightOperand<S>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    epi: &Epilogue,
    precision: Precision,
) {
    // f32 kernels emulate bf16 products on rounded inputs (packed ones are rounded already).
    let emulate = precision == Precision::Bf16 && K::KP == 1;
    let c = c.as_mut_ptr().cast::<f32>();
    match a {
        MatOperand::Packed(p) => with_right::<K, S, _>(
            m,
            n,
            k,
            &PackedAccess::<K::Elem>::prepacked(p),
            b,
            c,
            ldc,
            epi,
            emulate,
        ),
        MatOperand::Strided(s) if emulate => {
            with_right::<K, S, _>(m, n, k, &ByRows(&RoundedBf16(s)), b, c, ldc, epi, emulate)
        }
        MatOperand::Strided(s)
            if K::DIRECT_A && s.depth_stride == 1 && m >= K::MR && n <= DIRECT_A_MAX_COLS =>
        {
            // Whole panels read in place; the last rows (fewer than MR) packed as usual.
            let main = m / K::MR * K::MR;
            // SAFETY: only f32 kernels read A in place (DIRECT_A); checked by type.
            assert!(is_type::<K::Elem, f32>(), "matmul: A read in place is f32");
            let data: &[K::Elem] = std::slice::from_raw_parts(s.data.as_ptr().cast(), s.data.len());
            let direct = operand::DirectRows {
                data,
                ld: s.line_stride,
            };
            with_right::<K, S, _>(main, n, k, &direct, b, c, ldc, epi, emulate);
            if main < m {
                let tail = Strided {
                    data: &s.data[main * s.line_stride..],
                    lines: m - main,
                    ..s
                };
                let epi = epi.rows_from(main);
                with_right::<K, S, _>(
                    m - main,
                    n,
                    k,
                    &tail,
                    b,
                    c.add(main * ldc),
                    ldc,
                    &epi,
                    emulate,
                );
            }
        }
        MatOperand::Strided(s) => with_right::<K, S, _>(m, n, k, &s, b, c, ldc, epi, emulate),
    }
}

crate::simd::multiversion! {
    /// dst[i] = bf16 bits of src[i], rounded to nearest even (NaN stays NaN).
    fn to_bf16_slice(src: &[f32], dst: &mut [u16]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = kernel::bf16_bits(x);
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn with_right<K: Kernel, S: DepthRows, A: Operand<K::Elem>>(
    m: usize,
    n: usize,
    k: usize,
    a: &A,
    b: RightOperand<S>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    emulate: bool,
) {
    match b {
        RightOperand::Mat(MatOperand::Packed(p)) => driver::gemm::<K, _, _>(
            m,
            n,
            k,
            a,
            &PackedAccess::<K::Elem>::prepacked(p),
            c,
            ldc,
            epi,
        ),
        RightOperand::Mat(MatOperand::Strided(s)) if emulate => {
            driver::gemm::<K, _, _>(m, n, k, a, &ByRows(&RoundedBf16(s)), c, ldc, epi)
        }
        RightOperand::Mat(MatOperand::Strided(s)) => {
            driver::gemm::<K, _, _>(m, n, k, a, &s, c, ldc, epi)
        }
        RightOperand::Rows { source, .. } if emulate => {
            driver::gemm::<K, _, _>(m, n, k, a, &ByRows(&RoundedBf16(source)), c, ldc, epi)
        }
        RightOperand::Rows { source, .. } => {
            driver::gemm::<K, _, _>(m, n, k, a, &ByRows(source), c, ldc, epi)
        }
        RightOperand::Bf16Pairs { data, depth, .. } => {
            assert!(
                K::KP == 2 && K::NR == BF16_PAIR_PANEL && !emulate,
                "matmul: bf16 pairs are for the bf16 dot-product kernel"
            );
            // SAFETY: K::Elem is the u16 of bf16 bits on this kernel (KP 2, checked above).
            let data: &[K::Elem] = std::slice::from_raw_parts(data.as_ptr().cast(), data.len());
            let b = Prepacked {
                data,
                groups_total: depth.div_ceil(2),
            };
            driver::gemm::<K, _, _>(m, n, k, a, &b, c, ldc, epi)
        }
    }
}

#[cfg(test)]
mod tests;
