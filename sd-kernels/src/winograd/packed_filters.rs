//! Transformed filters U = G g Gᵀ computed straight from the packed weights into the packed
//! panels the products read, one pass over the weights per call, on the AVX-512 kernels:
//! F(2x2, 3x3) for bf16 products (AVX512-BF16) and F(4x4, 3x3) for f32 products.
//!
//! The general path ([`super::filter_transform`]) unpacks each output channel's weights to
//! f32 (a gather across the panels), writes U as f32 rows (fresh memory each call) and packs
//! it again for every product. Here one panel of weights (14 output channels, depth
//! `ci * 9 + tap`) becomes one panel of each position's matrix: each input channel's 9 taps
//! (9 k values of 14 lines; in bf16, a pair of channels shares 9 packed groups) are
//! transformed across the 14 lines at once and stored as the panels the kernel reads. Same f32
//! arithmetic in the same order as the general path, so the same values.

#![allow(unsafe_op_in_unsafe_fn)]

use std::ops::Range;

use rayon::prelude::*;

use crate::conv::DepthOrder;
use crate::gemm::{PackedMatrix, Precision, AVX512_LEFT_PANEL};

use super::minimal::{Minimal, F2, F4};

/// The T² matrices `U[e]` (`cout x cin`) of variant `W` for channel-major 3x3 weights
/// packed for an AVX-512 kernel, for products in `products`: F(2x2, 3x3) in bf16 (an even
/// `cin`: channel pairs must not straddle packed groups) or F(4x4, 3x3) in f32. `None` where
/// this path does not apply (other kernels, orders or combinations).
///
/// Only the output channels `outputs` (starting on a panel, `outputs.start` a multiple of
/// [`AVX512_LEFT_PANEL`]) are transformed: the matrices have `outputs.len()` lines.
pub(crate) fn packed<W: Minimal>(
    weight: &PackedMatrix,
    products: Precision,
    order: DepthOrder,
    cin: usize,
    outputs: Range<usize>,
) -> Option<Vec<PackedMatrix>> {
    if order != DepthOrder::ChannelMajor || cin == 0 || weight.precision() != products {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    match (W::T, products) {
        (4, Precision::Bf16) if cin.is_multiple_of(2) => {
            // SAFETY: the bf16 dot-product kernel packed the weights, so the CPU has it.
            return by_panels::<u16, 16>(weight, cin, outputs, |s, d| unsafe {
                f2_bf16(s, cin, d)
            });
        }
        (6, Precision::F32) => {
            // SAFETY: the AVX-512 f32 kernel packed the weights, so the CPU has AVX-512 F.
            return by_panels::<f32, 36>(weight, cin, outputs, |s, d| unsafe { f4_f32(s, cin, d) });
        }
        _ => {}
    }
    let _ = (weight, outputs);
    None
}

/// Makes the `P` position matrices of the output channels `outputs` and runs `panel(weights,
/// outputs)` for each of their panels of 14 output channels on the threads: `weights` holds
/// its 9 `cin` k values, each output `cin`.
fn by_panels<E: crate::gemm::PackElem, const P: usize>(
    weight: &PackedMatrix,
    cin: usize,
    outputs: Range<usize>,
    panel: impl Fn(&[E], &mut [&mut [E]; P]) + Sync,
) -> Option<Vec<PackedMatrix>> {
    let src = weight.avx512_left_panels::<E>()?;
    let w = AVX512_LEFT_PANEL;
    assert!(
        outputs.start.is_multiple_of(w)
            && (outputs.end.is_multiple_of(w) || outputs.end == weight.lines())
            && outputs.start <= outputs.end
            && outputs.end <= weight.lines(),
        "winograd: output channels {outputs:?} not on panels of {} lines",
        weight.lines()
    );
    // SAFETY: every value of every matrix is written below (each panel of each, in full).
    let mut out = (0..P)
        .map(|_| unsafe { PackedMatrix::avx512_left_unwritten::<E>(outputs.len(), cin) })
        .collect::<Option<Vec<_>>>()?;
    let (src_panel, dst_panel) = (9 * cin * w, cin * w);
    assert_eq!(
        src.len(),
        weight.lines().div_ceil(w) * src_panel,
        "winograd: packed weight size"
    );
    let src = &src[outputs.start / w * src_panel..];
    let panels = outputs.len().div_ceil(w);
    let mut per_panel: Vec<Vec<&mut [E]>> = (0..panels).map(|_| Vec::new()).collect();
    for m in out.iter_mut() {
        let data = m
            .avx512_left_panels_mut::<E>()
            .expect("made for this kernel");
        for (p, chunk) in data.chunks_exact_mut(dst_panel).enumerate() {
            per_panel[p].push(chunk);
        }
    }
    per_panel
        .into_par_iter()
        .zip(src.par_chunks_exact(src_panel).take(panels))
        .for_each(|(mut dst, src)| {
            let dst: &mut [&mut [E]; P] = (&mut dst[..]).try_into().expect("one per position");
            panel(src, dst)
        });
    Some(out)
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// U = G g Gᵀ of one input channel from its 9 taps (tap = 3 ky + kx), per line, in the
/// general path's order (G g by columns, then each row times Gᵀ): `u[T i + j]`, `filter`
/// being the variant's G applied to one 3-tap line.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transform<const T: usize, const P: usize>(
    taps: &[__m512],
    filter: impl Fn(__m512, __m512, __m512) -> [__m512; T],
) -> [__m512; P] {
    let cols = [0, 1, 2].map(|j| filter(taps[j], taps[3 + j], taps[6 + j]));
    let mut u = [taps[0]; P];
    for i in 0..T {
        let row = filter(cols[0][i], cols[1][i], cols[2][i]);
        u[T * i..T * i + T].copy_from_slice(&row);
    }
    u
}

/// F(2x2, 3x3) in bf16 for one panel: `src` holds 9 `cin` k values (`k = ci * 9 + tap`) of
/// 14 lines as k pairs, each `dst[e]` `cin` k values (`k = ci`) of position e.
///
/// # Safety
/// The CPU has AVX-512 BF16; `cin` is even; the slices have the sizes above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn f2_bf16(src: &[u16], cin: usize, dst: &mut [&mut [u16]; 16]) {
    let w = AVX512_LEFT_PANEL;
    let group = 2 * w;
    debug_assert!(src.len() == 9 * cin * w && dst.iter().all(|d| d.len() == cin * w));
    let lines = crate::gemm::avx512::prefix_mask(w);
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let pairs = crate::gemm::avx512::pair_index();
    let half = _mm512_set1_ps(0.5);
    // `Minimal::filter` of F2.
    let filter = |g0: __m512, g1: __m512, g2: __m512| {
        let sum = _mm512_add_ps(_mm512_add_ps(g0, g1), g2);
        let alt = _mm512_add_ps(_mm512_sub_ps(g0, g1), g2);
        [g0, _mm512_mul_ps(half, sum), _mm512_mul_ps(half, alt), g2]
    };
    debug_assert_eq!(F2::T, 4);
    for cp in 0..cin / 2 {
        // k values 18 cp .. 18 cp + 18: channel 2 cp's taps, then channel 2 cp + 1's.
        let mut k = [_mm512_setzero_ps(); 18];
        for g in 0..9 {
            let at = src.as_ptr().add((9 * cp + g) * group);
            let both = _mm512_maskz_loadu_epi32(lines, at.cast());
            k[2 * g] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(both));
            k[2 * g + 1] = _mm512_castsi512_ps(_mm512_and_si512(both, high));
        }
        let u0: [__m512; 16] = transform(&k[..9], filter);
        let u1: [__m512; 16] = transform(&k[9..], filter);
        for (e, d) in dst.iter_mut().enumerate() {
            let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(u1[e], u0[e]));
            let paired = _mm512_permutexvar_epi16(pairs, rounded);
            _mm512_mask_storeu_epi32(d.as_mut_ptr().add(cp * group).cast(), lines, paired);
        }
    }
}

/// F(4x4, 3x3) in f32 for one panel: `src` holds 9 `cin` k values (`k = ci * 9 + tap`) of
/// 14 lines, each `dst[e]` `cin` k values (`k = ci`) of position e.
///
/// # Safety
/// The CPU has AVX-512 F; the slices have the sizes above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f4_f32(src: &[f32], cin: usize, dst: &mut [&mut [f32]; 36]) {
    let w = AVX512_LEFT_PANEL;
    debug_assert!(src.len() == 9 * cin * w && dst.iter().all(|d| d.len() == cin * w));
    let lines = crate::gemm::avx512::prefix_mask(w);
    let c = |x: f32| _mm512_set1_ps(x);
    let (quarter, six, twelve, twenty_four) = (c(0.25), c(6.0), c(12.0), c(24.0));
    let sign = _mm512_set1_epi32(i32::MIN);
    // `Minimal::filter` of F4, operation for operation.
    let filter = |g0: __m512, g1: __m512, g2: __m512| {
        let even = _mm512_add_ps(g0, g2);
        // A sign flip (not 0 - x, which would turn -0 into +0).
        let neg = |x: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign));
        let (a, b, d) = (
            _mm512_div_ps(g0, twenty_four),
            _mm512_div_ps(g1, twelve),
            _mm512_div_ps(g2, six),
        );
        [
            _mm512_mul_ps(quarter, g0),
            _mm512_div_ps(neg(_mm512_add_ps(even, g1)), six),
            _mm512_div_ps(neg(_mm512_sub_ps(even, g1)), six),
            _mm512_add_ps(_mm512_add_ps(a, b), d),
            _mm512_add_ps(_mm512_sub_ps(a, b), d),
            g2,
        ]
    };
    debug_assert_eq!(F4::T, 6);
    for ci in 0..cin {
        let mut taps = [_mm512_setzero_ps(); 9];
        for (t, tap) in taps.iter_mut().enumerate() {
            *tap = _mm512_maskz_loadu_ps(lines, src.as_ptr().add((9 * ci + t) * w));
        }
        let u: [__m512; 36] = transform(&taps, filter);
        for (e, d) in dst.iter_mut().enumerate() {
            _mm512_mask_storeu_ps(d.as_mut_ptr().add(ci * w), lines, u[e]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Side, Strided};
    use crate::tensor::with_f32;
    use crate::test_util::rand;
    use crate::winograd::{filter_transform, Transforms};

    /// The packed filters of `W` against the general path's rows packed for the same
    /// products, bit for bit (f32: value for value); false when this CPU's kernels do not take the packed path.
    fn same_as_general_path<W: Minimal + Transforms>(precision: Precision) -> bool {
        // Part panels (13, 30 output channels), several channels (pairs), and a range of
        // output channels: from the second panel to the end, and a middle panel.
        for (cin, cout, outputs) in [
            (2, 13, 0..13),
            (16, 30, 0..30),
            (16, 30, 14..30),
            (40, 14, 0..14),
            (40, 42, 14..28),
        ] {
            let wt = rand(&[cout, cin, 3, 3], 5 + cin as u64);
            let weight = with_f32("test", &wt, |d| {
                PackedMatrix::pack(Strided::rows(d, cout, cin * 9), Side::Left, precision)
            })
            .unwrap();
            let order = DepthOrder::ChannelMajor;
            let Some(fast) = packed::<W>(&weight, precision, order, cin, outputs.clone()) else {
                return false;
            };
            let rows = filter_transform::<W>(&weight, order, cin, outputs.clone());
            let positions = W::T * W::T;
            assert_eq!(fast.len(), positions);
            for (e, u) in fast.iter().enumerate() {
                let view = Strided {
                    data: &rows[e * cin..],
                    lines: outputs.len(),
                    depth: cin,
                    line_stride: positions * cin,
                    depth_stride: 1,
                };
                let general = PackedMatrix::pack(view, Side::Left, precision);
                let what = format!("{precision:?} {cin}->{outputs:?} of {cout} position {e}");
                match precision {
                    Precision::Bf16 => assert!(
                        u.avx512_left_panels::<u16>() == general.avx512_left_panels::<u16>(),
                        "{what}"
                    ),
                    // As values: padding lines (past cout) hold -0 here and +0 there.
                    Precision::F32 => assert!(
                        u.avx512_left_panels::<f32>() == general.avx512_left_panels::<f32>(),
                        "{what}"
                    ),
                }
            }
        }
        true
    }

    #[test]
    fn packed_filters_equal_the_general_path_bit_for_bit() {
        if !same_as_general_path::<F2>(Precision::Bf16) {
            eprintln!("skipped F(2x2) bf16: no AVX512-BF16 dot-product kernel here");
        }
        if !same_as_general_path::<F4>(Precision::F32) {
            eprintln!("skipped F(4x4) f32: no AVX-512 kernel here");
        }
        // Odd channel counts in bf16, tap-major weights, and the other pairings take the
        // general path.
        for precision in [Precision::Bf16, Precision::F32] {
            let wt = rand(&[4, 3, 3, 3], 1);
            let w = with_f32("test", &wt, |d| {
                PackedMatrix::pack(Strided::rows(d, 4, 27), Side::Left, precision)
            })
            .unwrap();
            let (cm, tm) = (DepthOrder::ChannelMajor, DepthOrder::TapMajor);
            assert!(packed::<F2>(&w, Precision::Bf16, cm, 3, 0..4).is_none());
            assert!(packed::<F4>(&w, precision, tm, 3, 0..4).is_none());
            assert!(packed::<F2>(&w, Precision::F32, cm, 3, 0..4).is_none());
            assert!(packed::<F4>(&w, Precision::Bf16, cm, 3, 0..4).is_none());
        }
    }
}
