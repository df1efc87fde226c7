//! Flash attention on AMX tiles, for bf16 products: each block of [`QUERY_BLOCK`] queries
//! sweeps the keys once, [`KEY_BLOCK`] at a time, keeping each query's running maximum and sum
//! of its softmax (the online softmax), so scores exist only one block at a time and stay in
//! the L1 cache.
//!
//! For each (sample, head), K and V are packed once, rounded to bf16, in the layouts the tiles
//! read (`tdpbf16ps` takes its B operand as rows of 16 (k, k+1) pairs):
//! - K as the B operand of Q K^T: per 16 keys, `dp / 2` rows of 16 (depth 2p, 2p + 1) pairs;
//! - V, each key's row scaled by its value weight, as the B operand of P V: per 16 columns,
//!   `lk / 2` rows of 16 (key 2t, key 2t + 1) pairs.
//!
//! Then, per block of 32 queries (Q rounded to bf16, heads zero-padded to a depth of 32s):
//!   S   = Q K_blk^T                         (32 x KEY_BLOCK f32, from four accumulator tiles)
//!   m'  = max(m, row max S);  P = exp(scale (S - m'))   (f32, rounded to bf16)
//!   l   = l a + row sum P;   O = O a + P V_blk,  with a = exp(scale (m - m'))
//! and out = O / l. Padded keys get P = 0, padded queries are computed and dropped.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::asm;
use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::cpu::{Isa, TierGuard};
use crate::gemm::amx::{
    configure_thread, store_accumulators, tile_step, tile_step_half, zero_accumulators,
};
use crate::gemm::avx512::{interleave16, pair_index};
use crate::gemm::buffer::AlignedBuf;
use crate::gemm::to_bf16_slice;

/// Queries per block: two 16-row tiles.
const QUERY_BLOCK: usize = 32;
/// Keys per block of scores: 32 x 256 f32 scores (32 KiB) and their bf16 copy fit the L1 cache.
const KEY_BLOCK: usize = 256;
/// Row strides of the score and probability blocks, one cache line more than a row, so the
/// 16 rows a tile stores or loads do not all fall in the same few cache sets.
const S_LD: usize = KEY_BLOCK + 16;
const P_LD: usize = KEY_BLOCK + 32;

/// The sizes of one attention: `d` values per head, padded to `dp` (a multiple of 32, the
/// depth of a tile product) for Q K^T and to `dv` (a multiple of 16, a tile's width) for P V;
/// `lk` keys, padded to `lkp` (a multiple of 32).
#[derive(Clone, Copy)]
struct Dims {
    lk: usize,
    lkp: usize,
    d: usize,
    dp: usize,
    dv: usize,
}

/// One head's packed K and V (see the module docs).
struct PackedHead {
    keys: AlignedBuf,
    values: AlignedBuf,
}

/// softmax(Q K^T * scale) (w ⊙ V) for `q` `[b, lq, heads*d]` and `k`, `v` `[b, lk, heads*d]`
/// (row-major f32), optional value weights `[b, lk]`, into `out` `[b, lq, heads*d]`.
///
/// The caller checks the shapes, and that the tier is [`Isa::Amx`].
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (b, lq, lk): (usize, usize, usize),
    heads: usize,
    scale: f32,
    weights: Option<&[f32]>,
    out: &mut [f32],
) {
    let hd = q.len() / (b * lq);
    let d = hd / heads;
    let dims = Dims {
        lk,
        lkp: lk.next_multiple_of(32),
        d,
        dp: d.next_multiple_of(32),
        dv: d.next_multiple_of(16),
    };
    let isa = Isa::active();
    let packed: Vec<PackedHead> = (0..b * heads)
        .into_par_iter()
        .map(|i| {
            let _tier = TierGuard::enter(isa);
            let (bi, h) = (i / heads, i % heads);
            let off = bi * lk * hd + h * d;
            let w = weights.map(|w| &w[bi * lk..(bi + 1) * lk]);
            // SAFETY: the tier is AMX (the caller's check), which has AVX-512 BF16.
            unsafe {
                PackedHead {
                    keys: pack_keys(&k[off..], hd, dims),
                    values: pack_values(&v[off..], hd, dims, w),
                }
            }
        })
        .collect();
    // One block of queries of one head per task, ordered so that each thread sweeps the
    // blocks of one head after another and that head's K and V stay in its L2 cache.
    let q_blocks = lq.div_ceil(QUERY_BLOCK);
    let c = scale * std::f32::consts::LOG2_E;
    let out = OutPtr(out.as_mut_ptr());
    (0..b * heads * q_blocks).into_par_iter().for_each_init(
        || (TierGuard::enter(isa), Scratch::new(dims)),
        |(_, scratch), task| {
            let (bh, qb) = (task / q_blocks, task % q_blocks);
            let (bi, h) = (bh / heads, bh % heads);
            let q0 = qb * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(lq - q0);
            let first = (bi * lq + q0) * hd + h * d;
            // SAFETY: AMX tier (see above); the scratch was made for `dims`; each task writes
            // its own rows x d block of `out`, which holds b * lq rows of hd.
            unsafe {
                scratch.load_queries(&q[first..], hd, rows, dims);
                scratch.run(&packed[bh], dims, c);
                scratch.write(out.at(first), hd, rows, dims);
            }
        },
    );
}

/// The output, shared by the tasks; each writes a disjoint block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (query block, head) blocks of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The address of element `i`.
    ///
    /// # Safety
    /// `i` is within the output.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// K of one head (`lk` rows of `d` values, `stride` apart) as the B operand of Q K^T.
///
/// # Safety
/// The CPU has AVX-512 BF16.
unsafe fn pack_keys(k: &[f32], stride: usize, dims: Dims) -> AlignedBuf {
    let Dims { lk, lkp, d, dp, .. } = dims;
    let mut buf = AlignedBuf::new();
    let out = buf.get::<u32>(lkp * dp / 2);
    let mut row = vec![0u16; dp];
    for j in 0..lk {
        to_bf16_slice(&k[j * stride..j * stride + d], &mut row[..d]);
        let base = (j / 16) * (dp / 2) * 16 + j % 16;
        for (p, pair) in row.chunks_exact(2).enumerate() {
            out[base + 16 * p] = u32::from(pair[0]) | (u32::from(pair[1]) << 16);
        }
    }
    buf
}

/// V of one head (`lk` rows of `d` values, `stride` apart), row j scaled by `weights[j]`, as
/// the B operand of P V.
///
/// # Safety
/// The CPU has AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_values(v: &[f32], stride: usize, dims: Dims, weights: Option<&[f32]>) -> AlignedBuf {
    let Dims { lk, lkp, d, dv, .. } = dims;
    let mut buf = AlignedBuf::new();
    let out = buf.get::<u16>(dv * lkp);
    let idx = pair_index();
    let mut pair = [vec![0f32; dv], vec![0f32; dv]];
    for t in 0..lk.div_ceil(2) {
        for (r, row) in pair.iter_mut().enumerate() {
            let j = 2 * t + r;
            if j < lk {
                let w = weights.map_or(1.0, |w| w[j]);
                for (dst, &x) in row[..d].iter_mut().zip(&v[j * stride..j * stride + d]) {
                    *dst = x * w;
                }
            } else {
                row.fill(0.0);
            }
        }
        // Each 16 columns' pairs go to their own column tile.
        for cb in 0..dv / 16 {
            let dst = out.as_mut_ptr().add((cb * (lkp / 2) + t) * 32);
            interleave16(
                idx,
                pair[0].as_ptr().add(16 * cb),
                pair[1].as_ptr().add(16 * cb),
                dst,
            );
        }
    }
    buf
}

/// One thread's buffers for a block of queries, all 64-byte aligned (tile rows start on cache
/// lines: misaligned tile loads measured ~3x slower).
struct Scratch {
    /// Q rounded to bf16: 32 rows of `dp`, zero-padded.
    q: AlignedBuf,
    /// Scores, 32 rows of `S_LD`.
    s: AlignedBuf,
    /// Softmax numerators in bf16, 32 rows of `P_LD`.
    p: AlignedBuf,
    /// The running output O and one key block's P V, 32 rows of `dv` each.
    o: AlignedBuf,
    o_blk: AlignedBuf,
    /// Per query: running max of the scores, running sum, and this block's rescale factor.
    max: [f32; QUERY_BLOCK],
    sum: [f32; QUERY_BLOCK],
    alpha: [f32; QUERY_BLOCK],
}

impl Scratch {
    fn new(dims: Dims) -> Self {
        let mut s = Scratch {
            q: AlignedBuf::new(),
            s: AlignedBuf::new(),
            p: AlignedBuf::new(),
            o: AlignedBuf::new(),
            o_blk: AlignedBuf::new(),
            max: [0.0; QUERY_BLOCK],
            sum: [0.0; QUERY_BLOCK],
            alpha: [0.0; QUERY_BLOCK],
        };
        // Fresh buffers are zeroed: Q's padding (rows and columns never written) stays zero.
        s.q.get::<u16>(QUERY_BLOCK * dims.dp);
        s.s.get::<f32>(QUERY_BLOCK * S_LD);
        s.p.get::<u16>(QUERY_BLOCK * P_LD);
        s.o.get::<f32>(QUERY_BLOCK * dims.dv);
        s.o_blk.get::<f32>(QUERY_BLOCK * dims.dv);
        s
    }

    /// Rounds `rows` queries of one head (`d` values at `q`, rows `stride` apart) into `self.q`.
    ///
    /// # Safety
    /// The CPU has AVX-512 BF16.
    unsafe fn load_queries(&mut self, q: &[f32], stride: usize, rows: usize, dims: Dims) {
        let dst = self.q.get::<u16>(QUERY_BLOCK * dims.dp);
        for i in 0..rows {
            let row = &q[i * stride..i * stride + dims.d];
            to_bf16_slice(row, &mut dst[i * dims.dp..i * dims.dp + dims.d]);
        }
    }

    /// The key sweep of one head: leaves O (unnormalised) and the sums in `self`.
    ///
    /// # Safety
    /// The tier is AMX; `self` was made for `dims`; `head` was packed for `dims`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn run(&mut self, head: &PackedHead, dims: Dims, c: f32) {
        configure_thread();
        self.max.fill(f32::NEG_INFINITY);
        self.sum.fill(0.0);
        let o = self.o.get::<f32>(QUERY_BLOCK * dims.dv).as_mut_ptr();
        let o_blk = self.o_blk.get::<f32>(QUERY_BLOCK * dims.dv).as_mut_ptr();
        let q = self.q.get::<u16>(QUERY_BLOCK * dims.dp).as_ptr();
        let s = self.s.get::<f32>(QUERY_BLOCK * S_LD).as_mut_ptr();
        let p = self.p.get::<u16>(QUERY_BLOCK * P_LD).as_mut_ptr();
        let keys = head.keys.slice::<u16>(dims.lkp * dims.dp).as_ptr();
        let values = head.values.slice::<u16>(dims.lkp * dims.dv).as_ptr();
        for j0 in (0..dims.lk).step_by(KEY_BLOCK) {
            let valid = KEY_BLOCK.min(dims.lk - j0);
            let width = valid.next_multiple_of(32);
            scores(q, keys, j0, width, dims, s);
            softmax_block(
                s,
                p,
                valid,
                width,
                c,
                &mut self.max,
                &mut self.sum,
                &mut self.alpha,
            );
            weighted_values(p, values, j0, width, dims, o_blk);
            let first = j0 == 0;
            for i in 0..QUERY_BLOCK {
                let a = _mm512_set1_ps(self.alpha[i]);
                for cv in (0..dims.dv).step_by(16) {
                    let at = i * dims.dv + cv;
                    let blk = _mm512_loadu_ps(o_blk.add(at));
                    let y = if first {
                        blk
                    } else {
                        _mm512_fmadd_ps(_mm512_loadu_ps(o.add(at)), a, blk)
                    };
                    _mm512_storeu_ps(o.add(at), y);
                }
            }
        }
    }

    /// out[i, c] = O[i, c] / sum[i] for the first `rows` queries (rows `hd` apart, `d` values).
    ///
    /// # Safety
    /// `run` filled `self` for `dims`; `out` holds `rows` rows of `d` values, `hd` apart.
    unsafe fn write(&self, out: *mut f32, hd: usize, rows: usize, dims: Dims) {
        let o = self.o.slice::<f32>(QUERY_BLOCK * dims.dv);
        for i in 0..rows {
            let inv = 1.0 / self.sum[i];
            let dst = std::slice::from_raw_parts_mut(out.add(i * hd), dims.d);
            for (y, &x) in dst.iter_mut().zip(&o[i * dims.dv..]) {
                *y = x * inv;
            }
        }
    }
}

/// S[:, 0..width] = Q K[j0..j0 + width]^T: for each 32 keys, four accumulator tiles (queries
/// 0-15 / 16-31 x keys 0-15 / 16-31) over `dp / 32` tile steps, stored to `s` (row stride
/// `S_LD`).
///
/// # Safety
/// Tile configuration loaded; `q` holds 32 x `dp` bf16, `keys` the packed keys, `s` 32 rows.
#[inline(always)]
unsafe fn scores(
    q: *const u16,
    keys: *const u16,
    j0: usize,
    width: usize,
    dims: Dims,
    s: *mut f32,
) {
    let dp = dims.dp;
    for jc in (0..width).step_by(32) {
        zero_accumulators();
        let key_block = (j0 + jc) / 16;
        for step in 0..dp / 32 {
            let b0 = keys.add((key_block * (dp / 2) + step * 16) * 32);
            let b1 = keys.add(((key_block + 1) * (dp / 2) + step * 16) * 32);
            let a = [q.add(step * 32), q.add(16 * dp + step * 32)];
            tile_step(a, 2 * dp, [b0, b1], 64);
        }
        store_accumulators(s.add(jc), S_LD);
    }
}

/// O_blk = P[:, 0..width] V[j0..j0 + width]: for each two 16-column tiles of the output, four
/// accumulator tiles over `width / 32` tile steps (one accumulator pair for an odd last tile).
///
/// # Safety
/// Tile configuration loaded; `p` holds 32 rows of `P_LD` bf16, `values` the packed values,
/// `o_blk` 32 rows of `dv`.
#[inline(always)]
unsafe fn weighted_values(
    p: *const u16,
    values: *const u16,
    j0: usize,
    width: usize,
    dims: Dims,
    o_blk: *mut f32,
) {
    let (dv, lkp) = (dims.dv, dims.lkp);
    let tiles = dv / 16;
    for cb in (0..tiles).step_by(2) {
        let pair = cb + 1 < tiles;
        zero_accumulators();
        for t in 0..width / 32 {
            let key_pairs = (j0 + 32 * t) / 2;
            let a = [p.add(32 * t), p.add(16 * P_LD + 32 * t)];
            let b0 = values.add((cb * (lkp / 2) + key_pairs) * 32);
            if pair {
                let b1 = values.add(((cb + 1) * (lkp / 2) + key_pairs) * 32);
                tile_step(a, 2 * P_LD, [b0, b1], 64);
            } else {
                tile_step_half(a, 2 * P_LD, b0, 64);
            }
        }
        store_quad(o_blk.add(16 * cb), dv, pair);
    }
}

/// Stores the accumulator tiles as a 32-row block of f32 at `c` (row stride `ld`): all four
/// with `right` (as [`store_accumulators`]), else tmm0 and tmm2 as columns 0-15.
///
/// # Safety
/// Tile configuration loaded; `c` covers 32 rows of `ld` and the columns stored.
#[inline(always)]
unsafe fn store_quad(c: *mut f32, ld: usize, right: bool) {
    if right {
        return store_accumulators(c, ld);
    }
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c2} + {s}*1], tmm2",
        c0 = in(reg) c,
        c2 = in(reg) c.add(16 * ld),
        s = in(reg) 4 * ld,
        options(nostack)
    );
}

/// The online softmax of one key block: for each of the 32 rows of scores `s` (`valid` keys
/// of `width`), updates the running max and sum, writes the numerators (bf16) to `p`, zero
/// past `valid`, and the factor that rescales what earlier blocks summed to `alpha`.
///
/// # Safety
/// `s` holds 32 rows of `S_LD` f32, `p` 32 rows of `P_LD` bf16; `valid <= width <= KEY_BLOCK`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn softmax_block(
    s: *const f32,
    p: *mut u16,
    valid: usize,
    width: usize,
    c: f32,
    max: &mut [f32; QUERY_BLOCK],
    sum: &mut [f32; QUERY_BLOCK],
    alpha: &mut [f32; QUERY_BLOCK],
) {
    let full = valid / 16;
    let tail: __mmask16 = (1u32 << (valid % 16)) as u16 - 1;
    let filled = valid.div_ceil(16);
    // The new running maxima.
    let mut new_max = [0f32; QUERY_BLOCK];
    for (i, m_new) in new_max.iter_mut().enumerate() {
        let row = s.add(i * S_LD);
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for v in 0..full {
            m = _mm512_max_ps(m, _mm512_loadu_ps(row.add(16 * v)));
        }
        if tail != 0 {
            m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, row.add(16 * full)));
        }
        *m_new = max[i].max(_mm512_reduce_max_ps(m));
    }
    // alpha = 2^(c (old - new)), 0 where nothing was summed yet (old = -inf).
    let cv = _mm512_set1_ps(c);
    for h in (0..QUERY_BLOCK).step_by(16) {
        let old = _mm512_loadu_ps(max.as_ptr().add(h));
        let new = _mm512_loadu_ps(new_max.as_ptr().add(h));
        let seen = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(old, _mm512_set1_ps(f32::NEG_INFINITY));
        let a = exp2(_mm512_mul_ps(_mm512_sub_ps(old, new), cv));
        _mm512_storeu_ps(alpha.as_mut_ptr().add(h), _mm512_maskz_mov_ps(seen, a));
        _mm512_storeu_ps(max.as_mut_ptr().add(h), new);
    }
    for i in 0..QUERY_BLOCK {
        let row = s.add(i * S_LD);
        let prow = p.add(i * P_LD);
        let mc = _mm512_set1_ps(max[i] * c);
        let mut acc = _mm512_setzero_ps();
        for v in 0..full {
            let e = exp2(_mm512_fmsub_ps(_mm512_loadu_ps(row.add(16 * v)), cv, mc));
            acc = _mm512_add_ps(acc, e);
            let bits: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(e));
            _mm256_storeu_si256(prow.add(16 * v).cast(), bits);
        }
        if tail != 0 {
            let x = _mm512_maskz_loadu_ps(tail, row.add(16 * full));
            let e = _mm512_maskz_mov_ps(tail, exp2(_mm512_fmsub_ps(x, cv, mc)));
            acc = _mm512_add_ps(acc, e);
            let bits: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(e));
            _mm256_storeu_si256(prow.add(16 * full).cast(), bits);
        }
        for v in filled..width / 16 {
            _mm256_storeu_si256(prow.add(16 * v).cast(), _mm256_setzero_si256());
        }
        sum[i] = sum[i] * alpha[i] + _mm512_reduce_add_ps(acc);
    }
}

/// 2^t for t <= 0 (0 far below): 2^round(t) (`vscalefps`) times a degree-5 polynomial of the
/// rest in [-1/2, 1/2] (a least-squares fit of relative error; within 6e-7 in f32).
#[inline(always)]
unsafe fn exp2(t: __m512) -> __m512 {
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    let mut p = _mm512_set1_ps(1.326_091_5e-3);
    for coef in [
        9.670_18e-3,
        5.550_712_3e-2,
        2.402_222_5e-1,
        std::f32::consts::LN_2,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(coef));
    }
    _mm512_scalef_ps(p, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_within_its_documented_error() {
        if Isa::supported() < Isa::Avx512 {
            return;
        }
        let ts: Vec<f32> = (0..=400_000).map(|i| -(i as f32) * 0.6e-4).collect();
        for chunk in ts.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: the CPU has AVX-512 F (checked above).
            unsafe { exp2_into(chunk, &mut got) };
            for (&t, &y) in chunk.iter().zip(&got) {
                let want = 2f64.powf(t as f64);
                let e = ((y as f64 - want) / want).abs();
                assert!(e < 6e-7, "2^{t}: {y} against {want} ({e:e})");
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn exp2_into(t: &[f32], out: &mut [f32; 16]) {
        _mm512_storeu_ps(out.as_mut_ptr(), exp2(_mm512_loadu_ps(t.as_ptr())));
    }
}
