//! F(2x2, 3x3)'s transformed filters U = G g Gᵀ computed straight from the packed bf16
//! weights into the packed bf16 panels the products read (AVX512-BF16), one pass over the
//! weights per call.
//!
//! The general path ([`super::filter_transform`]) unpacks each output channel's weights to
//! f32 (a gather across the panels), writes U as f32 (T²/9 · 2 = 3.6 times the bf16 weights'
//! bytes, fresh memory each call) and packs it again for every product. Here one panel of
//! weights (14 output channels, depth `ci * 9 + tap`) becomes one panel of each of the 16
//! position matrices: for each pair of input channels, its 18 k values (9 packed groups of 14
//! lines) are widened, transformed across the 14 lines at once, rounded, and stored as the
//! pairs the dot-product kernel reads. Same f32 arithmetic in the same order as the general
//! path, so the same bf16 values.

#![allow(unsafe_op_in_unsafe_fn)]

use rayon::prelude::*;

use crate::conv::DepthOrder;
use crate::gemm::{PackedMatrix, BF16_LEFT_PANEL};

/// Positions of F(2x2, 3x3): T² = 16.
const POSITIONS: usize = 16;

/// The 16 matrices `U[e]` (`cout x cin`, bf16 products) of F(2x2, 3x3) for channel-major 3x3
/// weights packed for the bf16 dot-product kernel, or `None` where this path does not apply
/// (another kernel or order, or an odd `cin`, whose channel pairs straddle packed groups).
pub(crate) fn f2_packed(
    weight: &PackedMatrix,
    order: DepthOrder,
    cin: usize,
    cout: usize,
) -> Option<Vec<PackedMatrix>> {
    if order != DepthOrder::ChannelMajor || !cin.is_multiple_of(2) || cin == 0 {
        return None;
    }
    let src = weight.bf16_left_panels()?;
    let w = BF16_LEFT_PANEL;
    // SAFETY: every value of every matrix is written below (each panel of each, in full).
    let mut out = (0..POSITIONS)
        .map(|_| unsafe { PackedMatrix::bf16_left_unwritten(cout, cin) })
        .collect::<Option<Vec<_>>>()?;
    let (src_panel, dst_panel) = (9 * cin * w, cin * w);
    let panels = cout.div_ceil(w);
    let mut per_panel: Vec<Vec<&mut [u16]>> = (0..panels).map(|_| Vec::new()).collect();
    for m in out.iter_mut() {
        let data = m.bf16_left_panels_mut().expect("made for the bf16 kernel");
        for (p, chunk) in data.chunks_exact_mut(dst_panel).enumerate() {
            per_panel[p].push(chunk);
        }
    }
    assert_eq!(
        src.len(),
        panels * src_panel,
        "winograd: packed weight size"
    );
    per_panel
        .into_par_iter()
        .zip(src.par_chunks_exact(src_panel))
        .for_each(|(mut dst, src)| {
            let dst: &mut [&mut [u16]; POSITIONS] =
                (&mut dst[..]).try_into().expect("one slice per position");
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the bf16 dot-product kernel packed `src` (so the CPU has AVX512-BF16);
            // `src` is one panel of 9 cin k values, each `dst` one panel of cin.
            unsafe {
                f2_panel(src, cin, dst)
            };
        });
    Some(out)
}

/// One panel: `src` holds 9 `cin` k values (`k = ci * 9 + tap`) of 14 lines as k pairs,
/// each `dst[e]` `cin` k values (`k = ci`) of position e.
///
/// # Safety
/// The CPU has AVX-512 BF16; `cin` is even; the slices have the sizes above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn f2_panel(src: &[u16], cin: usize, dst: &mut [&mut [u16]; POSITIONS]) {
    use std::arch::x86_64::*;
    let w = BF16_LEFT_PANEL;
    let group = 2 * w;
    debug_assert!(src.len() == 9 * cin * w && dst.iter().all(|d| d.len() == cin * w));
    let lines: __mmask16 = (1 << w) - 1;
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let pairs = crate::gemm::avx512::pair_index();
    let half = _mm512_set1_ps(0.5);
    // G g of one 3-tap line, as `Minimal::filter` of F2 computes it.
    let filter = |g0: __m512, g1: __m512, g2: __m512| {
        let sum = _mm512_add_ps(_mm512_add_ps(g0, g1), g2);
        let alt = _mm512_add_ps(_mm512_sub_ps(g0, g1), g2);
        [g0, _mm512_mul_ps(half, sum), _mm512_mul_ps(half, alt), g2]
    };
    // U = G g Gᵀ of one input channel from its 9 taps (tap = 3 ky + kx), per line:
    // `u[4 i + j]`, in the general path's order (columns first, then rows).
    let transform = |taps: &[__m512]| {
        let cols = [0, 1, 2].map(|j| filter(taps[j], taps[3 + j], taps[6 + j]));
        let mut u = [_mm512_setzero_ps(); POSITIONS];
        for i in 0..4 {
            let row = filter(cols[0][i], cols[1][i], cols[2][i]);
            u[4 * i..4 * i + 4].copy_from_slice(&row);
        }
        u
    };
    for cp in 0..cin / 2 {
        // k values 18 cp .. 18 cp + 18: channel 2 cp's taps, then channel 2 cp + 1's.
        let mut k = [_mm512_setzero_ps(); 18];
        for g in 0..9 {
            let at = src.as_ptr().add((9 * cp + g) * group);
            let both = _mm512_maskz_loadu_epi32(lines, at.cast());
            k[2 * g] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(both));
            k[2 * g + 1] = _mm512_castsi512_ps(_mm512_and_si512(both, high));
        }
        let (u0, u1) = (transform(&k[..9]), transform(&k[9..]));
        for (e, d) in dst.iter_mut().enumerate() {
            let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(u1[e], u0[e]));
            let paired = _mm512_permutexvar_epi16(pairs, rounded);
            _mm512_mask_storeu_epi32(d.as_mut_ptr().add(cp * group).cast(), lines, paired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Precision, Side, Strided};
    use crate::tensor::with_f32;
    use crate::test_util::rand;
    use crate::winograd::{filter_transform, minimal::F2};

    #[test]
    fn packed_filters_equal_the_general_path_bit_for_bit() {
        // Part panels (30 and 13 output channels), several channel pairs.
        for (cin, cout) in [(2, 13), (16, 30), (40, 14)] {
            let wt = rand(&[cout, cin, 3, 3], 5 + cin as u64);
            let packed = with_f32("test", &wt, |d| {
                PackedMatrix::pack(Strided::rows(d, cout, cin * 9), Side::Left, Precision::Bf16)
            })
            .unwrap();
            let Some(fast) = f2_packed(&packed, DepthOrder::ChannelMajor, cin, cout) else {
                eprintln!("skipped: bf16 products do not run on the AVX512-BF16 kernel here");
                return;
            };
            let rows = filter_transform::<F2>(&packed, DepthOrder::ChannelMajor, cin, cout);
            for (e, u) in fast.iter().enumerate() {
                let view = Strided {
                    data: &rows[e * cin..],
                    lines: cout,
                    depth: cin,
                    line_stride: POSITIONS * cin,
                    depth_stride: 1,
                };
                let general = PackedMatrix::pack(view, Side::Left, Precision::Bf16);
                assert!(
                    u.bf16_left_panels() == general.bf16_left_panels(),
                    "{cin}->{cout} position {e}"
                );
            }
        }
        // Odd channel counts, and tap-major weights, take the general path.
        let wt = rand(&[4, 3, 3, 3], 1);
        let packed = with_f32("test", &wt, |d| {
            PackedMatrix::pack(Strided::rows(d, 4, 27), Side::Left, Precision::Bf16)
        })
        .unwrap();
        assert!(f2_packed(&packed, DepthOrder::ChannelMajor, 3, 4).is_none());
        assert!(f2_packed(&packed, DepthOrder::TapMajor, 3, 4).is_none());
    }
}
