//! AVX2 + FMA micro-kernel (6 x 16 f32): 12 accumulators, 2 B vectors and one broadcast in
//! the 16 ymm registers. The fallback for CPUs without AVX-512.

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
    const KC: usize = 256;
    const MC: usize = 6 * 24;
    const NC: usize = 16 * 64;

    unsafe fn run(groups: usize, a: *const f32, a_rs: usize, b: *const f32, tile: &Tile) {
        debug_assert_eq!(a_rs, 0, "the AVX2 kernel reads packed A only");
        kernel(groups, a, b, tile)
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(groups: usize, a: *const f32, b: *const f32, t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..groups {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let ar = _mm256_set1_ps(*a.add(r));
            acc_r[0] = _mm256_fmadd_ps(ar, b0, acc_r[0]);
            acc_r[1] = _mm256_fmadd_ps(ar, b1, acc_r[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let mut tmp = [0f32; MR * NR];
    for (r, acc_r) in acc.iter().enumerate() {
        _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR), acc_r[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR + 8), acc_r[1]);
    }
    store_scalar(&tmp, NR, t);
}
