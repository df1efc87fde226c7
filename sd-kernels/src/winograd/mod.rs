//! 3x3, stride 1, padding 1 convolution by Winograd's minimal filtering F(m x m, 3x3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), m = 2 or 4 (see
//! [`minimal`] for the two variants' matrices).
//!
//! Each m x m block of output comes from the (m + 2)² block of input around it. In the
//! transformed domain the 3x3 filter becomes an element-wise product over T² = (m + 2)²
//! positions, so one tile costs T² multiply-adds per (input, output) channel pair instead of
//! 9 m²: 2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3). The rest is three cheap
//! linear maps,
//!
//! ```text
//! U = G g Gᵀ        (each 3x3 filter g → T x T)
//! V = Bᵀ d B        (each T x T input tile d)
//! M[e] = U[e] V[e]  for the T² positions e: [Cout x Cin] times [Cin x tiles] on the matrix engine
//! Y = Aᵀ m A        (each tile's T x T m → m x m output)
//! ```
//!
//! U is computed on every call from the packed weights, so a network holds one copy of its
//! weights (U would be T²/9 of their size); that costs one pass over the weights per call.
//! On the AVX-512 kernels (F(2x2, 3x3) in bf16, F(4x4, 3x3) in f32) U goes straight from the
//! packed weights into packed panels ([`packed_filters`]); elsewhere it is written as f32 rows
//! and packed by each product.
//! Tiles are processed in chunks whose V and M fit [`CHUNK_FLOATS`], so scratch stays small
//! at any image size. V goes to f32 rows that each product packs, or, for bf16 products on
//! the dot-product kernel, straight into that kernel's packed pairs ([`transformed_inputs`]).
//! In f32 the result differs from the direct sum only by rounding (F(2, 3): a few ulps of the
//! largest terms; F(4, 3): about ten times that); in bf16 the transformed values are what is
//! rounded, so bf16 weights take F(2, 3), whose transforms round least.

mod minimal;
mod packed_filters;
mod transformed_inputs;

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::conv::DepthOrder;
use crate::cpu::{Isa, TierGuard};
use crate::gemm::{self, Epilogue, MatOperand, NoSource, PackedMatrix, Precision, Strided};
use crate::input_map::InputMap;
use crate::tensor::{taps_first_row, Unwritten};
use minimal::{Minimal, F2, F4, T_MAX};
use transformed_inputs::TransformedInputs;
pub(crate) use transformed_inputs::VLayout;

/// Values of V (and of M) held at most per chunk of tiles: 8 Mi f32, 32 MiB each.
const CHUNK_FLOATS: usize = 8 << 20;

/// Bytes of each position's matrix in a part of the transformed filters U, at least: U holds
/// T² values for every 9 weights (in f32, 236 MB for a 1280 -> 1280 convolution in F(4x4,
/// 3x3)), so a wide convolution makes it for a part of its output channels, runs their
/// products, then makes the next part. Whole, U was fresh memory each call, and the blocks it
/// left in the allocator's cache pushed out the activations' (page zeroing took 5.4% of a
/// f32 512² UNet call). At least a huge page per matrix, because the allocator keeps and cuts
/// only such blocks: parts of at most 32 MiB (36 matrices of 0.8 MiB for 1280 f32 inputs)
/// came from the system allocator, which gave each part's pages back and faulted them in
/// again (criterion, f32 F(4x4) 1280 ch 16² x 2: 52 -> 119 ms).
const FILTER_MATRIX_BYTES: usize = crate::alloc::HUGE;

/// Output channels per part of U (see [`FILTER_MATRIX_BYTES`]) when each takes
/// `matrix_line_bytes` in each position's matrix: whole panels, parts of near equal size and
/// at least that many bytes per matrix, all of them (`cout`) when U is small.
fn filter_part(matrix_line_bytes: usize, cout: usize) -> usize {
    let panel = gemm::AVX512_LEFT_PANEL;
    let min_lines = FILTER_MATRIX_BYTES.div_ceil(matrix_line_bytes.max(1));
    let parts = (cout / min_lines).max(1);
    cout.div_ceil(parts).next_multiple_of(panel).min(cout)
}

/// Images smaller than this many pixels (over the batch) stay on the direct product, where
/// the transforms' fixed costs (U is recomputed per call: T²/9 of the weights) outweigh the
/// saved multiplies. Measured (f32, 2 threads, AVX2 EPYC; direct / F(2x2) / F(4x4)):
/// 320 ch 64² x 2: 95 / 86 / 68 ms; 640 ch 32² x 2: 131 / 119 / 103 ms; 1280 ch 16² x 2:
/// 138 / 141 / 232 ms; 512 ch 128² x 1: 1149 / 624 / 379 ms. In bf16 F(2x2) already wins
/// at 640 ch 32² x 2 (94 against 159 ms direct).
pub(crate) const MIN_PIXELS: usize = 2048;

/// The same on AMX tiles, whose products are so fast that the transforms (f32, memory-bound)
/// pay only on large images. Measured (bf16, 2 threads): 320 ch 64² x 2 direct 59 ms against
/// 68 ms; 512 ch 128² x 1 (the VAE) direct 302 ms against 183 ms.
pub(crate) const MIN_PIXELS_ON_TILES: usize = 16384;

/// bf16 convolutions with at most this many input and output channels run F(4x4, 3x3) in f32
/// off the AMX tiles (see [`Plan::auto`]). Paired against F(2x2, 3x3) in bf16, AVX512-BF16
/// (Zen 4), 2 threads, old / new time: 128 ch 512² 1.28x, 256->128 512² 1.28x, 256 ch 256²
/// 1.13x, 320 ch 64² x 2 1.12x; wider layers lose: 640->320 64² x 2 0.98x, 512->256 256²
/// 0.90x, 512 ch 128² 0.80x, 640 ch 32² x 2 0.82x.
pub(crate) const NARROW_CHANNELS: usize = 320;

/// Convolutions this wide (see [`is_wide`]) on the AVX-512 kernels (bf16 dot products, or
/// f32) run Winograd from [`MIN_PIXELS_WIDE`] pixels: their transformed filters come straight
/// from the packed weights ([`packed_filters`]), in parts ([`FILTER_MATRIX_BYTES`]), a fixed
/// cost that wide products repay on smaller images.
///
/// f32 (F(4x4, 3x3)): both channel counts at least this. Measured (2 threads, Zen 4, min of
/// 15-20; direct / F(4x4)): at 512 pixels 640 -> 640 18.1 / 12.3 ms, 1280 -> 640 37.2 / 23.9,
/// 960 -> 640 26.9 / 16.4, 640 -> 1280 35.2 / 21.8, 1920 -> 640 53.4 / 32.0 (a 256² UNet's
/// 16² level), 1280 -> 1280 75.6 / 45.5 (criterion); 512 -> 512 at 32² x 1 (a 256² VAE
/// decode) 22.5 / 10.7 ms; but 320 -> 640 at 512 pixels 9.1 / 14.6 ms.
pub(crate) const WIDE_F32_CHANNELS: usize = 512;

/// bf16 (F(2x2, 3x3)): both channel counts at least this. Alone, narrower convolutions
/// also run faster in F(2x2) at 512 pixels (direct / F(2x2): 960 -> 640 14.5 / 10.9 ms,
/// 1280 -> 640 19.3 / 15.9, 640 -> 1280 19.0 / 16.0, 1920 -> 640 29.0 / 21.9; not 640 -> 640,
/// 9.8 / 12.2), but a bf16 256² UNet call that ran those in F(2x2) was slower (3 alternating
/// rounds, min 1.037 / 1.072 / 1.074 s -> 1.064 / 1.083 / 1.117 s).
pub(crate) const WIDE_BF16_CHANNELS: usize = 1280;

/// Whether a `cin -> cout` convolution with `precision` products counts as wide (see
/// [`WIDE_F32_CHANNELS`], [`WIDE_BF16_CHANNELS`]); an odd `cin` never does.
fn is_wide(precision: Precision, cin: usize, cout: usize) -> bool {
    let least = match precision {
        Precision::F32 => WIDE_F32_CHANNELS,
        Precision::Bf16 => WIDE_BF16_CHANNELS,
    };
    cin.is_multiple_of(2) && cin.min(cout) >= least
}

/// See [`WIDE_F32_CHANNELS`]. Below it even the widest convolutions lose: bf16 1280 ch 8² x 2
/// (128 pixels) 9.3 ms direct / 12.6 ms F(2x2), f32 17.6 / 37.8 ms F(4x4); 512 ch 16² x 1
/// (256 pixels) f32 5.9 / 6.6 ms.
pub(crate) const MIN_PIXELS_WIDE: usize = 512;

/// Channel counts below this stay direct (e.g. a UNet's 4-channel conv_in and conv_out).
pub(crate) const MIN_CHANNELS: usize = 16;

/// Which minimal filtering a 3x3 "same" convolution runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// F(2x2, 3x3).
    F2,
    /// F(4x4, 3x3).
    F4,
}

/// How a Winograd convolution runs: its minimal filtering and the precision of the T²
/// products in the transformed domain (U is always computed in f32 from the packed weights,
/// so any weights can feed f32 products).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// F(2x2, 3x3) or F(4x4, 3x3).
    pub variant: Variant,
    /// The products' precision.
    pub products: Precision,
}

impl Plan {
    /// `variant` with products in the weights' own precision (a forced algorithm).
    pub(crate) fn forced(variant: Variant, weights: Precision) -> Self {
        Plan {
            variant,
            products: weights,
        }
    }

    /// The plan for weights in `weights` precision on a `cin -> cout` convolution: f32
    /// weights run F(4x4, 3x3) in f32. bf16 weights run F(2x2, 3x3) in bf16 (F(4, 3)'s larger
    /// coefficients would magnify the bf16 rounding of the transformed values), except on the
    /// vector kernels when both channel counts are at most [`NARROW_CHANNELS`]: there the
    /// transforms, not the products, take most of the time, and F(4x4, 3x3) in f32 (products
    /// of f32 transforms of the bf16 weights) needs 2.25 instead of 4 input values per output
    /// pixel, rounds nothing to bf16, and is more accurate.
    pub(crate) fn auto(weights: Precision, cin: usize, cout: usize) -> Self {
        let narrow = cin <= NARROW_CHANNELS && cout <= NARROW_CHANNELS;
        match weights {
            Precision::Bf16 if gemm::runs_on_tiles(weights, cin) || !narrow => Plan {
                variant: Variant::F2,
                products: Precision::Bf16,
            },
            _ => Plan {
                variant: Variant::F4,
                products: Precision::F32,
            },
        }
    }
}

/// Whether Winograd is the faster way for a 3x3 "same" convolution of this size with
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
    let wide = is_wide(precision, cin, cout);
    let min_pixels = if gemm::runs_on_tiles(precision, cin) {
        MIN_PIXELS_ON_TILES
    } else if wide && gemm::runs_on_avx512_panels(precision, cin) {
        MIN_PIXELS_WIDE
    } else {
        MIN_PIXELS
    };
    cin >= MIN_CHANNELS && cout >= MIN_CHANNELS && batch * h * w >= min_pixels
}

/// The tiling of a batch of `h x w` images into m x m output tiles.
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
    /// Tile rows per image and tiles per tile row for output tiles of side `m`.
    fn tiles(&self, m: usize) -> (usize, usize) {
        (self.h.div_ceil(m), self.w.div_ceil(m))
    }
}

/// `out[b, co] = conv3x3(map(input))[b, co] + bias[b * cout + co] + residual[b, co]` for the
/// `[batch, cin, h, w]` image that `map` reads from `input` (its source), with the weights
/// `[cout, cin * 9]` packed as a left operand. V is stored as `layout` says (the same numbers
/// either way), or, for `None`, as the products read it fastest.
///
/// # Panics
/// When the slices do not have the grid's sizes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    plan: Plan,
    layout: Option<VLayout>,
    weight: &PackedMatrix,
    order: DepthOrder,
    grid: Grid,
    input: &[f32],
    map: &InputMap,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let (p, l) = (
        plan.products,
        layout.unwrap_or(VLayout::of(plan.products, grid.cin)),
    );
    match plan.variant {
        Variant::F2 => conv3x3_as::<F2>(weight, p, l, order, grid, input, map, bias, residual, out),
        Variant::F4 => conv3x3_as::<F4>(weight, p, l, order, grid, input, map, bias, residual, out),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv3x3_as<W: Minimal + Transforms>(
    weight: &PackedMatrix,
    precision: Precision,
    layout: VLayout,
    order: DepthOrder,
    grid: Grid,
    input: &[f32],
    map: &InputMap,
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
    let (hs, ws) = map
        .source_size(h, w)
        .expect("winograd: upsampled size is even");
    assert_eq!(input.len(), batch * cin * hs * ws, "winograd: input length");
    assert_eq!(out.len(), batch * cout * h * w, "winograd: output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), batch * cout, "winograd: bias length");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "winograd: residual length");
    }
    let positions = W::T * W::T;
    let isa = Isa::active();
    let (th, tw) = grid.tiles(W::M);
    let rows_total = batch * th;
    let rows_per_chunk = (CHUNK_FLOATS / (positions * cin.max(cout) * tw)).clamp(1, rows_total);
    let max_tiles = rows_per_chunk * tw;
    // U for `part` output channels at a time, made for each part, or whole and made once
    // where it fits in one part or the tiles come in several chunks.
    let value_bytes = match precision {
        Precision::F32 => 4,
        Precision::Bf16 => 2,
    };
    let part = if rows_per_chunk < rows_total {
        cout
    } else {
        filter_part(cin * value_bytes, cout)
    };
    let whole = (part >= cout).then(|| Filters::of::<W>(weight, precision, order, cin, 0..cout));
    let mut v = TransformedInputs::new(layout, positions, cin, max_tiles);
    let mut m = Unwritten::new(positions * cout * max_tiles);
    let plane = h * w;
    for r0 in (0..rows_total).step_by(rows_per_chunk) {
        let r1 = (r0 + rows_per_chunk).min(rows_total);
        let tiles = (r1 - r0) * tw;
        let m = &mut m.slots()[..positions * cout * tiles];
        let v = v.transform::<W>(input, map, &grid, (r0, r1), tiles);
        for c0 in (0..cout).step_by(part) {
            let outputs = c0..(c0 + part).min(cout);
            let made;
            let u = match &whole {
                Some(u) => u,
                None => {
                    made = Filters::of::<W>(weight, precision, order, cin, outputs.clone());
                    &made
                }
            };
            let rows = outputs.len();
            // Rows `outputs` of every position's product ([e][cout][tiles]).
            let mut m_rows: Vec<&mut [MaybeUninit<f32>]> = m
                .chunks_mut(cout * tiles)
                .map(|m_e| &mut m_e[outputs.start * tiles..outputs.end * tiles])
                .collect();
            m_rows.par_iter_mut().enumerate().for_each(|(e, m_e)| {
                let _tier = TierGuard::enter(isa);
                let u_e = u.position(e, positions, cin, rows);
                let v_e = v.position(e);
                gemm::matmul_with_source::<NoSource>(
                    u_e,
                    v_e,
                    m_e,
                    tiles,
                    &Epilogue::NONE,
                    precision,
                );
            });
        }
        // Output planes (image, co) this chunk writes rows of.
        let (first, last) = (r0 / th, (r1 - 1) / th);
        let span = first * cout * plane..(last + 1) * cout * plane;
        // SAFETY: the products above wrote all of this chunk's M.
        let m = unsafe { &*(m as *const [MaybeUninit<f32>] as *const [f32]) };
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
                W::output_tiles(m, &grid, co, (r0, r1), rows, &tail, dst);
            });
    }
}

/// The transformed filters U of one call.
enum Filters {
    /// Rows `[cout][T²][cin]` ([`filter_transform`]).
    Rows(Vec<f32>),
    /// One packed matrix per position ([`packed_filters`]).
    Packed(Vec<PackedMatrix>),
}

impl Filters {
    /// U for `weight`, packed straight for the products where [`packed_filters`] applies
    /// (F(2x2, 3x3) in bf16 and F(4x4, 3x3) in f32 on the AVX-512 kernels), else as rows.
    /// Only the output channels `outputs` (starting on a panel of [`gemm::AVX512_LEFT_PANEL`]
    /// lines): U's lines are those channels.
    fn of<W: Minimal + Transforms>(
        weight: &PackedMatrix,
        products: Precision,
        order: DepthOrder,
        cin: usize,
        outputs: Range<usize>,
    ) -> Self {
        match packed_filters::packed::<W>(weight, products, order, cin, outputs.clone()) {
            Some(u) => Filters::Packed(u),
            None => Filters::Rows(filter_transform::<W>(weight, order, cin, outputs)),
        }
    }

    /// The left operand of position `e`'s product (`lines x cin`, `lines` those U was made
    /// for).
    fn position(&self, e: usize, positions: usize, cin: usize, lines: usize) -> MatOperand<'_> {
        match self {
            Filters::Rows(u) => MatOperand::Strided(Strided {
                data: &u[e * cin..],
                lines,
                depth: cin,
                line_stride: positions * cin,
                depth_stride: 1,
            }),
            Filters::Packed(u) => MatOperand::Packed(&u[e]),
        }
    }
}

/// U of the output channels `outputs` as `[outputs][T²][cin]`: row `co` (counted from
/// `outputs.start`) of the product for position `e` is at `(co * T² + e) * cin`.
fn filter_transform<W: Minimal + Transforms>(
    weight: &PackedMatrix,
    order: DepthOrder,
    cin: usize,
    outputs: Range<usize>,
) -> Vec<f32> {
    let positions = W::T * W::T;
    let mut u = Unwritten::new(outputs.len() * positions * cin);
    u.slots()
        .par_chunks_mut(positions * cin)
        .enumerate()
        .for_each_init(
            || {
                let scratch = vec![0f32; cin * 3 * W::T];
                (vec![0f32; cin * 9], vec![0f32; cin * 9], scratch)
            },
            |(line, taps, cols), (co, dst)| {
                weight.unpack_line(outputs.start + co, line);
                match order {
                    DepthOrder::TapMajor => W::filters(line, cols, dst),
                    DepthOrder::ChannelMajor => {
                        taps_first_row(line, cin, taps);
                        W::filters(taps, cols, dst)
                    }
                }
            },
        );
    // SAFETY: each output channel's filters wrote all T² x cin of its values.
    unsafe { u.assume_written() }
}

/// `dst[e * cin + ci] = (G g_ci Gᵀ)[e]` for the 3x3 filters of one output channel, given by
/// tap (`taps[tap * cin + ci]`, tap = 3 ky + kx), every step a sweep over the channels (so it
/// vectorises across them); `cols` holds `3 T cin` values of scratch.
#[inline(always)]
fn filters_of_one_output<W: Minimal>(taps: &[f32], cols: &mut [f32], dst: &mut [MaybeUninit<f32>]) {
    let cin = taps.len() / 9;
    let t = W::T;
    let tap = |i: usize| &taps[i * cin..(i + 1) * cin];
    // G g, column j of each filter: `cols[(j * t + i) * cin + ci]`.
    for j in 0..3 {
        let (k0, k1, k2) = (tap(j), tap(3 + j), tap(6 + j));
        let out = &mut cols[j * t * cin..(j + 1) * t * cin];
        for ci in 0..cin {
            let c = W::filter([k0[ci], k1[ci], k2[ci]]);
            for (i, v) in c.iter().take(t).enumerate() {
                out[i * cin + ci] = *v;
            }
        }
    }
    // Then each row i of G g times Gᵀ.
    for i in 0..t {
        let row = |j: usize| &cols[(j * t + i) * cin..(j * t + i + 1) * cin];
        let (c0, c1, c2) = (row(0), row(1), row(2));
        let out = &mut dst[t * i * cin..t * (i + 1) * cin];
        for ci in 0..cin {
            let u = W::filter([c0[ci], c1[ci], c2[ci]]);
            for (j, v) in u.iter().take(t).enumerate() {
                out[j * cin + ci].write(*v);
            }
        }
    }
}

/// What the output transform adds: the channel's bias and, optionally, the residual plane.
pub(crate) struct Tail<'a> {
    bias: f32,
    residual: Option<&'a [f32]>,
}

/// V = Bᵀ d B for the input tiles and Y = Aᵀ m A for the output tiles of one variant,
/// compiled for each SIMD tier.
trait Transforms {
    /// U for one output channel (see [`filters_of_one_output`]).
    fn filters(taps: &[f32], cols: &mut [f32], dst: &mut [MaybeUninit<f32>]);

    /// V for input channel `ci` over tile rows `rows.0..rows.1` (row r = image r / th, tile
    /// row r % th): `dst[e * tiles + t]`, t counted from the chunk's first tile.
    fn input_tiles(
        input: &[f32],
        map: &InputMap,
        grid: &Grid,
        ci: usize,
        rows: (usize, usize),
        dst: &mut [f32],
    );

    /// Writes the rows of output plane (image, `co`) that tile rows `own.0..own.1` cover,
    /// from M of the chunk `chunk.0..chunk.1` (`m[(e * cout + co) * tiles + t]`).
    fn output_tiles(
        m: &[f32],
        grid: &Grid,
        co: usize,
        chunk: (usize, usize),
        own: (usize, usize),
        tail: &Tail,
        dst: &mut [f32],
    );
}

/// Implements [`Transforms`] for a variant through run-time dispatched copies of the generic
/// bodies.
macro_rules! transforms_for {
    ($variant:ty, $filters:ident, $input:ident, $output:ident) => {
        crate::simd::multiversion! {
            fn $filters(taps: &[f32], cols: &mut [f32], dst: &mut [MaybeUninit<f32>]) {
                filters_of_one_output::<$variant>(taps, cols, dst)
            }
        }
        crate::simd::multiversion! {
            fn $input(input: &[f32], map: &InputMap, grid: &Grid, ci: usize, rows: (usize, usize), dst: &mut [f32]) {
                input_tiles::<$variant>(input, map, grid, ci, rows, dst)
            }
        }
        crate::simd::multiversion! {
            fn $output(
                m: &[f32],
                grid: &Grid,
                co: usize,
                chunk: (usize, usize),
                own: (usize, usize),
                tail: &Tail,
                dst: &mut [f32],
            ) {
                output_tiles::<$variant>(m, grid, co, chunk, own, tail, dst)
            }
        }
        impl Transforms for $variant {
            fn filters(taps: &[f32], cols: &mut [f32], dst: &mut [MaybeUninit<f32>]) {
                $filters(taps, cols, dst)
            }

            fn input_tiles(
                input: &[f32],
                map: &InputMap,
                grid: &Grid,
                ci: usize,
                rows: (usize, usize),
                dst: &mut [f32],
            ) {
                $input(input, map, grid, ci, rows, dst)
            }

            fn output_tiles(
                m: &[f32],
                grid: &Grid,
                co: usize,
                chunk: (usize, usize),
                own: (usize, usize),
                tail: &Tail,
                dst: &mut [f32],
            ) {
                $output(m, grid, co, chunk, own, tail, dst)
            }
        }
    };
}

transforms_for!(F2, filters_f2, input_tiles_f2, output_tiles_f2);
transforms_for!(F4, filters_f4, input_tiles_f4, output_tiles_f4);

/// See [`Transforms::input_tiles`]. Each input row is first split into its T column phases
/// (`phase[k][tx]` = column m tx + k - 1), so both 1-D passes run along contiguous lines of
/// tiles.
#[inline(always)]
fn input_tiles<W: Minimal>(
    input: &[f32],
    map: &InputMap,
    grid: &Grid,
    ci: usize,
    rows: (usize, usize),
    dst: &mut [f32],
) {
    let (t, m) = (W::T, W::M);
    let (th, tw) = grid.tiles(m);
    let (h, w) = (grid.h, grid.w);
    let (hs, ws) = map.source_size(h, w).expect("checked by conv3x3");
    let tiles = (rows.1 - rows.0) * tw;
    let mut phase = vec![0f32; t * tw];
    // Mapped input rows (normalised, activated, upsampled) unless the map is the identity: T
    // slots, row iy in slot iy % T, so the T - m rows consecutive tile rows share are mapped
    // once (the map's SiLU costs more than the transform itself).
    let mut mapped = vec![0f32; if map.is_identity() { 0 } else { t * w }];
    let mut mapped_row = [usize::MAX; T_MAX];
    // d B for each of the T input rows: `rows_b[(i * t + j) * tw + tx]`.
    let mut rows_b = vec![0f32; t * t * tw];
    for r in rows.0..rows.1 {
        let (img, ty) = (r / th, r % th);
        let plane = &input[(img * grid.cin + ci) * hs * ws..][..hs * ws];
        let plane_map = map.plane(img, ci, grid.cin);
        if ty == 0 {
            // A new image: no row of the last one is valid.
            mapped_row = [usize::MAX; T_MAX];
        }
        for i in 0..t {
            let out = &mut rows_b[i * t * tw..(i + 1) * t * tw];
            let iy = (m * ty + i).wrapping_sub(1);
            if iy >= h {
                out.fill(0.0);
                continue;
            }
            let src: &[f32] = if mapped.is_empty() {
                &plane[iy * w..][..w]
            } else {
                let slot = iy % t;
                let row = &mut mapped[slot * w..(slot + 1) * w];
                if mapped_row[slot] != iy {
                    let sy = if map.upsample { iy / 2 } else { iy };
                    plane_map.row(&plane[sy * ws..][..ws], 0, row);
                    mapped_row[slot] = iy;
                }
                row
            };
            for (k, line) in phase.chunks_exact_mut(tw).enumerate() {
                for (tx, p) in line.iter_mut().enumerate() {
                    let x = (m * tx + k).wrapping_sub(1);
                    *p = if x < w { src[x] } else { 0.0 };
                }
            }
            let along = Lines {
                stride: tw,
                count: t,
            };
            map_lines(&phase, along, out, along, tw, W::input);
        }
        // Bᵀ (d B) down the columns: position (a, j) of V from entries (i, j) of the rows.
        let t0 = (r - rows.0) * tw;
        for j in 0..t {
            let src = Lines {
                stride: t * tw,
                count: t,
            };
            let out = Lines {
                stride: t * tiles,
                count: t,
            };
            map_lines(
                &rows_b[j * tw..],
                src,
                &mut dst[j * tiles + t0..],
                out,
                tw,
                W::input,
            );
        }
    }
}

/// See [`Transforms::output_tiles`].
#[inline(always)]
fn output_tiles<W: Minimal>(
    m: &[f32],
    grid: &Grid,
    co: usize,
    chunk: (usize, usize),
    own: (usize, usize),
    tail: &Tail,
    dst: &mut [f32],
) {
    let (t, mo) = (W::T, W::M);
    let (th, tw) = grid.tiles(mo);
    let (h, w) = (grid.h, grid.w);
    let tiles = (chunk.1 - chunk.0) * tw;
    // Aᵀ m down the columns: `cols[(a * t + j) * tw + tx]`.
    let mut cols = vec![0f32; mo * t * tw];
    // (Aᵀ m) A along one output row: `y[b * tw + tx]` is output column m tx + b.
    let mut y = vec![0f32; mo * tw];
    for r in own.0..own.1 {
        let ty = r % th;
        let t0 = (r - chunk.0) * tw;
        for j in 0..t {
            let src = Lines {
                stride: t * grid.cout * tiles,
                count: t,
            };
            let out = Lines {
                stride: t * tw,
                count: mo,
            };
            map_lines(
                &m[(j * grid.cout + co) * tiles + t0..],
                src,
                &mut cols[j * tw..],
                out,
                tw,
                W::output,
            );
        }
        for a in 0..mo {
            let oy = mo * ty + a;
            if oy >= h {
                break;
            }
            let src = Lines {
                stride: tw,
                count: t,
            };
            let out = Lines {
                stride: tw,
                count: mo,
            };
            map_lines(&cols[a * t * tw..], src, &mut y, out, tw, W::output);
            let row = &mut dst[oy * w..(oy + 1) * w];
            let res = tail.residual.map(|r| &r[oy * w..(oy + 1) * w]);
            for (x, v) in row.iter_mut().enumerate() {
                *v = y[(x % mo) * tw + x / mo] + tail.bias + res.map_or(0.0, |r| r[x]);
            }
        }
    }
}

/// `count` lines of a buffer, `stride` values apart.
#[derive(Clone, Copy)]
struct Lines {
    stride: usize,
    count: usize,
}

/// Values per block of [`map_lines`]: a few vector registers per line.
const BLOCK: usize = 16;

/// Applies a 1-D map across lines: `dst line o [x] = f(src line 0 [x], src line 1 [x], …)[o]`
/// for `x < len`. Blocks of [`BLOCK`] positions are copied to and from fixed-size arrays, so
/// the map itself runs on whole vectors.
#[inline(always)]
fn map_lines<const N: usize>(
    src: &[f32],
    src_lines: Lines,
    dst: &mut [f32],
    dst_lines: Lines,
    len: usize,
    f: impl Fn([f32; T_MAX]) -> [f32; N],
) {
    for x0 in (0..len).step_by(BLOCK) {
        let n = BLOCK.min(len - x0);
        let mut a = [[0f32; BLOCK]; T_MAX];
        for (k, a) in a.iter_mut().enumerate().take(src_lines.count) {
            let line = &src[k * src_lines.stride + x0..];
            // Whole blocks as fixed-size copies (vector moves): a slice copy of a run-time
            // length is a memcpy call, which cost 10% of a bf16 UNet call here.
            match line.first_chunk::<BLOCK>() {
                Some(block) if n == BLOCK => *a = *block,
                _ => copy_short(&mut a[..n], &line[..n]),
            }
        }
        let mut b = [[0f32; BLOCK]; N];
        for x in 0..BLOCK {
            let out = f(std::array::from_fn(|k| a[k][x]));
            for (b, v) in b.iter_mut().zip(out) {
                b[x] = v;
            }
        }
        for (o, b) in b.iter().enumerate().take(dst_lines.count) {
            let line = &mut dst[o * dst_lines.stride + x0..];
            match line.first_chunk_mut::<BLOCK>() {
                Some(block) if n == BLOCK => *block = *b,
                _ => copy_short(&mut line[..n], &b[..n]),
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the part-blocks of [`map_lines`] (fewer than [`BLOCK`]
/// values: the whole line on images of fewer than `BLOCK` tiles per row, e.g. 8 at 32² in
/// F(4x4, 3x3)) in fixed-size pieces: a copy of run-time length is a call to memcpy, which
/// took 10% of such a convolution.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    debug_assert!(dst.len() < BLOCK && src.len() == dst.len());
    // Pieces of 8, 4, 2 and 1 cover every length below 16.
    const { assert!(BLOCK <= 16) };
    // No loops: LLVM turns a copying loop back into a memcpy call.
    let n = dst.len();
    let mut i = 0;
    if n >= 8 {
        let to: &mut [f32; 8] = (&mut dst[..8]).try_into().expect("8 values");
        *to = src[..8].try_into().expect("8 values");
        i = 8;
    }
    if n - i >= 4 {
        let to: &mut [f32; 4] = (&mut dst[i..i + 4]).try_into().expect("4 values");
        *to = src[i..i + 4].try_into().expect("4 values");
        i += 4;
    }
    if n - i >= 2 {
        let to: &mut [f32; 2] = (&mut dst[i..i + 2]).try_into().expect("2 values");
        *to = src[i..i + 2].try_into().expect("2 values");
        i += 2;
    }
    if n > i {
        dst[i] = src[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Precision, Side};
    use crate::tensor::with_f32;
    use crate::test_util::{rand, rel_l2};
    use candle_core::{DType, Device, Tensor};

    /// `wt` `[cout, cin, 3, 3]` packed as the left operand of `precision` products.
    fn packed_weights(wt: &Tensor, precision: Precision) -> PackedMatrix {
        let (cout, cin) = (wt.dims()[0], wt.dims()[1]);
        with_f32("test", wt, |d| {
            PackedMatrix::pack(Strided::rows(d, cout, cin * 9), Side::Left, precision)
        })
        .unwrap()
    }

    /// A GroupNorm-like affine map with SiLU and 2x upsampling, for `b` images of `cin`
    /// channels.
    fn norm_silu_upsample(b: usize, cin: usize) -> InputMap {
        InputMap {
            affine: Some(crate::ChannelAffine {
                scale: (0..b * cin).map(|i| 0.5 + 0.01 * (i % 50) as f32).collect(),
                shift: (0..b * cin).map(|i| 0.02 * (i % 9) as f32 - 0.1).collect(),
            }),
            silu: true,
            upsample: true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        plan: Plan,
        b: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        precision: Precision,
        seed: u64,
    ) {
        let x = rand(&[b, cin, h, w], seed);
        let wt = rand(&[cout, cin, 3, 3], seed + 1);
        let bias = rand(&[b, cout], seed + 2);
        let res = rand(&[b, cout, h, w], seed + 3);
        // bf16 weights are rounded when packed: the reference convolves the rounded values.
        let stored = match precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        };
        let wt_as_packed = wt.to_dtype(stored).unwrap().to_dtype(DType::F32).unwrap();
        let want = x
            .conv2d(&wt_as_packed, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
            .unwrap()
            .add(&res)
            .unwrap();
        let packed = packed_weights(&wt, precision);
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
        conv3x3(
            plan,
            None,
            &packed,
            DepthOrder::ChannelMajor,
            grid,
            &xs,
            &InputMap::identity(),
            Some(&bs),
            Some(&rs),
            &mut out,
        );
        let got = Tensor::from_vec(out, (b, cout, h, w), &Device::Cpu).unwrap();
        let bound = match (plan.products, plan.variant) {
            (Precision::F32, Variant::F2) => 1e-6,
            (Precision::F32, Variant::F4) => 2e-6,
            (Precision::Bf16, Variant::F2) => 1e-2,
            (Precision::Bf16, Variant::F4) => 3e-2,
        };
        let e = rel_l2(&got, &want);
        assert!(
            e < bound,
            "{plan:?} b{b} {cin}->{cout} {h}x{w} {precision:?} weights: rel L2 {e}"
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
            (1, 24, 32, 13, 7),
        ];
        for (i, &(b, cin, cout, h, w)) in cases.iter().enumerate() {
            for precision in [Precision::F32, Precision::Bf16] {
                for variant in [Variant::F2, Variant::F4] {
                    let plan = Plan::forced(variant, precision);
                    run(plan, b, cin, cout, h, w, precision, 100 + 10 * i as u64);
                }
                // What `Plan::auto` picks off the AMX tiles for bf16 weights: f32 products
                // from the bf16 weights, as exact as f32 weights.
                let plan = Plan {
                    variant: Variant::F4,
                    products: Precision::F32,
                };
                run(plan, b, cin, cout, h, w, precision, 100 + 10 * i as u64);
            }
        }
    }

    #[test]
    fn chunks_of_tiles_cross_image_boundaries_correctly() {
        // 16 * 512 channels * 33 tiles per row = 270k floats per tile row: 31 rows per chunk,
        // so chunks end inside images (th = 33 per image).
        let f32_plan = |variant| Plan::forced(variant, Precision::F32);
        run(f32_plan(Variant::F2), 2, 512, 16, 66, 66, Precision::F32, 7);
        // F(4x4, 3x3): 17 tile rows per image, 16 * 36 * 512 * 17 values per tile row.
        run(f32_plan(Variant::F4), 2, 512, 16, 66, 66, Precision::F32, 7);
    }

    #[test]
    fn wide_convolutions_make_their_filters_in_parts() {
        // f32 F(4x4), 2048 inputs: 8 KiB per line of each position's matrix, at least 256
        // lines (2 MiB) per part: 540 outputs in parts of 280 and 260 (the second ends off a
        // panel). bf16 F(2x2), 2048 inputs: 4 KiB per line, at least 512 lines: 1100 outputs
        // in parts of 560 and 540; with 1024 inputs, 1040 outputs in one part, 2100 in two.
        assert_eq!(filter_part(1024 * 2, 1040), 1040);
        assert_eq!(filter_part(1024 * 2, 2100), 1050);
        assert_eq!(filter_part(1280 * 4, 1280), 434);
        let cases = [
            (Variant::F4, Precision::F32, 2048, 540, 4, 280),
            (Variant::F2, Precision::Bf16, 2048, 1100, 2, 560),
        ];
        for (variant, precision, cin, cout, value_bytes, part) in cases {
            assert_eq!(filter_part(cin * value_bytes, cout), part);
            let plan = Plan::forced(variant, precision);
            run(plan, 1, cin, cout, 4, 6, precision, 9);
        }
        // Small filters stay whole.
        assert_eq!(filter_part(320 * 4, 320), 320);
    }

    #[test]
    fn mapped_rows_are_reused_only_within_an_image_and_chunk() {
        // The same geometry through a GroupNorm + SiLU + upsampling map (source 33 x 33):
        // equal to the convolution of the mapped image.
        let (b, cin, cout, hs, ws) = (2, 512, 16, 33, 33);
        let x = rand(&[b, cin, hs, ws], 17);
        let map = norm_silu_upsample(b, cin);
        let mapped = map.apply(&x).unwrap();
        let wt = rand(&[cout, cin, 3, 3], 18);
        for variant in [Variant::F2, Variant::F4] {
            let packed = packed_weights(&wt, Precision::F32);
            let grid = Grid {
                batch: b,
                cin,
                cout,
                h: 2 * hs,
                w: 2 * ws,
            };
            let identity = InputMap::identity();
            let conv = |input: &Tensor, map: &InputMap| {
                let mut out = vec![0f32; b * cout * 4 * hs * ws];
                let xs = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                conv3x3(
                    Plan::forced(variant, Precision::F32),
                    None,
                    &packed,
                    DepthOrder::ChannelMajor,
                    grid,
                    &xs,
                    map,
                    None,
                    None,
                    &mut out,
                );
                out
            };
            assert_eq!(conv(&x, &map), conv(&mapped, &identity), "{variant:?}");
        }
    }

    #[test]
    fn bf16_pairs_of_v_give_the_products_of_f32_rows_bit_for_bit() {
        if VLayout::of(Precision::Bf16, 64) != VLayout::Bf16Pairs {
            eprintln!("skipped: no bf16 dot-product kernel on this CPU");
            return;
        }
        // Odd channel counts (a zero channel completes the last pair), tiles that end off a
        // panel of 32, one tile, several chunks of tiles (2 x 512 channels x 66²: 16 * 512 *
        // 33 values per tile row in F(2x2), 31 rows per chunk, so chunks end inside images),
        // and a mapped input (GroupNorm + SiLU + upsampling, read as the transform goes).
        let cases = [
            (2, 64, 48, 16, 16, false),
            (1, 33, 20, 9, 13, false),
            (1, 7, 16, 1, 1, false),
            (2, 512, 16, 66, 66, false),
            (2, 96, 40, 18, 14, true),
        ];
        for (i, &(b, cin, cout, h, w, mapped)) in cases.iter().enumerate() {
            let seed = 300 + 10 * i as u64;
            let (hs, ws) = if mapped { (h / 2, w / 2) } else { (h, w) };
            let x = rand(&[b, cin, hs, ws], seed);
            let wt = rand(&[cout, cin, 3, 3], seed + 1);
            let bias = rand(&[b, cout], seed + 2)
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let map = match mapped {
                false => InputMap::identity(),
                true => norm_silu_upsample(b, cin),
            };
            let packed = packed_weights(&wt, Precision::Bf16);
            let grid = Grid {
                batch: b,
                cin,
                cout,
                h,
                w,
            };
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for variant in [Variant::F2, Variant::F4] {
                let conv = |layout| {
                    let mut out = vec![0f32; b * cout * h * w];
                    conv3x3(
                        Plan::forced(variant, Precision::Bf16),
                        Some(layout),
                        &packed,
                        DepthOrder::ChannelMajor,
                        grid,
                        &xs,
                        &map,
                        Some(&bias),
                        None,
                        &mut out,
                    );
                    out
                };
                let (rows, pairs) = (conv(VLayout::Rows), conv(VLayout::Bf16Pairs));
                assert!(rows.iter().all(|v| v.is_finite()));
                let same = rows
                    .iter()
                    .zip(&pairs)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{variant:?} b{b} {cin}->{cout} {h}x{w} mapped {mapped}"
                );
            }
        }
    }
}
