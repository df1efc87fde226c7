//! AVX2 + FMA micro-kernel (6 x 16 f32): 12 accumulators, 2 B vectors and one broadcast in
//! the 16 ymm registers. The fallback for CPUs without AVX-512 (Zen 2/3, Haswell to Alder Lake).

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::kernel::{store_scalar, Kernel, Tile};

const MR: usize = 6;
const NR: usize = 16;

/// f32 on AVX2 + FMA.
pub(crate) struct F32x6x16;

impl Kernel for F32x6x16 {
    type Elem = f32;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP: usize = 1;
    const DIRECT_A: bool = true;
    // A 256-deep B panel is 16 KiB (half of a 32 KiB L1); A's block of 144 rows is 144 KiB (L2).
    const KC: usize = 256;
    const MC: usize = 6 * 24;
    const NC: usize = 16 * 64;

    unsafe fn run(groups: usize, a: *const f32, a_rs: usize, b: *const f32, tile: &Tile) {
        if a_rs == 0 {
            kernel::<false>(groups, a, 0, b, tile)
        } else {
            kernel::<true>(groups, a, a_rs, b, tile)
        }
    }
}

/// `DIRECT`: A is read in place from row-major storage (row r at `a + r * a_rs`), which saves
/// packing the activations of linear layers; else A is a packed panel (`MR` values per k).
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const DIRECT: bool>(
    groups: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    t: &Tile,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    let (row_step, group_step) = if DIRECT { (a_rs, 1) } else { (1, MR) };
    for _ in 0..groups {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let ar = _mm256_broadcast_ss(&*a.add(r * row_step));
            acc_r[0] = _mm256_fmadd_ps(ar, b0, acc_r[0]);
            acc_r[1] = _mm256_fmadd_ps(ar, b1, acc_r[1]);
        }
        a = a.add(group_step);
        b = b.add(NR);
    }
    store(&acc, t)
}

/// Writes the accumulators: vector loads and stores for a full tile, else a scalar copy.
#[inline(always)]
unsafe fn store(acc: &[[__m256; 2]; MR], t: &Tile) {
    if t.rows == MR && t.cols == NR {
        for (r, acc_r) in acc.iter().enumerate() {
            let dst = t.c.add(r * t.ldc);
            for (v, &x) in acc_r.iter().enumerate() {
                let p = dst.add(8 * v);
                let y = if t.first {
                    let mut y = x;
                    if !t.bias_row.is_null() {
                        y = _mm256_add_ps(y, _mm256_set1_ps(*t.bias_row.add(r)));
                    }
                    if !t.bias_col.is_null() {
                        y = _mm256_add_ps(y, _mm256_loadu_ps(t.bias_col.add(8 * v)));
                    }
                    if !t.residual.is_null() {
                        let res = t.residual.add(r * t.ld_residual + 8 * v);
                        y = _mm256_add_ps(y, _mm256_loadu_ps(res));
                    }
                    y
                } else {
                    _mm256_add_ps(x, _mm256_loadu_ps(p))
                };
                _mm256_storeu_ps(p, y);
            }
        }
        return;
    }
    let mut tmp = [0f32; MR * NR];
    for (r, acc_r) in acc.iter().enumerate() {
        _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR), acc_r[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR + 8), acc_r[1]);
    }
    store_scalar(&tmp, NR, t);
}
