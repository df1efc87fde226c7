//! The micro-kernel contract shared by every instruction set: multiply one packed A panel
//! (`MR` rows) by one packed B panel (`NR` columns) over `groups` k-groups and write the
//! `MR x NR` tile of C through [`Tile`].
//!
//! Packed layout (both operands): for each k-group g, for each line l of the panel (a row of A,
//! a column of B), `KP` consecutive k values: element `(g * W + l) * KP + p` holds k = g*KP + p.
//! `KP` is 1 for f32 and 2 for bf16 (`vdpbf16ps` multiplies pairs of k).

/// Where a micro-kernel writes its tile, and what it adds on the first pass over k.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Top-left element of the tile in C.
    pub c: *mut f32,
    /// Distance between rows of C, in elements.
    pub ldc: usize,
    /// Valid rows (<= MR) and columns (<= NR) of this tile.
    pub rows: usize,
    /// Valid columns.
    pub cols: usize,
    /// First pass over k: C = acc + bias + residual; later passes: C += acc.
    pub first: bool,
    /// Per-row bias (indexed by tile row), or null.
    pub bias_row: *const f32,
    /// Per-column bias (indexed by tile column), or null.
    pub bias_col: *const f32,
    /// Residual added on the first pass (same tile shape), or null.
    pub residual: *const f32,
    /// Distance between rows of the residual.
    pub ld_residual: usize,
    /// This tile is the first of its block to read its A panel (which may still be in
    /// memory, not cache): kernels prefetch ahead of it.
    pub fresh_a: bool,
    /// The same for the B panel.
    pub fresh_b: bool,
}

/// The value the epilogue adds to accumulator `(r, j)` on the first pass.
///
/// # Safety
/// The tile's pointers must be valid for `r < rows`, `j < cols`.
#[inline(always)]
pub(crate) unsafe fn first_pass_extra(t: &Tile, r: usize, j: usize) -> f32 {
    let mut v = 0.0;
    if !t.bias_row.is_null() {
        v += *t.bias_row.add(r);
    }
    if !t.bias_col.is_null() {
        v += *t.bias_col.add(j);
    }
    if !t.residual.is_null() {
        v += *t.residual.add(r * t.ld_residual + j);
    }
    v
}

/// Writes a tile held in a plain `[MR][NR]` array (edge tiles, and the portable kernel).
///
/// # Safety
/// `t` must describe valid memory for its rows and columns.
pub(crate) unsafe fn store_scalar(acc: &[f32], nr: usize, t: &Tile) {
    for r in 0..t.rows {
        let row = t.c.add(r * t.ldc);
        for j in 0..t.cols {
            let v = acc[r * nr + j];
            let dst = row.add(j);
            if t.first {
                *dst = v + first_pass_extra(t, r, j);
            } else {
                *dst += v;
            }
        }
    }
}

/// A micro-kernel for one instruction set and one packed element type.
pub(crate) trait Kernel: Sync {
    /// Packed element: `f32`, or `u16` holding bf16 bits.
    type Elem: PackElem;
    /// Rows of A per panel.
    const MR: usize;
    /// Columns of B per panel.
    const NR: usize;
    /// k values per group (of B, and of A unless [`KPA`](Self::KPA) says otherwise).
    const KP: usize;
    /// k values per group of packed A panels: AMX reads each A row as 32 consecutive k.
    const KPA: usize = Self::KP;
    /// k values per cache block (a multiple of `KP`).
    const KC: usize;
    /// Rows of A per cache block (a multiple of `MR`).
    const MC: usize;
    /// Columns of B per cache block (a multiple of `NR`).
    const NC: usize;

    /// Whether the kernel can read A in place from row-major storage (`a_rs > 0` in `run`).
    const DIRECT_A: bool = false;

    /// `tile = A_panel * B_panel` over `groups` k-groups (see the module docs for the layout).
    /// `a_rs == 0`: A is a packed panel; else A is row-major, row r at `a + r * a_rs`
    /// (only when [`DIRECT_A`](Self::DIRECT_A)).
    ///
    /// # Safety
    /// `a` holds `groups * MR * KP` elements (or MR rows of `groups * KP`), `b` holds
    /// `groups * NR * KP`; `tile` is valid.
    unsafe fn run(
        groups: usize,
        a: *const Self::Elem,
        a_rs: usize,
        b: *const Self::Elem,
        tile: &Tile,
    );
}

/// Whether `A` and `B` are the same type (the packers and kernels specialise on f32 / u16).
pub(crate) fn is_type<A: 'static, B: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
}

/// A packed element type, made from f32 values.
pub(crate) trait PackElem: Copy + Default + Send + Sync + 'static {
    /// The packed value of `x`.
    fn from_f32(x: f32) -> Self;

    /// `dst[i] = from_f32(src[i])` over two slices of one length.
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);

    /// The packed values of bf16 numbers (exact: bf16 widens to f32 without rounding).
    fn from_bf16_slice(src: &[half::bf16], dst: &mut [Self]);
}

impl PackElem for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }

    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }

    fn from_bf16_slice(src: &[half::bf16], dst: &mut [Self]) {
        super::widen_bf16_slice(src, dst);
    }
}

impl PackElem for u16 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16_bits(x)
    }

    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        super::to_bf16_slice(src, dst);
    }

    fn from_bf16_slice(src: &[half::bf16], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_bits();
        }
    }
}

/// The bits of `x` rounded to the nearest bf16, ties to even; a NaN stays a (quiet) NaN.
/// Plain integer arithmetic, so loops over it vectorise.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        ((bits >> 16) | 0x40) as u16
    } else {
        ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
    }
}
