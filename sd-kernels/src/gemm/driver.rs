//! The blocked product loop (Goto / BLIS order) and its split over threads.
//!
//! For each thread's share of C: for each NC-wide block of columns, for each KC-deep block of
//! k, take B's panels (packed on the fly into scratch, or prepacked), then for each MC-tall block
//! of rows take A's panels, and run the micro-kernel over every (MR x NR) tile. The B block
//! (KC x NC) stays in L2 while A's panels stream past it.

use super::buffer::AlignedBuf;
use super::kernel::{Kernel, Tile};
use super::operand::Operand;

/// What the first pass over k adds to the product, and where C lives.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// Added to every element of row i (length m), e.g. a convolution's bias.
    pub bias_row: Option<&'a [f32]>,
    /// Added to every element of column j (length n), e.g. a linear layer's bias.
    pub bias_col: Option<&'a [f32]>,
    /// Added element-wise (an `m x n` matrix with row stride `residual_ld`), e.g. a skip path.
    pub residual: Option<&'a [f32]>,
    /// Row stride of `residual`.
    pub residual_ld: usize,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of rows `r..` of the same product (for a product split by rows).
    pub(crate) fn rows_from(&self, r: usize) -> Epilogue<'a> {
        Epilogue {
            bias_row: self.bias_row.map(|b| &b[r..]),
            bias_col: self.bias_col,
            residual: self.residual.map(|x| &x[r * self.residual_ld..]),
            residual_ld: self.residual_ld,
        }
    }

    /// Nothing added: C = A B.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias_row: None,
        bias_col: None,
        residual: None,
        residual_ld: 0,
    };
}

/// A raw output pointer shared by the threads; each writes a disjoint block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint tiles of C (the split below never overlaps).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// C[m x n] (row stride `ldc`) = A B + epilogue, A with lines = rows (m), B lines = columns (n).
///
/// # Safety
/// `c` must hold `m` rows of `ldc >= n` elements; operands must cover `m x k` and `n x k`;
/// epilogue slices must match their documented lengths.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<K: Kernel, A: Operand<K::Elem>, B: Operand<K::Elem>>(
    m: usize,
    n: usize,
    k: usize,
    a: &A,
    b: &B,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Empty sum: C is just the epilogue.
        for i in 0..m {
            for j in 0..n {
                let mut v = 0.0;
                if let Some(b) = epi.bias_row {
                    v += b[i];
                }
                if let Some(b) = epi.bias_col {
                    v += b[j];
                }
                if let Some(r) = epi.residual {
                    v += r[i * epi.residual_ld + j];
                }
                *c.add(i * ldc + j) = v;
            }
        }
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let out = OutPtr(c);
    // Inside a rayon task (e.g. one attention head of many) the caller already splits the work.
    let nested = rayon::current_thread_index().is_some();
    if threads == 1 || nested || m * n * k < PARALLEL_MIN_MACS {
        serial::<K, A, B>((0, m), (0, n), k, a, b, out, ldc, epi);
        return;
    }
    // Split the dimension whose operand is packed on the fly, so no panel is packed twice;
    // with both (or neither) prepacked, split the longer one. A dimension too short to give
    // every thread a tile (e.g. the 16 pixels of a 4x4 image) leaves threads idle: then split
    // the other one, even if that packs some panels twice.
    let (row_units, col_units) = (m.div_ceil(K::MR), n.div_ceil(K::NR));
    let split_rows = match (a.is_prepacked(), b.is_prepacked()) {
        (true, false) => col_units < threads && row_units > col_units,
        (false, true) => !(row_units < threads && col_units > row_units),
        _ => m * K::NR > n * K::MR,
    };
    let (len, unit) = if split_rows { (m, K::MR) } else { (n, K::NR) };
    let units = len.div_ceil(unit);
    let parts = threads.min(units);
    let ranges: Vec<(usize, usize)> = (0..parts)
        .map(|p| {
            let u0 = units * p / parts;
            let u1 = units * (p + 1) / parts;
            (u0 * unit, (u1 * unit).min(len))
        })
        .collect();
    rayon::scope(|s| {
        for &r in &ranges {
            s.spawn(move |_| {
                let (rows, cols) = if split_rows { (r, (0, n)) } else { ((0, m), r) };
                // SAFETY: disjoint row or column ranges of C; the caller's guarantees hold.
                unsafe { serial::<K, A, B>(rows, cols, k, a, b, out, ldc, epi) }
            });
        }
    });
}

thread_local! {
    /// Per-thread packing buffers, kept between products (fresh ones would page-fault).
    static SCRATCH: std::cell::RefCell<(AlignedBuf, AlignedBuf)> =
        const { std::cell::RefCell::new((AlignedBuf::new(), AlignedBuf::new())) };
}

/// One thread's block of C: rows `m0..m1`, columns `n0..n1`.
#[allow(clippy::too_many_arguments)]
unsafe fn serial<K: Kernel, A: Operand<K::Elem>, B: Operand<K::Elem>>(
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
    k: usize,
    a: &A,
    b: &B,
    c: OutPtr,
    ldc: usize,
    epi: &Epilogue,
) {
    // Prepacked B costs nothing to "pack": take all columns at once, so A is packed once. With
    // A prepacked too, blocks of NC columns keep B's block in cache.
    let nc_blk = if b.is_prepacked() && !a.is_prepacked() {
        n1 - n0
    } else {
        K::NC
    };
    let (kc_blk, mc_blk) = (K::KC, K::MC);
    SCRATCH.with(|cell| {
        let (a_scratch, b_scratch) = &mut *cell.borrow_mut();
        for jc in (n0..n1).step_by(nc_blk) {
            let nc = nc_blk.min(n1 - jc);
            for pc in (0..k).step_by(kc_blk) {
                let kc = kc_blk.min(k - pc);
                let groups = kc.div_ceil(K::KP);
                let bp = b.panels(jc, nc, pc, kc, K::NR, K::KP, b_scratch);
                for ic in (m0..m1).step_by(mc_blk) {
                    let mc = mc_blk.min(m1 - ic);
                    let ap = a.panels(ic, mc, pc, kc, K::MR, K::KPA, a_scratch);
                    for jr in 0..nc.div_ceil(K::NR) {
                        let col = jc + jr * K::NR;
                        let cols = K::NR.min(n1 - col);
                        let b_panel = bp.ptr.add(jr * bp.panel_stride);
                        for ir in 0..mc.div_ceil(K::MR) {
                            let row = ic + ir * K::MR;
                            let rows = K::MR.min(m1 - row);
                            let tile = Tile {
                                c: c.0.add(row * ldc + col),
                                ldc,
                                rows,
                                cols,
                                first: pc == 0,
                                bias_row: epi
                                    .bias_row
                                    .map_or(std::ptr::null(), |b| b.as_ptr().add(row)),
                                bias_col: epi
                                    .bias_col
                                    .map_or(std::ptr::null(), |b| b.as_ptr().add(col)),
                                residual: epi.residual.map_or(std::ptr::null(), |r| {
                                    r.as_ptr().add(row * epi.residual_ld + col)
                                }),
                                ld_residual: epi.residual_ld,
                                fresh_a: jr == 0,
                                fresh_b: ir == 0,
                            };
                            K::run(
                                groups,
                                ap.ptr.add(ir * ap.panel_stride),
                                ap.row_stride,
                                b_panel,
                                &tile,
                            );
                        }
                    }
                }
            }
        }
    })
}
