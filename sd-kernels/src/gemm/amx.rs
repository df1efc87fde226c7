//! Intel AMX micro-kernel: bf16 tile products (`tdpbf16ps`), 32 x 32, f32 accumulation.
//!
//! Four 16 x 16 f32 accumulator tiles (tmm0-3) hold a 32 x 32 block of C. Each step of 32 k
//! loads two A tiles (rows 0-15 and 16-31, 32 bf16 values a row) and two B tiles (columns 0-15
//! and 16-31, 16 k pairs a row: the pair-interleaved layout bf16 B panels already have, read
//! with a 128-byte row stride), then issues four tile products of 16 x 16 x 32 multiply-adds:
//! 32 768 multiply-adds per step against 28 x 32 for a step of the AVX-512 kernel.
//!
//! A tile row must be 32 consecutive k of one row of A, so A is packed with 32 k values per
//! line ([`Kernel::KPA`] = 32). (Reading a row-major A in place needed a bf16 copy of it first,
//! and packing ran 1.03-1.29x faster on a 512² UNet's linear layers.) Depths must be multiples
//! of 32; products of other depths run on the AVX-512 kernels (see `KernelId`).
//!
//! Each thread loads the tile configuration once (`ldtilecfg`, kept in the thread's state);
//! the process asked Linux for the tile registers when the CPU was detected.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;

use super::avx512::store;
use super::kernel::{Kernel, Tile};

const MR: usize = 32;
const NR: usize = 32;

/// bf16 pairs on AMX tiles, f32 accumulation.
pub(crate) struct AmxBf16x32x32;

impl Kernel for AmxBf16x32x32 {
    type Elem = u16;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP: usize = 2;
    const KPA: usize = 32;
    // A block 256 x 1024 and B block 1024 x 512 bf16 (512 KiB and 1 MiB) sit in a 2 MiB L2.
    // Each pass over k reads and writes C once more: 1024 ran a 2048³ product ~15% faster
    // than 512 (2048 was no faster).
    const KC: usize = 1024;
    const MC: usize = MR * 8;
    const NC: usize = NR * 16;

    unsafe fn run(groups: usize, a: *const u16, a_rs: usize, b: *const u16, tile: &Tile) {
        debug_assert_eq!(a_rs, 0, "AMX A is always packed");
        tile_kernel(groups, a, b, tile)
    }
}

/// The tile shapes: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little end)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

thread_local! {
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// # Safety
/// The CPU has AMX and the process holds the tile permission (`Isa::Amx` was detected).
pub(crate) unsafe fn configure_thread() {
    if !CONFIGURED.get() {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        CONFIGURED.set(true);
    }
}

/// A packed A panel (per 32-k step, 32 lines of 32 values) times a B panel; `groups` counts
/// k pairs (a multiple of 16).
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel(groups: usize, a: *const u16, b: *const u16, tile: &Tile) {
    debug_assert!(groups.is_multiple_of(16));
    configure_thread();
    let (a_hi, a_row_bytes, a_step) = (a.add(16 * 32), 64usize, MR * 32);
    let b_row_bytes = 2 * 2 * NR;
    // A whole tile with nothing to add but C itself is accumulated in place: the tiles start
    // from C (later passes over k) or from zero, and are stored straight back, with no round
    // trip through the stack and vector registers (writing C that way took a quarter of a
    // 2048³ product's time; skipping the write altogether, as a timing experiment, 22 -> 16 ms).
    let whole = tile.rows == MR && tile.cols == NR;
    let adds_epilogue =
        !(tile.bias_row.is_null() && tile.bias_col.is_null() && tile.residual.is_null());
    let in_place = whole && !(tile.first && adds_epilogue);
    if in_place && !tile.first {
        load_accumulators(tile.c, tile.ldc);
    } else {
        zero_accumulators();
    }
    // A panel read for the first time may still be in memory (prepacked weights stream on
    // their first pass): fetch the next step's 2 KiB while this one computes.
    let (fresh_a, fresh_b) = (tile.fresh_a, tile.fresh_b);
    for s in 0..groups / 16 {
        let b_lo = b.add(s * 16 * 2 * NR);
        let a_tiles = [a.add(s * a_step), a_hi.add(s * a_step)];
        if fresh_b {
            prefetch_next_step(b_lo);
        }
        if fresh_a {
            prefetch_next_step(a_tiles[0]);
        }
        tile_step(a_tiles, a_row_bytes, [b_lo, b_lo.add(32)], b_row_bytes);
    }
    if in_place {
        store_accumulators(tile.c, tile.ldc);
        return;
    }
    let mut c = [[_mm512_setzero_ps(); 2]; MR];
    store_accumulators(c.as_mut_ptr().cast::<f32>(), NR);
    store(&c, tile)
}

/// Prefetches into L1 the 2 KiB after `step` (one 32-k step of a packed 32-line panel, two
/// tiles of 16 rows x 64 bytes): the next step's operand.
#[inline(always)]
unsafe fn prefetch_next_step(step: *const u16) {
    let next = step.cast::<i8>().add(2048);
    for line in 0..32 {
        _mm_prefetch::<_MM_HINT_T0>(next.add(line * 64));
    }
}

/// Zeroes the accumulator tiles tmm0-3.
///
/// # Safety
/// The tile configuration is loaded.
#[inline(always)]
pub(crate) unsafe fn zero_accumulators() {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
}

/// One step of 32 k of a 32 x 32 block: loads the A tiles (rows 0-15 and 16-31, 32 bf16 a row,
/// rows `a_stride` bytes apart) and the B tiles (columns 0-15 and 16-31: 16 rows of 16 bf16
/// pairs, `b_stride` bytes apart) into tmm4-7 and adds their four products to tmm0-3.
///
/// # Safety
/// The tile configuration is loaded; the pointers address 16 rows of 64 bytes each.
#[inline(always)]
pub(crate) unsafe fn tile_step(
    a: [*const u16; 2],
    a_stride: usize,
    b: [*const u16; 2],
    b_stride: usize,
) {
    asm!(
        "tileloadd tmm4, [{a0} + {sa}*1]",
        "tileloadd tmm5, [{a1} + {sa}*1]",
        "tileloadd tmm6, [{b0} + {sb}*1]",
        "tileloadd tmm7, [{b1} + {sb}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        a0 = in(reg) a[0],
        a1 = in(reg) a[1],
        b0 = in(reg) b[0],
        b1 = in(reg) b[1],
        sa = in(reg) a_stride,
        sb = in(reg) b_stride,
        options(nostack, readonly)
    );
}

/// [`tile_step`] for a 32 x 16 block: one B tile, products added to tmm0 and tmm2.
///
/// # Safety
/// As [`tile_step`].
#[inline(always)]
pub(crate) unsafe fn tile_step_half(
    a: [*const u16; 2],
    a_stride: usize,
    b: *const u16,
    b_stride: usize,
) {
    asm!(
        "tileloadd tmm4, [{a0} + {sa}*1]",
        "tileloadd tmm5, [{a1} + {sa}*1]",
        "tileloadd tmm6, [{b0} + {sb}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm2, tmm5, tmm6",
        a0 = in(reg) a[0],
        a1 = in(reg) a[1],
        b0 = in(reg) b,
        sa = in(reg) a_stride,
        sb = in(reg) b_stride,
        options(nostack, readonly)
    );
}

/// The 16 x 16 quarters of the 32 x 32 f32 block at `c` (row stride `ldc`), in the order of
/// the accumulator tiles tmm0-3: top left, top right, bottom left, bottom right.
///
/// # Safety
/// `c` must point into an allocation holding 32 rows of 32 values `ldc` apart.
#[inline(always)]
unsafe fn quarters(c: *mut f32, ldc: usize) -> [*mut f32; 4] {
    [c, c.add(16), c.add(16 * ldc), c.add(16 * ldc + 16)]
}

/// Loads the 32 x 32 block of f32 at `c` (row stride `ldc`) into the accumulator tiles tmm0-3.
///
/// # Safety
/// As [`quarters`]; the tile configuration is loaded.
#[inline(always)]
unsafe fn load_accumulators(c: *mut f32, ldc: usize) {
    let [c0, c1, c2, c3] = quarters(c, ldc);
    asm!(
        "tileloadd tmm0, [{c0} + {s}*1]",
        "tileloadd tmm1, [{c1} + {s}*1]",
        "tileloadd tmm2, [{c2} + {s}*1]",
        "tileloadd tmm3, [{c3} + {s}*1]",
        c0 = in(reg) c0,
        c1 = in(reg) c1,
        c2 = in(reg) c2,
        c3 = in(reg) c3,
        s = in(reg) 4 * ldc,
        options(nostack, readonly)
    );
}

/// Writes the accumulator tiles tmm0-3 as the 32 x 32 block of f32 at `c` (row stride `ldc`).
///
/// # Safety
/// As [`quarters`]; the tile configuration is loaded.
#[inline(always)]
pub(crate) unsafe fn store_accumulators(c: *mut f32, ldc: usize) {
    let [c0, c1, c2, c3] = quarters(c, ldc);
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) c0,
        c1 = in(reg) c1,
        c2 = in(reg) c2,
        c3 = in(reg) c3,
        s = in(reg) 4 * ldc,
        options(nostack)
    );
}
