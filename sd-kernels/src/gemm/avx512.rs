//! AVX-512 micro-kernels: f32 FMA (14 x 32) and bf16 dot products (`vdpbf16ps`, 14 x 32).
//!
//! 14 rows x 2 vectors = 28 accumulators, plus 2 B vectors, fits the 32 zmm registers; each A
//! value is broadcast straight from memory into the FMA (an embedded broadcast), so a k step is
//! 2 loads and 28 FMAs.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::kernel::{Kernel, Tile};

const MR: usize = 14;
const NR: usize = 32;

/// How far ahead (bytes) a kernel prefetches a panel it is the first to read. A prepacked
/// operand (weights) streams from memory on that first pass, and the hardware prefetcher
/// restarts at every panel and page. Paired runs, f32: a 256² UNet's 128-token linears and
/// 8² / 4² convs 13-33% faster, 2048³ unchanged; 1, 2 and 4 KiB ahead alike, 512 B less.
const PREFETCH_BYTES: usize = 2048;

/// Prefetches the line `PREFETCH_BYTES` ahead of `p` into L1.
#[inline(always)]
unsafe fn prefetch_ahead<T>(p: *const T) {
    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().add(PREFETCH_BYTES));
}

/// f32 on AVX-512F.
pub(crate) struct F32x14x32;

/// bf16 pairs on AVX-512 BF16, f32 accumulation.
pub(crate) struct Bf16x14x32;

impl Kernel for F32x14x32 {
    type Elem = f32;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP: usize = 1;
    const DIRECT_A: bool = true;
    // Measured on Zen 5 (2048^3, 2 threads): KC 256 -> 512 gained 8%; MC, NC matter less.
    const KC: usize = 512;
    const MC: usize = 14 * 24;
    const NC: usize = 32 * 32;

    unsafe fn run(groups: usize, a: *const f32, a_rs: usize, b: *const f32, tile: &Tile) {
        if a_rs == 0 {
            f32_kernel::<false>(groups, a, 0, b, tile)
        } else {
            f32_kernel::<true>(groups, a, a_rs, b, tile)
        }
    }
}

impl Kernel for Bf16x14x32 {
    type Elem = u16;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP: usize = 2;
    const KC: usize = 1024;
    const MC: usize = 14 * 16;
    const NC: usize = 32 * 32;

    unsafe fn run(groups: usize, a: *const u16, a_rs: usize, b: *const u16, tile: &Tile) {
        debug_assert_eq!(a_rs, 0, "bf16 A is always packed");
        bf16_kernel(groups, a, b, tile)
    }
}

/// `DIRECT`: A is read in place from row-major storage (row r at `a + r * a_rs`, one k per
/// step) instead of a packed panel; it saves packing activations for linear layers.
#[target_feature(enable = "avx512f")]
unsafe fn f32_kernel<const DIRECT: bool>(
    groups: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    tile: &Tile,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    let (row_step, group_step) = if DIRECT { (a_rs, 1) } else { (1, MR) };
    // A read in place is activations (in cache); only a packed A panel streams.
    let (fresh_a, fresh_b) = (!DIRECT && tile.fresh_a, tile.fresh_b);
    for _ in 0..groups {
        if fresh_b {
            // A k step reads 128 bytes of B: two lines.
            prefetch_ahead(b);
            prefetch_ahead(b.add(16));
        }
        if fresh_a {
            // ... and 56 bytes of A: at most one new line.
            prefetch_ahead(a);
        }
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let ar = _mm512_set1_ps(*a.add(r * row_step));
            acc_r[0] = _mm512_fmadd_ps(ar, b0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(ar, b1, acc_r[1]);
        }
        a = a.add(group_step);
        b = b.add(NR);
    }
    // A copy for `store` to read: the loop's `acc` itself never has its address taken,
    // so it lives in registers only (see `store`).
    store(&{ acc }, tile)
}

/// As [`f32_kernel`] on a packed A panel whose groups hold k pairs.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_kernel(groups: usize, a: *const u16, b: *const u16, tile: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    let (fresh_a, fresh_b) = (tile.fresh_a, tile.fresh_b);
    for _ in 0..groups {
        // Per k-pair step, as in the f32 kernel: 128 bytes of B, 56 of A.
        if fresh_b {
            prefetch_ahead(b);
            prefetch_ahead(b.add(32));
        }
        if fresh_a {
            prefetch_ahead(a);
        }
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(32).cast()));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let pair = a.add(2 * r).cast::<i32>().read_unaligned();
            let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc_r[0] = _mm512_dpbf16_ps(acc_r[0], ar, b0);
            acc_r[1] = _mm512_dpbf16_ps(acc_r[1], ar, b1);
        }
        a = a.add(2 * MR);
        b = b.add(2 * NR);
    }
    store(&{ acc }, tile) // as in f32_kernel
}

/// Writes the accumulators (`R` rows of 32) with vector stores; at the right or bottom edge
/// of C, masked ones cover the tile's valid rows and columns only. Shared with the AMX
/// kernel.
///
/// Kernels pass a copy of their accumulators (`&{ acc }`): when `store` took the address of
/// the loop's own array, LLVM gave that array a stack slot and zeroed it with a 1.8 KB
/// memset at every kernel call (~3% of a bf16 UNet call). Edge tiles went through a further
/// 4 KB array and a scalar copy; masked stores replace both.
#[inline(always)]
pub(crate) unsafe fn store<const R: usize>(acc: &[[__m512; 2]; R], t: &Tile) {
    debug_assert!(t.rows <= R && t.cols <= NR);
    if t.rows == R && t.cols == NR {
        store_rows::<R, false>(acc, t, [!0, !0]);
        return;
    }
    // The lanes of each 16-column half that lie inside C.
    let half = |v: usize| prefix_mask(t.cols.saturating_sub(16 * v));
    store_rows::<R, true>(acc, t, [half(0), half(1)]);
}

/// [`store`]'s rows: plain vector loads and stores, or (`MASKED`) masked ones, which read
/// and write (and fault on) nothing outside their lanes.
#[inline(always)]
unsafe fn store_rows<const R: usize, const MASKED: bool>(
    acc: &[[__m512; 2]; R],
    t: &Tile,
    masks: [__mmask16; 2],
) {
    for (r, acc_r) in acc.iter().enumerate() {
        if r == t.rows {
            break;
        }
        let dst = t.c.add(r * t.ldc);
        for (v, (&x, &m)) in acc_r.iter().zip(&masks).enumerate() {
            let p = dst.add(16 * v);
            let load = |q: *const f32| {
                if MASKED {
                    _mm512_maskz_loadu_ps(m, q)
                } else {
                    _mm512_loadu_ps(q)
                }
            };
            let y = if t.first {
                let mut y = x;
                if !t.bias_row.is_null() {
                    y = _mm512_add_ps(y, _mm512_set1_ps(*t.bias_row.add(r)));
                }
                if !t.bias_col.is_null() {
                    y = _mm512_add_ps(y, load(t.bias_col.add(16 * v)));
                }
                if !t.residual.is_null() {
                    y = _mm512_add_ps(y, load(t.residual.add(r * t.ld_residual + 16 * v)));
                }
                y
            } else {
                _mm512_add_ps(x, load(p))
            };
            if MASKED {
                _mm512_mask_storeu_ps(p, m, y);
            } else {
                _mm512_storeu_ps(p, y);
            }
        }
    }
}

/// One bf16 k-group of a panel from two f32 rows: `dst[2l] = bf16(r0[l])`,
/// `dst[2l + 1] = bf16(r1[l])` for `l < w` (`w` a multiple of 16), rounding to nearest even.
///
/// # Safety
/// The CPU has AVX-512 BF16; `r0`, `r1` hold `w` values and `dst` `2 w`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
pub(crate) unsafe fn interleave_bf16(r0: *const f32, r1: *const f32, w: usize, dst: *mut u16) {
    let idx = pair_index();
    for c in (0..w).step_by(16) {
        interleave16(idx, r0.add(c), r1.add(c), dst.add(2 * c));
    }
}

/// The permutation [`interleave16`] applies: lanes 2i and 2i + 1 take value i of the first and
/// of the second row.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn pair_index() -> __m512i {
    let mut idx = [0i16; 32];
    for i in 0..16 {
        idx[2 * i] = i as i16;
        idx[2 * i + 1] = 16 + i as i16;
    }
    _mm512_loadu_si512(idx.as_ptr().cast())
}

/// [`interleave_bf16`] for 16 values of each row (64 bytes of pairs), `idx` from
/// [`pair_index`].
///
/// # Safety
/// As [`interleave_bf16`] with `w` = 16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
#[inline]
pub(crate) unsafe fn interleave16(idx: __m512i, r0: *const f32, r1: *const f32, dst: *mut u16) {
    let a: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(r0)));
    let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(r1)));
    let both = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    _mm512_storeu_si512(dst.cast(), _mm512_permutexvar_epi16(idx, both));
}

/// Writes two depth rows of a right operand, `r0` and `r1` (values of the same `n` lines), as
/// one group of pairs in each of its bf16 pair panels (the layout of
/// [`super::RightOperand::Bf16Pairs`]): `dst[p * panel_stride + 2 l + q]` = bf16 of line
/// `32 p + l` of `[r0, r1][q]` (rounded to nearest even, as [`interleave_bf16`]), zero for the
/// lines past `n` in the last panel.
///
/// # Safety
/// The CPU has AVX-512 BF16; `r0` and `r1` have the same length `n`; `dst` holds
/// `(n.div_ceil(32) - 1) * panel_stride + 64` values.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
pub(crate) unsafe fn pair_rows_into_panels(
    r0: &[f32],
    r1: &[f32],
    dst: *mut u16,
    panel_stride: usize,
) {
    debug_assert_eq!(r0.len(), r1.len());
    let n = r0.len();
    let idx = pair_index();
    for (p, l0) in (0..n).step_by(NR).enumerate() {
        let out = dst.add(p * panel_stride);
        for half in 0..2 {
            let l = l0 + 16 * half;
            let dst = out.add(32 * half);
            if l + 16 <= n {
                interleave16(idx, r0.as_ptr().add(l), r1.as_ptr().add(l), dst);
            } else {
                // The last panel's short end, zero-padded.
                let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
                let from = l.min(n);
                a[..n - from].copy_from_slice(&r0[from..]);
                b[..n - from].copy_from_slice(&r1[from..]);
                interleave16(idx, a.as_ptr(), b.as_ptr(), dst);
            }
        }
    }
}

/// Packs one bf16 panel of `w` lines from f32 rows: line `l < lines` is `kc` values at
/// `src + l * ld`; `dst[(g * w + l) * 2 + q]` = bf16 of value `2 g + q` of line `l` (rounded
/// to nearest even), zero past `lines` or `kc`. The same panel as the portable packer, in one
/// pass: each line's 32 values become 16 pairs (one register), and a 16 x 16 transpose of
/// those registers turns 16 lines' pairs into 16 groups.
///
/// Subnormal inputs become zero (as `vdpbf16ps` reads them anyway).
///
/// # Safety
/// The CPU has AVX-512 BF16; `src` holds `lines` rows of `kc` values `ld` apart; `dst` holds
/// `kc.div_ceil(2) * w * 2` values; `lines <= w`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
pub(crate) unsafe fn pack_pair_panel(
    src: *const f32,
    ld: usize,
    lines: usize,
    kc: usize,
    w: usize,
    dst: *mut u16,
) {
    let groups = kc.div_ceil(2);
    for l0 in (0..w).step_by(16) {
        // Lines l0.. of every group: `width` lanes of the transposed registers.
        let width = 16.min(w - l0);
        let store_mask = prefix_mask(width);
        for g0 in (0..groups).step_by(16) {
            let values = kc - 2 * g0;
            let mask_lo = prefix_mask(values);
            let mask_hi = prefix_mask(values.saturating_sub(16));
            let mut r = [_mm512_setzero_si512(); 16];
            for (i, reg) in r.iter_mut().enumerate() {
                if l0 + i < lines {
                    let p = src.add((l0 + i) * ld + 2 * g0);
                    let lo = _mm512_maskz_loadu_ps(mask_lo, p);
                    let hi = _mm512_maskz_loadu_ps(mask_hi, p.add(16));
                    *reg = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                }
            }
            transpose_16x16(&mut r);
            for (j, reg) in r.iter().enumerate().take(16.min(groups - g0)) {
                let out = dst.add(((g0 + j) * w + l0) * 2);
                _mm512_mask_storeu_epi32(out.cast(), store_mask, *reg);
            }
        }
    }
}

/// The first `n` (clamped to 16) lanes.
#[inline(always)]
pub(crate) fn prefix_mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Transposes a 16 x 16 matrix of 32-bit values held one row per register.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_16x16(r: &mut [__m512i; 16]) {
    // Within each 128-bit lane: pairs of rows interleaved by 32, then by 64 bits, leave
    // t[4i + d] holding column 4c + d of rows 4i..4i + 4 in lane c.
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        let b = 4 * i;
        r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    // Then lane c of r[d], r[4 + d], r[8 + d], r[12 + d] gathered into output 4c + d.
    for d in 0..4 {
        let lo01 = _mm512_shuffle_i32x4::<0x44>(r[d], r[4 + d]);
        let hi01 = _mm512_shuffle_i32x4::<0xEE>(r[d], r[4 + d]);
        let lo23 = _mm512_shuffle_i32x4::<0x44>(r[8 + d], r[12 + d]);
        let hi23 = _mm512_shuffle_i32x4::<0xEE>(r[8 + d], r[12 + d]);
        t[d] = _mm512_shuffle_i32x4::<0x88>(lo01, lo23);
        t[4 + d] = _mm512_shuffle_i32x4::<0xDD>(lo01, lo23);
        t[8 + d] = _mm512_shuffle_i32x4::<0x88>(hi01, hi23);
        t[12 + d] = _mm512_shuffle_i32x4::<0xDD>(hi01, hi23);
    }
    *r = t;
}
