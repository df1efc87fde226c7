//! Multi-head attention without the score matrix: queries in tiles of [`QUERY_TILE`] (the unit
//! of work a thread takes), each tile scored in panels of 32 queries against all keys of one
//! head at a time (`[keys, 32]` floats of scratch per thread, 512 KiB at 4096 keys, so the
//! scores stay in L2 from the first product to the second), so memory grows with the sequence
//! length, never with its square.
//!
//! For head h of sample b, with K and V read in place from the `[B, L, heads*d]` projections:
//!   S^T = K Q_panel^T                      (keys x panel; K packed once per head)
//!   E_ji = exp(scale (S_ji - max_j S_ji))  (column softmax numerators)
//!   O_panel^T = V^T (E ⊙ w) / sum_j E_ji   (V^T packed once per head)
//! where w_j are optional per-key value weights (sd-fused emphasis:
//! out_i = Σ_j softmax(q_i·k_j/√d)_j w_j v_j, keys untouched, no renormalisation).
//! Working on S^T makes every softmax pass a contiguous row sweep and both products use the
//! wide dimension (keys, queries) as M and N, so a head width of 40 wastes no tile space; a
//! panel of S^T is laid out as the f32 kernel's packed right operand, so the second product
//! reads it in place; on the bf16 dot-product kernel the softmax writes the numerators as that
//! kernel's packed bf16 pairs instead (no packing pass either).
//!
//! With bf16 products on AMX, `tiles` runs instead: flash attention whose scores never
//! leave the L1 cache.

#[cfg(target_arch = "x86_64")]
mod tiles;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::cpu::{Isa, TierGuard};
use crate::error::{Error, Result};
use crate::gemm::{
    matmul, matmul_with_source, Epilogue, MatOperand, NoSource, PackedMatrix, Precision,
    RightOperand, Side, Strided,
};
use crate::math;
use crate::simd::multiversion;
use crate::tensor::{from_vec, output, with_f32};

/// Queries per tile (four 32-wide panels): at 512² with bf16 products 128 ran 7% faster than 64
/// and 13% faster than 32 (wider products amortise each tile's packing and stores).
pub const QUERY_TILE: usize = 128;

/// Queries scored together on the vector kernels: one panel of the AVX-512 f32 kernel (32
/// columns), so a head's scores (`[keys, 32]`, 512 KiB at 4096 keys) stay in L2 from the
/// product through the softmax to the second product, which reads them in place.
const QUERY_PANEL: usize = 32;

multiversion! {
    /// Column-wise max of a `[rows, QUERY_PANEL]` row-major matrix, kept in registers.
    fn panel_max(s: &[f32], max: &mut [f32; QUERY_PANEL]) {
        let mut m = [f32::NEG_INFINITY; QUERY_PANEL];
        let (rows, _) = s.as_chunks::<QUERY_PANEL>();
        for row in rows {
            for (m, v) in m.iter_mut().zip(row) {
                *m = m.max(*v);
            }
        }
        *max = m;
    }
}

multiversion! {
    /// In place on a `[rows, QUERY_PANEL]` matrix: e = exp(scale (s - max_col)),
    /// sum_col = Σ e, s = e * w_row (scale folded into log2 e, so each value costs one fused
    /// multiply-add before the power of two); the maxima and sums kept in registers.
    fn panel_exp(s: &mut [f32], max: &[f32; QUERY_PANEL], scale: f32, weights: Option<&[f32]>, sum: &mut [f32; QUERY_PANEL]) {
        let c = scale * std::f32::consts::LOG2_E;
        let m = max.map(|m| m * c);
        let mut acc = [0f32; QUERY_PANEL];
        let (rows, _) = s.as_chunks_mut::<QUERY_PANEL>();
        for (j, row) in rows.iter_mut().enumerate() {
            let w = weights.map_or(1.0, |w| w[j]);
            for ((v, m), acc) in row.iter_mut().zip(m.iter()).zip(acc.iter_mut()) {
                let e = math::exp2_nonpositive(v.mul_add(c, -m));
                *acc += e;
                *v = e * w;
            }
        }
        *sum = acc;
    }
}

/// [`panel_exp`] whose numerators leave as bf16 pairs for the bf16 dot-product kernel: key
/// rows 2j and 2j + 1 of the panel become `e16[64 j + 2 i + r]` (query i, row 2j + r; a missing
/// last row is zero), the layout [`RightOperand::Bf16Pairs`] reads in place, so the second
/// product needs no packing pass over the panel. The f32 values in `s` are left as they were.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma")]
unsafe fn panel_exp_pairs(
    s: &[f32],
    max: &[f32; QUERY_PANEL],
    scale: f32,
    weights: Option<&[f32]>,
    sum: &mut [f32; QUERY_PANEL],
    e16: &mut [u16],
) {
    use crate::gemm::avx512::{interleave16, pair_index};
    let c = scale * std::f32::consts::LOG2_E;
    let m = max.map(|m| m * c);
    let mut acc = [0f32; QUERY_PANEL];
    let (rows, _) = s.as_chunks::<QUERY_PANEL>();
    let idx = pair_index();
    for (j, pair) in rows.chunks(2).enumerate() {
        let mut e = [[0f32; QUERY_PANEL]; 2];
        for (r, row) in pair.iter().enumerate() {
            let w = weights.map_or(1.0, |w| w[2 * j + r]);
            for ((e, v), (m, acc)) in e[r].iter_mut().zip(row).zip(m.iter().zip(acc.iter_mut())) {
                let x = math::exp2_nonpositive(v.mul_add(c, -m));
                *acc += x;
                *e = x * w;
            }
        }
        let dst = &mut e16[2 * QUERY_PANEL * j..2 * QUERY_PANEL * (j + 1)];
        for half in 0..2 {
            let (r0, r1) = (e[0][16 * half..].as_ptr(), e[1][16 * half..].as_ptr());
            interleave16(idx, r0, r1, dst[32 * half..].as_mut_ptr());
        }
    }
    *sum = acc;
}

/// softmax(Q K^T * scale) (w ⊙ V) per head for `q` `[B, Lq, heads*d]`, `k`, `v`
/// `[B, Lk, heads*d]` (f32, CPU), optional `value_weights` `[B, Lk]`. Returns `[B, Lq, heads*d]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    value_weights: Option<&Tensor>,
    precision: Precision,
) -> Result<Tensor> {
    let (b, lq, hd) = q.dims3()?;
    let (bk, lk, hdk) = k.dims3()?;
    let bad = |what: String| Error::Shape {
        op: "attention",
        what,
    };
    if heads == 0
        || !hd.is_multiple_of(heads)
        || bk != b
        || hdk != hd
        || v.dims() != k.dims()
        || lk == 0
    {
        return Err(bad(format!(
            "q {:?}, k {:?}, v {:?}, {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if let Some(w) = value_weights {
        if w.dims() != [b, lk] {
            return Err(bad(format!("value weights {:?} for [{b}, {lk}]", w.dims())));
        }
    }
    let d = hd / heads;
    let weights = value_weights
        .map(|w| with_f32("attention", w, |ws| ws.to_vec()))
        .transpose()?;
    let mut out = output(b * lq * hd);
    #[cfg(target_arch = "x86_64")]
    if precision == Precision::Bf16 && Isa::active() == Isa::Amx {
        with_f32("attention", q, |qs| {
            with_f32("attention", k, |ks| {
                with_f32("attention", v, |vs| {
                    tiles::attention(
                        qs,
                        ks,
                        vs,
                        (b, lq, lk),
                        heads,
                        scale,
                        weights.as_deref(),
                        &mut out,
                    )
                })
            })
        })???;
        return from_vec(out, (b, lq, hd));
    }
    // Here the products run on the vector kernels, which take any depth (the AMX tiles, which
    // take depths in multiples of 32, serve bf16 above).
    let isa = Isa::active();
    // On the bf16 dot-product kernel the numerators are written as its packed bf16 pairs.
    let pairs = precision == Precision::Bf16 && isa.has_bf16_dot();
    with_f32("attention", k, |ks| {
        with_f32("attention", v, |vs| -> Result<()> {
            // K (keys x d) and V^T (d x keys) of every (sample, head), packed once.
            let packed: Vec<(PackedMatrix, PackedMatrix)> = (0..b * heads)
                .into_par_iter()
                .map(|i| {
                    // Packed on the caller's tier (`with_isa` is per thread).
                    let _tier = TierGuard::enter(isa);
                    let (bi, h) = (i / heads, i % heads);
                    let off = bi * lk * hd + h * d;
                    let kv = Strided {
                        data: &ks[off..],
                        lines: lk,
                        depth: d,
                        line_stride: hd,
                        depth_stride: 1,
                    };
                    let vt = Strided {
                        data: &vs[off..],
                        lines: d,
                        depth: lk,
                        line_stride: 1,
                        depth_stride: hd,
                    };
                    (
                        PackedMatrix::pack(kv, Side::Left, precision),
                        PackedMatrix::pack(vt, Side::Left, precision),
                    )
                })
                .collect();
            with_f32("attention", q, |qs| {
                let tiles: Vec<(usize, usize, &mut [f32])> = out
                    .chunks_mut(lq * hd)
                    .enumerate()
                    .flat_map(|(bi, ob)| {
                        ob.chunks_mut(QUERY_TILE * hd)
                            .enumerate()
                            .map(move |(t, o)| (bi, t * QUERY_TILE, o))
                    })
                    .collect();
                tiles.into_par_iter().for_each(|(bi, q0, o)| {
                    let _tier = TierGuard::enter(isa);
                    let rows = o.len() / hd;
                    let w = weights.as_ref().map(|w| &w[bi * lk..(bi + 1) * lk]);
                    let mut s = vec![0f32; lk * QUERY_PANEL];
                    let mut e16 = vec![
                        0u16;
                        if pairs {
                            lk.div_ceil(2) * 2 * QUERY_PANEL
                        } else {
                            0
                        }
                    ];
                    let mut ot = vec![0f32; d * QUERY_PANEL];
                    let (mut max, mut sum) = ([0f32; QUERY_PANEL], [0f32; QUERY_PANEL]);
                    for h in 0..heads {
                        let (kp, vtp) = &packed[bi * heads + h];
                        for p0 in (0..rows).step_by(QUERY_PANEL) {
                            // A last panel of n < 32 queries keeps the 32-wide layout; its
                            // other columns hold finite leftovers, scored but never read.
                            let n = QUERY_PANEL.min(rows - p0);
                            let qt = Strided {
                                data: &qs[(bi * lq + q0 + p0) * hd + h * d..],
                                lines: n,
                                depth: d,
                                line_stride: hd,
                                depth_stride: 1,
                            };
                            matmul(
                                MatOperand::Packed(kp),
                                qt.into(),
                                &mut s,
                                QUERY_PANEL,
                                &Epilogue::NONE,
                                precision,
                            );
                            panel_max(&s, &mut max);
                            let e = if pairs {
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: `pairs` means the CPU has AVX512-BF16.
                                unsafe {
                                    panel_exp_pairs(&s, &max, scale, w, &mut sum, &mut e16)
                                };
                                RightOperand::Bf16Pairs {
                                    data: &e16,
                                    lines: n,
                                    depth: lk,
                                }
                            } else {
                                panel_exp(&mut s, &max, scale, w, &mut sum);
                                // A full panel of scores is already in the layout the f32
                                // kernels read (one row of 32 queries per key): no packing.
                                RightOperand::Mat(MatOperand::Strided(Strided {
                                    data: &s,
                                    lines: n,
                                    depth: lk,
                                    line_stride: 1,
                                    depth_stride: QUERY_PANEL,
                                }))
                            };
                            let ot = &mut ot[..d * n];
                            // SAFETY: f32 is a valid MaybeUninit<f32>; the product writes it all.
                            let ot_slots = unsafe {
                                &mut *(ot as *mut [f32] as *mut [std::mem::MaybeUninit<f32>])
                            };
                            matmul_with_source::<NoSource>(
                                MatOperand::Packed(vtp),
                                e,
                                ot_slots,
                                n,
                                &Epilogue::NONE,
                                precision,
                            );
                            let panel_out = o[p0 * hd..].chunks_exact_mut(hd).take(n);
                            for (i, orow) in panel_out.enumerate() {
                                let inv = 1.0 / sum[i];
                                for (c, dst) in orow[h * d..(h + 1) * d].iter_mut().enumerate() {
                                    *dst = ot[c * n + i] * inv;
                                }
                            }
                        }
                    }
                });
            })?;
            Ok(())
        })
    })???;
    from_vec(out, (b, lq, hd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::with_isa;
    use crate::test_util::{rel_l2, tiers};
    use candle_core::{Device, D};

    /// The plain composition: softmax over the full score tensor.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, w: Option<&Tensor>) -> Tensor {
        let (b, lq, hd) = q.dims3().unwrap();
        let lk = k.dim(1).unwrap();
        let d = hd / heads;
        let split = |t: &Tensor, l| {
            t.reshape((b, l, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let v = match w {
            Some(w) => v.broadcast_mul(&w.unsqueeze(2).unwrap()).unwrap(),
            None => v.clone(),
        };
        let (q, k, v) = (split(q, lq), split(k, lk), split(&v, lk));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, lq, hd))
            .unwrap()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn panel_exp_pairs_are_panel_exp_rounded_and_interleaved() {
        if !Isa::supported().has_bf16_instructions() {
            return;
        }
        // 7 keys (an odd count: the last pair's second row is zero), weights on.
        let keys = 7;
        let s: Vec<f32> = (0..keys * QUERY_PANEL)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.1)
            .collect();
        let weights: Vec<f32> = (0..keys).map(|j| 0.5 + 0.25 * j as f32).collect();
        let mut max = [0f32; QUERY_PANEL];
        panel_max(&s, &mut max);
        let (mut sum_pairs, mut sum) = ([0f32; QUERY_PANEL], [0f32; QUERY_PANEL]);
        let mut e16 = vec![0u16; keys.div_ceil(2) * 2 * QUERY_PANEL];
        // SAFETY: the CPU has AVX512-BF16 (checked above).
        unsafe { panel_exp_pairs(&s, &max, 0.3, Some(&weights), &mut sum_pairs, &mut e16) };
        let mut e = s.clone();
        panel_exp(&mut e, &max, 0.3, Some(&weights), &mut sum);
        assert_eq!(sum_pairs, sum);
        for (j, pair) in e16.chunks_exact(2 * QUERY_PANEL).enumerate() {
            for i in 0..QUERY_PANEL {
                for r in 0..2 {
                    let key = 2 * j + r;
                    let want = if key < keys {
                        (crate::gemm::round_bf16(e[key * QUERY_PANEL + i]).to_bits() >> 16) as u16
                    } else {
                        0
                    };
                    assert_eq!(pair[2 * i + r], want, "key {key}, query {i}");
                }
            }
        }
    }

    #[test]
    fn matches_full_softmax_on_self_and_cross_attention() {
        let dev = Device::Cpu;
        // (batch, lq, lk, heads, d): SD-like head widths 40 and 64, odd lengths, 77 text tokens.
        for &(b, lq, lk, heads, d) in &[
            (2, 130, 130, 2, 40),
            (1, 64, 77, 3, 64),
            (2, 7, 5, 1, 8),
            (1, 200, 77, 8, 40),
            (1, 70, 600, 2, 40),
        ] {
            let q = (Tensor::randn(0f32, 1.0, (b, lq, heads * d), &dev).unwrap() * 2.0).unwrap();
            let k = (Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev).unwrap() * 2.0).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev).unwrap();
            let w = Tensor::rand(-1f32, 2.0, (b, lk), &dev).unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            for weights in [None, Some(&w)] {
                let want = reference(&q, &k, &v, heads, weights);
                // Every kernel tier this CPU has: panel widths 4 to 32, f32 panels, bf16
                // pairs, bf16 emulated on f32 kernels, AMX tiles with padded heads.
                for isa in tiers() {
                    with_isa(isa, || {
                        let got =
                            attention(&q, &k, &v, heads, scale, weights, Precision::F32).unwrap();
                        let e = rel_l2(&got, &want);
                        assert!(
                            e < 1e-5,
                            "{isa:?} ({b},{lq},{lk},{heads},{d}) weights {}: {e}",
                            weights.is_some()
                        );
                        let got =
                            attention(&q, &k, &v, heads, scale, weights, Precision::Bf16).unwrap();
                        let e = rel_l2(&got, &want);
                        assert!(e < 1e-2, "{isa:?} bf16 ({b},{lq},{lk},{heads},{d}): {e}");
                    })
                }
            }
        }
    }

    /// Keys whose scores grow along the sequence, so each key block raises every query's running
    /// maximum and what earlier blocks summed must be rescaled (the online softmax); head
    /// widths 80 and 160 (5 and 10 column tiles), query counts off the 32-query blocks.
    #[test]
    fn follows_a_maximum_that_grows_block_after_block() {
        let dev = Device::Cpu;
        for &(b, lq, lk, heads, d) in &[(1, 45, 900, 2, 80), (2, 33, 530, 1, 160)] {
            let q = Tensor::randn(0f32, 1.0, (b, lq, heads * d), &dev).unwrap();
            let ramp = Tensor::arange(0u32, lk as u32, &dev)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .affine(4.0 / lk as f64, 0.5)
                .unwrap()
                .reshape((1, lk, 1))
                .unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev)
                .unwrap()
                .broadcast_mul(&ramp)
                .unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev).unwrap();
            let w = Tensor::rand(0f32, 2.0, (b, lk), &dev).unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            let want = reference(&q, &k, &v, heads, Some(&w));
            for isa in tiers() {
                with_isa(isa, || {
                    for (precision, tol) in [(Precision::F32, 1e-5), (Precision::Bf16, 1e-2)] {
                        let got = attention(&q, &k, &v, heads, scale, Some(&w), precision).unwrap();
                        let e = rel_l2(&got, &want);
                        assert!(
                            e < tol,
                            "{isa:?} {precision:?} ({b},{lq},{lk},{heads},{d}): {e}"
                        );
                    }
                })
            }
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 8), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 5, 6), candle_core::DType::F32, &dev).unwrap();
        assert!(attention(&q, &k, &k, 2, 1.0, None, Precision::F32).is_err());
        assert!(attention(&q, &q, &q, 3, 1.0, None, Precision::F32).is_err());
    }
}
