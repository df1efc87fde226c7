//! Every kernel tier against a float64 reference, on shapes that exercise edge tiles, several
//! k blocks, both split directions and every operand kind.

use super::*;
use crate::cpu::{with_isa, Isa};
use crate::test_util::tiers;

/// A small deterministic generator (values in [-1, 1)).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Reference C = A B + bias_row + bias_col + residual in f64, on inputs rounded as `precision`.
#[allow(clippy::too_many_arguments)]
fn reference(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    precision: Precision,
    bias_row: &[f32],
    bias_col: &[f32],
    residual: &[f32],
) -> Vec<f32> {
    let r = |x: f32| match precision {
        Precision::F32 => x as f64,
        Precision::Bf16 => round_bf16(x) as f64,
    };
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += r(a[i * k + p]) * r(b[p * n + j]);
            }
            s += bias_row[i] as f64 + bias_col[j] as f64 + residual[i * n + j] as f64;
            c[i * n + j] = s as f32;
        }
    }
    c
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs() / scale))
}

fn check(m: usize, n: usize, k: usize, precision: Precision, pack_a: bool, pack_b: bool) {
    let a = values(m * k, 1 + m as u64);
    let b = values(k * n, 2 + n as u64);
    let bias_row = values(m, 3);
    let bias_col = values(n, 4);
    let residual = values(m * n, 5);
    let want = reference(&a, &b, m, n, k, precision, &bias_row, &bias_col, &residual);
    let (zero_m, zero_n, zero_mn) = (vec![0.0; m], vec![0.0; n], vec![0.0; m * n]);
    let want_plain = reference(&a, &b, m, n, k, precision, &zero_m, &zero_n, &zero_mn);
    for isa in tiers() {
        with_isa(isa, || {
            let pa;
            let pb;
            let sa = Strided::rows(&a, m, k);
            let sb = Strided::cols(&b, k, n);
            let lhs = if pack_a {
                pa = PackedMatrix::pack(sa, Side::Left, precision);
                MatOperand::Packed(&pa)
            } else {
                MatOperand::Strided(sa)
            };
            let rhs = if pack_b {
                pb = PackedMatrix::pack(sb, Side::Right, precision);
                MatOperand::Packed(&pb)
            } else {
                MatOperand::Strided(sb)
            };
            let epi = Epilogue {
                bias_row: Some(&bias_row),
                bias_col: Some(&bias_col),
                residual: Some(&residual),
                residual_ld: n,
            };
            // With the epilogue, and without it (kernels may then keep C in place).
            for (epi, want) in [(epi, &want), (Epilogue::NONE, &want_plain)] {
                let mut c = vec![f32::NAN; m * n];
                matmul(lhs, rhs, &mut c, n, &epi, precision);
                let err = max_rel_err(&c, want);
                // f32 sums of k terms in another order; bf16 adds nothing (inputs rounded
                // the same).
                let bound = 1e-5 * (k as f32).sqrt().max(1.0);
                let plain = epi.bias_row.is_none();
                assert!(
                    err <= bound,
                    "{isa:?} {precision:?} m={m} n={n} k={k} packed=({pack_a},{pack_b}) \
                     plain {plain}: err {err} > {bound}"
                );
            }
        });
    }
}

#[test]
fn f32_shapes_and_operand_kinds() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (14, 32, 7),
        // One full 32-line panel of B, already in the kernels' layout (read in place), over
        // three k blocks.
        (29, 32, 1100),
        (15, 33, 300),
        (29, 65, 513),
        (200, 40, 77),
        (40, 200, 257),
        (3, 1100, 20),
        (170, 5, 1),
    ] {
        for (pa, pb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, n, k, Precision::F32, pa, pb);
        }
    }
}

#[test]
fn bf16_shapes_and_operand_kinds() {
    // Depths that are multiples of 32 reach the AMX tiles where there are some: whole and
    // partial 32 x 32 blocks, several k blocks (KC 1024), fewer rows than a panel.
    for &(m, n, k) in &[
        (1, 1, 1),
        (15, 33, 301),
        (29, 65, 1030),
        (200, 40, 77),
        (32, 32, 32),
        (31, 33, 64),
        (65, 70, 1056),
        (1, 40, 32),
        (100, 3, 96),
    ] {
        for (pa, pb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, n, k, Precision::Bf16, pa, pb);
        }
    }
}

#[test]
fn large_enough_to_use_both_threads() {
    check(300, 1000, 64, Precision::F32, false, true);
    check(300, 1000, 64, Precision::F32, true, false);
    check(300, 1000, 64, Precision::Bf16, true, false);
    // One tile of columns (a 4x4 image's pixels), rows prepacked: split across the rows.
    check(700, 16, 200, Precision::F32, true, false);
    check(700, 16, 200, Precision::Bf16, true, false);
    // One tile of rows, columns prepacked: split across the columns.
    check(10, 800, 200, Precision::F32, false, true);
}

#[test]
fn bf16_differs_from_f32_by_rounding_only() {
    // Catches a bf16 path that silently computes in f32 (or a broken rounding).
    let (m, n, k) = (16, 32, 64);
    let a = values(m * k, 9);
    let b = values(k * n, 10);
    let mut c32 = vec![0f32; m * n];
    let mut c16 = vec![0f32; m * n];
    let (sa, sb) = (Strided::rows(&a, m, k), Strided::cols(&b, k, n));
    matmul(
        sa.into(),
        sb.into(),
        &mut c32,
        n,
        &Epilogue::NONE,
        Precision::F32,
    );
    matmul(
        sa.into(),
        sb.into(),
        &mut c16,
        n,
        &Epilogue::NONE,
        Precision::Bf16,
    );
    let err = max_rel_err(&c16, &c32);
    assert!(err > 1e-4 && err < 2e-2, "bf16 vs f32 difference {err}");
}

#[test]
fn amx_takes_the_depths_its_tiles_fit() {
    if Isa::supported() != Isa::Amx {
        return;
    }
    with_isa(Isa::Amx, || {
        assert_eq!(KernelId::select(Precision::Bf16, 64), KernelId::Amx);
        assert_eq!(KernelId::select(Precision::Bf16, 77), KernelId::Avx512);
        assert_eq!(KernelId::select(Precision::F32, 64), KernelId::Avx512);
    });
}

/// The packed values' bits, padding included.
fn packed_bits(p: &PackedMatrix) -> Vec<u32> {
    if p.data.bf16 {
        let d: &[u16] = p.data.buf.slice(p.data.len);
        d.iter().map(|&x| x as u32).collect()
    } else {
        let d: &[f32] = p.data.buf.slice(p.data.len);
        d.iter().map(|x| x.to_bits()).collect()
    }
}

#[test]
fn row_major_weights_pack_as_any_view_does() {
    // Lines that are not whole panels, depths that are not whole groups or conversion blocks,
    // matrices split over several packing tasks.
    for &(lines, depth) in &[
        (1, 1),
        (15, 33),
        (33, 300),
        (100, 1030),
        (70, 4099),
        (1100, 300),
    ] {
        let a = values(lines * depth, 7 + lines as u64);
        // The same matrix stored depth-major: packed through the generic row-by-row path.
        let mut t = vec![0f32; lines * depth];
        for l in 0..lines {
            for k in 0..depth {
                t[k * lines + l] = a[l * depth + k];
            }
        }
        let bf16: Vec<half::bf16> = a.iter().map(|&x| half::bf16::from_f32(x)).collect();
        let widened: Vec<f32> = bf16.iter().map(|x| x.to_f32()).collect();
        for isa in tiers() {
            with_isa(isa, || {
                for side in [Side::Left, Side::Right] {
                    for precision in [Precision::F32, Precision::Bf16] {
                        let what = format!("{isa:?} {side:?} {precision:?} {lines}x{depth}");
                        let rows =
                            PackedMatrix::pack(Strided::rows(&a, lines, depth), side, precision);
                        let any =
                            PackedMatrix::pack(Strided::cols(&t, depth, lines), side, precision);
                        assert!(packed_bits(&rows) == packed_bits(&any), "{what}: rows");
                        // bf16 weights pack to what their widened values pack to.
                        let from_bf16 =
                            PackedMatrix::pack_bf16_rows(&bf16, lines, depth, side, precision);
                        let from_widened = PackedMatrix::pack(
                            Strided::rows(&widened, lines, depth),
                            side,
                            precision,
                        );
                        assert!(
                            packed_bits(&from_bf16) == packed_bits(&from_widened),
                            "{what}: bf16 source"
                        );
                    }
                }
            });
        }
    }
}

#[test]
fn bf16_pairs_packed_in_registers_equal_the_portable_packer() {
    // On AVX-512 BF16, f32 rows packed as bf16 pairs go through a register transpose
    // (`avx512::pack_pair_panel`); it must give the portable block path's bits exactly,
    // padding included, for part panels, odd depths, depth offsets and panels of 14, 16 and 32.
    if !Isa::supported().has_bf16_instructions() {
        eprintln!("skipped: this CPU has no AVX-512 BF16");
        return;
    }
    let (line_stride, total_lines) = (301, 80);
    let mut data = values(line_stride * total_lines, 11);
    // Ties (rounded to even, both ways), signed zeros, infinities and a large value.
    let specials = [
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0e38,
    ];
    for (i, s) in specials.iter().enumerate() {
        data[i * 37] = *s;
    }
    for w in [14usize, 16, 32] {
        for (l0, nl) in [(0, 1), (3, w - 1), (1, w), (2, 2 * w + 5)] {
            for (k0, kc) in [
                (0usize, 1usize),
                (0, 2),
                (5, 31),
                (0, 32),
                (7, 33),
                (1, 64),
                (0, 77),
                (1, 300),
            ] {
                let panels = nl.div_ceil(w) * kc.div_ceil(2) * w * 2;
                let mut fast = vec![0xFFFFu16; panels];
                let mut portable = vec![0x1234u16; panels];
                operand::pack_contiguous(&data, line_stride, l0, nl, k0, kc, w, 2, &mut fast);
                operand::pack_blocks::<u16, f32, 2>(
                    (&data, line_stride),
                    l0,
                    nl,
                    k0,
                    kc,
                    w,
                    &mut portable,
                );
                assert!(fast == portable, "w {w} lines {l0}+{nl} depth {k0}+{kc}");
            }
        }
    }
}
