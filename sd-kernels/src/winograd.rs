//! 3x3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2x2 block of output comes from the 4x4 block of input around it. In the transformed
//! domain the 3x3 filter becomes an element-wise product over 16 positions, so one tile costs
//! 16 multiply-adds per (input, output) channel pair instead of 4 x 9 = 36: the products
//! shrink 2.25x, and the rest is three cheap linear maps,
//!
//! ```text
//! U = G g Gᵀ        G  = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]          (each 3x3 filter g → 4x4)
//! V = Bᵀ d B        Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]  (each 4x4 input tile d)
//! M[e] = U[e] V[e]  for the 16 positions e: [Cout x Cin] times [Cin x tiles] on the matrix engine
//! Y = Aᵀ m A        Aᵀ = [1 1 1 0; 0 1 -1 -1]                     (each tile's 4x4 m → 2x2 output)
//! ```
//!
//! U is computed on every call from the packed weights, so a network holds one copy of its
//! weights (U would be 16/9 of their size); that costs one pass over the weights per call.
//! Tiles are processed in chunks whose V and M fit [`CHUNK_FLOATS`], so scratch stays small
//! at any image size. In f32 the result differs from the direct sum only by rounding (a few
//! ulps of the largest terms); in bf16 the transformed values are what is rounded.

use rayon::prelude::*;

use crate::gemm::{self, Epilogue, MatOperand, PackedMatrix, Precision, Strided};
use crate::tensor::output;

/// Values of V (and of M) held at most per chunk of tiles: 8 Mi f32, 32 MiB each.
const CHUNK_FLOATS: usize = 8 << 20;

/// Images smaller than this many pixels (over the batch) stay on the direct product, where
/// the transforms' fixed costs would outweigh the saved multiplies (see the conv benches).
pub(crate) const MIN_PIXELS: usize = 4096;

/// The same on AMX tiles, whose products are so fast that the transforms (f32, memory-bound)
/// pay only on large images. Measured (bf16, 2 threads): 320 ch 64² x 2 direct 59 ms against
/// 68 ms; 512 ch 128² x 1 (the VAE) direct 302 ms against 183 ms.
pub(crate) const MIN_PIXELS_ON_TILES: usize = 16384;

/// Channel counts below this stay direct (e.g. a UNet's 4-channel conv_in and conv_out).
pub(crate) const MIN_CHANNELS: usize = 16;

/// Whether F(2x2, 3x3) is the faster way for a 3x3 "same" convolution of this size with
/// weights in `precision`.
pub(crate) fn worthwhile(
    batch: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    precision: Precision,
) -> bool {
    // The transformed products have depth cin.
    let min_pixels = if gemm::runs_on_tiles(precision, cin) {
        MIN_PIXELS_ON_TILES
    } else {
        MIN_PIXELS
    };
    cin >= MIN_CHANNELS && cout >= MIN_CHANNELS && batch * h * w >= min_pixels
}

/// The tiling of a batch of `h x w` images into 2x2 output tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// Images.
    pub batch: usize,
    /// Input (and output) channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Height (input = output).
    pub h: usize,
    /// Width (input = output).
    pub w: usize,
}

impl Grid {
    /// Tile rows per image.
    fn th(&self) -> usize {
        self.h.div_ceil(2)
    }

    /// Tiles per tile row.
    fn tw(&self) -> usize {
        self.w.div_ceil(2)
    }
}

/// `out[b, co] = conv3x3(input)[b, co] + bias[b * cout + co] + residual[b, co]` for `input`
/// `[batch, cin, h, w]`, with the weights `[cout, cin * 9]` packed as a left operand.
///
/// # Panics
/// When the slices do not have the grid's sizes.
pub(crate) fn conv3x3(
    weight: &PackedMatrix,
    grid: Grid,
    input: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let Grid {
        batch,
        cin,
        cout,
        h,
        w,
    } = grid;
    assert_eq!(weight.lines(), cout, "winograd: weight rows");
    assert_eq!(weight.depth(), cin * 9, "winograd: weight depth");
    assert_eq!(input.len(), batch * cin * h * w, "winograd: input length");
    assert_eq!(out.len(), batch * cout * h * w, "winograd: output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), batch * cout, "winograd: bias length");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "winograd: residual length");
    }
    let precision = weight.precision();
    let u = filter_transform(weight, cin, cout);
    let (th, tw) = (grid.th(), grid.tw());
    let rows_total = batch * th;
    let rows_per_chunk = (CHUNK_FLOATS / (16 * cin.max(cout) * tw)).clamp(1, rows_total);
    let max_tiles = rows_per_chunk * tw;
    let mut v = output(16 * cin * max_tiles);
    let mut m = output(16 * cout * max_tiles);
    let plane = h * w;
    for r0 in (0..rows_total).step_by(rows_per_chunk) {
        let r1 = (r0 + rows_per_chunk).min(rows_total);
        let tiles = (r1 - r0) * tw;
        let v = &mut v[..16 * cin * tiles];
        let m = &mut m[..16 * cout * tiles];
        v.par_chunks_mut(16 * tiles)
            .enumerate()
            .for_each(|(ci, dst)| input_transform(input, &grid, ci, (r0, r1), dst));
        m.par_chunks_mut(cout * tiles)
            .enumerate()
            .for_each(|(e, m_e)| {
                let u_e = Strided {
                    data: &u[e * cin..],
                    lines: cout,
                    depth: cin,
                    line_stride: 16 * cin,
                    depth_stride: 1,
                };
                let v_e = Strided {
                    data: &v[e * tiles..],
                    lines: tiles,
                    depth: cin,
                    line_stride: 1,
                    depth_stride: 16 * tiles,
                };
                gemm::matmul(
                    MatOperand::Strided(u_e),
                    MatOperand::Strided(v_e),
                    m_e,
                    tiles,
                    &Epilogue::NONE,
                    precision,
                );
            });
        // Output planes (image, co) this chunk writes rows of.
        let (first, last) = (r0 / th, (r1 - 1) / th);
        let span = first * cout * plane..(last + 1) * cout * plane;
        let m = &*m;
        out[span]
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(q, dst)| {
                let img = first + q / cout;
                let co = q % cout;
                let at = (img * cout + co) * plane;
                let tail = Tail {
                    bias: bias.map_or(0.0, |b| b[img * cout + co]),
                    residual: residual.map(|r| &r[at..at + plane]),
                };
                let rows = (r0.max(img * th), r1.min((img + 1) * th));
                output_transform(m, &grid, co, (r0, r1), rows, &tail, dst);
            });
    }
}

/// U as `[cout][16][cin]`: row `co` of the product for position `e` is at `(co * 16 + e) * cin`.
fn filter_transform(weight: &PackedMatrix, cin: usize, cout: usize) -> Vec<f32> {
    let mut u = output(cout * 16 * cin);
    u.par_chunks_mut(16 * cin).enumerate().for_each_init(
        || vec![0f32; cin * 9],
        |g, (co, dst)| {
            weight.unpack_line(co, g);
            filters_of_one_output(g, dst);
        },
    );
    u
}

crate::simd::multiversion! {
    /// `dst[e * cin + ci] = (G g_ci Gᵀ)[e]` for the 3x3 filters `g` of one output channel.
    fn filters_of_one_output(g: &[f32], dst: &mut [f32]) {
        let cin = g.len() / 9;
        for (ci, k) in g.chunks_exact(9).enumerate() {
            // Rows of G g (4 x 3), then each row times Gᵀ.
            let row = |r: usize| [k[3 * r], k[3 * r + 1], k[3 * r + 2]];
            let (g0, g1, g2) = (row(0), row(1), row(2));
            let t = [
                g0,
                std::array::from_fn::<f32, 3, _>(|j| 0.5 * (g0[j] + g1[j] + g2[j])),
                std::array::from_fn::<f32, 3, _>(|j| 0.5 * (g0[j] - g1[j] + g2[j])),
                g2,
            ];
            for (i, [a, b, c]) in t.into_iter().enumerate() {
                let u = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                for (j, v) in u.into_iter().enumerate() {
                    dst[(4 * i + j) * cin + ci] = v;
                }
            }
        }
    }
}

crate::simd::multiversion! {
    /// V for input channel `ci` over tile rows `r0..r1` (row r = image r / th, tile row
    /// r % th): `dst[e * tiles + t]`, t counted from the chunk's first tile.
    fn input_transform(input: &[f32], grid: &Grid, ci: usize, rows: (usize, usize), dst: &mut [f32]) {
        let (th, tw) = (grid.th(), grid.tw());
        let (h, w) = (grid.h, grid.w);
        let tiles = (rows.1 - rows.0) * tw;
        // Column 2k - 1 ("even", padded index 2k) and 2k ("odd") of the four input rows,
        // for k in 0..=tw, zero outside the image.
        let n = tw + 1;
        let mut even = vec![0f32; 4 * n];
        let mut odd = vec![0f32; 4 * n];
        let mut ce = vec![0f32; 4 * n];
        let mut co = vec![0f32; 4 * n];
        for r in rows.0..rows.1 {
            let (img, ty) = (r / th, r % th);
            let plane = &input[(img * grid.cin + ci) * h * w..][..h * w];
            for i in 0..4 {
                let (e, o) = (&mut even[i * n..(i + 1) * n], &mut odd[i * n..(i + 1) * n]);
                let iy = (2 * ty + i) as isize - 1;
                if iy < 0 || iy >= h as isize {
                    e.fill(0.0);
                    o.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..][..w];
                e[0] = 0.0;
                for k in 1..n {
                    e[k] = if 2 * k - 1 < w { src[2 * k - 1] } else { 0.0 };
                }
                for (k, o) in o.iter_mut().enumerate() {
                    *o = if 2 * k < w { src[2 * k] } else { 0.0 };
                }
            }
            // Bᵀ d: rows (r0 - r2, r1 + r2, r2 - r1, r1 - r3), on both column sets.
            for (src, dst) in [(&even, &mut ce), (&odd, &mut co)] {
                let (s0, s1, s2, s3) = (&src[..n], &src[n..2 * n], &src[2 * n..3 * n], &src[3 * n..]);
                let (d0, rest) = dst.split_at_mut(n);
                let (d1, rest) = rest.split_at_mut(n);
                let (d2, d3) = rest.split_at_mut(n);
                for x in 0..n {
                    d0[x] = s0[x] - s2[x];
                    d1[x] = s1[x] + s2[x];
                    d2[x] = s2[x] - s1[x];
                    d3[x] = s1[x] - s3[x];
                }
            }
            // (Bᵀ d) B along each row: the tile at tx reads columns (e[tx], o[tx], e[tx+1], o[tx+1]).
            let t0 = (r - rows.0) * tw;
            for i in 0..4 {
                let (e, o) = (&ce[i * n..(i + 1) * n], &co[i * n..(i + 1) * n]);
                let base = 4 * i * tiles + t0;
                let v0 = &mut dst[base..base + tw];
                for tx in 0..tw {
                    v0[tx] = e[tx] - e[tx + 1];
                }
                let v1 = &mut dst[base + tiles..base + tiles + tw];
                for tx in 0..tw {
                    v1[tx] = o[tx] + e[tx + 1];
                }
                let v2 = &mut dst[base + 2 * tiles..base + 2 * tiles + tw];
                for tx in 0..tw {
                    v2[tx] = e[tx + 1] - o[tx];
                }
                let v3 = &mut dst[base + 3 * tiles..base + 3 * tiles + tw];
                for tx in 0..tw {
                    v3[tx] = o[tx] - o[tx + 1];
                }
            }
        }
    }
}

/// What the output transform adds: the channel's bias and, optionally, the residual plane.
pub(crate) struct Tail<'a> {
    bias: f32,
    residual: Option<&'a [f32]>,
}

crate::simd::multiversion! {
    /// Writes the rows of output plane (image, `co`) that tile rows `own.0..own.1` cover, from
    /// M of the chunk `chunk.0..chunk.1` (`m[(e * cout + co) * tiles + t]`).
    fn output_transform(
        m: &[f32],
        grid: &Grid,
        co: usize,
        chunk: (usize, usize),
        own: (usize, usize),
        tail: &Tail,
        dst: &mut [f32],
    ) {
        let (th, tw) = (grid.th(), grid.tw());
        let (h, w) = (grid.h, grid.w);
        let tiles = (chunk.1 - chunk.0) * tw;
        let mut s = vec![0f32; 8 * tw];
        for r in own.0..own.1 {
            let ty = r % th;
            let t0 = (r - chunk.0) * tw;
            let at = |e: usize| &m[(e * grid.cout + co) * tiles + t0..][..tw];
            // Aᵀ m: s0 = m0 + m1 + m2, s1 = m1 - m2 - m3 (rows of the tile), per column j.
            for j in 0..4 {
                let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                let (s0, s1) = s.split_at_mut(4 * tw);
                let (s0, s1) = (&mut s0[j * tw..(j + 1) * tw], &mut s1[j * tw..(j + 1) * tw]);
                for x in 0..tw {
                    s0[x] = m0[x] + m1[x] + m2[x];
                    s1[x] = m1[x] - m2[x] - m3[x];
                }
            }
            // (Aᵀ m) A along each row: outputs (2 tx, 2 tx + 1).
            for a in 0..2 {
                let oy = 2 * ty + a;
                if oy >= h {
                    break;
                }
                let sa = &s[a * 4 * tw..(a + 1) * 4 * tw];
                let (c0, c1, c2, c3) = (&sa[..tw], &sa[tw..2 * tw], &sa[2 * tw..3 * tw], &sa[3 * tw..]);
                let row = &mut dst[oy * w..(oy + 1) * w];
                let res = tail.residual.map(|r| &r[oy * w..(oy + 1) * w]);
                for (x, v) in row.iter_mut().enumerate() {
                    let tx = x / 2;
                    let y = if x % 2 == 0 {
                        c0[tx] + c1[tx] + c2[tx]
                    } else {
                        c1[tx] - c2[tx] - c3[tx]
                    };
                    *v = y + tail.bias + res.map_or(0.0, |r| r[x]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Precision, Side};
    use crate::tensor::with_f32;
    use crate::test_util::{rand, rel_l2};
    use candle_core::{Device, Tensor};

    fn run(b: usize, cin: usize, cout: usize, h: usize, w: usize, precision: Precision, seed: u64) {
        let x = rand(&[b, cin, h, w], seed);
        let wt = rand(&[cout, cin, 3, 3], seed + 1);
        let bias = rand(&[b, cout], seed + 2);
        let res = rand(&[b, cout, h, w], seed + 3);
        let want = x
            .conv2d(&wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
            .unwrap()
            .add(&res)
            .unwrap();
        let packed = with_f32("test", &wt, |d| {
            PackedMatrix::pack(Strided::rows(d, cout, cin * 9), Side::Left, precision)
        })
        .unwrap();
        let grid = Grid {
            batch: b,
            cin,
            cout,
            h,
            w,
        };
        let mut out = vec![0f32; b * cout * h * w];
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bs = bias.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let rs = res.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        conv3x3(&packed, grid, &xs, Some(&bs), Some(&rs), &mut out);
        let got = Tensor::from_vec(out, (b, cout, h, w), &Device::Cpu).unwrap();
        let bound = if precision == Precision::F32 {
            1e-6
        } else {
            1e-2
        };
        let e = rel_l2(&got, &want);
        assert!(
            e < bound,
            "b{b} {cin}->{cout} {h}x{w} {precision:?}: rel L2 {e}"
        );
    }

    #[test]
    fn matches_direct_convolution_on_even_and_odd_sizes() {
        let cases = [
            (2, 32, 40, 16, 16),
            (1, 7, 5, 9, 5),
            (1, 3, 4, 1, 1),
            (2, 16, 24, 5, 11),
            (1, 20, 8, 2, 3),
        ];
        for (i, &(b, cin, cout, h, w)) in cases.iter().enumerate() {
            for precision in [Precision::F32, Precision::Bf16] {
                run(b, cin, cout, h, w, precision, 100 + 10 * i as u64);
            }
        }
    }

    #[test]
    fn chunks_of_tiles_cross_image_boundaries_correctly() {
        // 16 * 512 channels * 33 tiles per row = 270k floats per tile row: 31 rows per chunk,
        // so chunks end inside images (th = 33 per image).
        run(2, 512, 16, 66, 66, Precision::F32, 7);
    }
}
