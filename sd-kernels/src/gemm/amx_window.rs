//! 3x3 "same" convolution on AMX tiles with no patch matrix: the input is copied once into a
//! zero-padded bf16 image whose channels are interleaved in pairs, and every B tile of the
//! product is read straight out of it.
//!
//! A B tile of the tile product is 16 rows of 16 bf16 pairs: row r holds input channels
//! (2r, 2r + 1) at 16 consecutive pixels. In the padded image `[Cin/2, H+2, W+2, 2]` the 16
//! pairs a tap (ky, kx) needs for output pixels (oy, ox..ox+16) are the 64 contiguous bytes at
//! (oy + ky, ox + kx) of one channel-pair plane, and the next row of the tile is the same
//! place one plane further on: the tile loads with the plane size as its row stride. (Images
//! whose width is not a multiple of 16 get three copies instead, one per kx, each shifted by
//! kx - 1 columns with no side padding: then any 16 consecutive pixels in raster order are
//! contiguous, rows and all; see [`Layout`].) So the
//! product runs over k = (tap, channel) with no packing at all, where the general path packed
//! (and converted) 9 Cin values per output pixel per call (about 40% of a bf16 conv's time).
//!
//! The weights must then run over k in (tap, channel) order (`conv::DepthOrder::TapMajor`,
//! chosen when the layer is packed): the AMX packing of A, 32 k by 32 lines per step, is then
//! already one tap of 32 channels per step, and the A tiles load from it as they are.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::amx::{configure_thread, store_accumulators, tile_step, zero_accumulators};
use super::avx512::{interleave_bf16, store};
use super::kernel::{bf16_bits, Tile};
use super::{KernelId, PackedMatrix};
use crate::cpu::Isa;
use crate::input_map::{map_row, InputMap};

/// Output pixels per image below which the general path runs. Paired against it (2 images,
/// bf16): 1280 ch 16² 1.38x, 2560->1280 16² 1.40x, 1280 ch 8² 1.16x, 2560->1280 8² 1.04x,
/// 640 ch 24² 1.19x, 1280 ch 12² 1.01x; 4² (16 pixels) stays general.
pub(crate) const MIN_PIXELS: usize = 64;

/// Output pixels a task takes (eight rows of a 64-wide image): the weights are read once per
/// task. Paired runs against 128: 1.13-1.38x (with the passes below); 1024 and 256 were
/// slower.
const PIXELS_PER_TASK: usize = 512;

/// 32-channel blocks of input per pass over a task's tiles: the weights of one panel of
/// output channels for them (74 KiB) and the task's input rows in them (170 KiB at 64 wide)
/// stay in L2 while the panel's tiles run; later passes add to the output. 4 against 8:
/// 1.15x at 640-1920 channels 32², even at 64²; 2 about as 4.
const BLOCKS_PER_PASS: usize = 4;

/// Whether a 3x3, stride 1, padding 1 convolution of `cin` channels with (tap, channel)
/// ordered weights packed as `weight`, on `h x w` images, runs here: weights packed for AMX,
/// whole 32-channel blocks, whole 16-pixel halves of tiles per image, and enough pixels.
pub(crate) fn applies(weight: &PackedMatrix, cin: usize, h: usize, w: usize) -> bool {
    weight.kernel == KernelId::Amx
        && Isa::active() == Isa::Amx
        && cin.is_multiple_of(32)
        && (h * w).is_multiple_of(16)
        && h * w >= MIN_PIXELS
}

/// How the padded copy of the input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `[B, Cin/2, H+2, W+2, 2]`, for rows of whole 16-pixel halves (W a multiple of 16).
    Padded,
    /// `[B, 3, Cin/2, H+2, W, 2]`: copy kx holds the input shifted by kx - 1 columns (zeros past
    /// the edges), so any 16 consecutive pixels in raster order are contiguous (any W, at
    /// three times the copy).
    Shifted,
}

impl Layout {
    fn of(w: usize) -> Self {
        if w.is_multiple_of(16) {
            Layout::Padded
        } else {
            Layout::Shifted
        }
    }
}

/// One convolution's operands, shared by its tasks.
struct Window<'a> {
    /// Padded pair-interleaved input, bf16 bits, laid out as `layout` says.
    image: &'a [u16],
    layout: Layout,
    /// Weights as packed for AMX: by 32-line panel of output channels, then (tap, 32-channel
    /// block) step, then 32 lines of 32 channels, bf16 bits.
    weights: &'a [u16],
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl Window<'_> {
    fn blocks(&self) -> usize {
        self.cin / 32
    }

    /// u16 values in one channel-pair plane of the padded image.
    fn plane(&self) -> usize {
        plane_len(self.layout, self.h, self.w)
    }

    /// u16 values per image of the padded copy.
    fn image_len(&self) -> usize {
        copies(self.layout) * (self.cin / 2) * self.plane()
    }

    /// Where the 16 pixels from `p` (raster order) read tap (ky, kx) in an image's first
    /// channel-pair plane.
    fn segment(&self, p: usize, ky: usize, kx: usize) -> usize {
        match self.layout {
            Layout::Padded => {
                let (oy, ox) = (p / self.w, p % self.w);
                ((oy + ky) * (self.w + 2) + ox + kx) * 2
            }
            Layout::Shifted => kx * (self.cin / 2) * self.plane() + (p + ky * self.w) * 2,
        }
    }

    /// The 32 x 32 output tile for channels `32 panel..` and pixels `p0..p0 + 32` of image
    /// `i`, summed over the input channel blocks `blocks`, into `acc` (row = output channel,
    /// column = pixel).
    ///
    /// # Safety
    /// AMX is usable on this thread; indices are in range.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(
        &self,
        i: usize,
        panel: usize,
        p0: usize,
        range: std::ops::Range<usize>,
        acc: &mut [[__m512; 2]; 32],
    ) {
        configure_thread();
        zero_accumulators();
        let (plane, blocks) = (self.plane(), self.blocks());
        let image = self.image.as_ptr().add(i * self.image_len());
        let weights = self.weights.as_ptr().add(panel * 9 * blocks * 1024);
        // The tile's two 16-pixel halves (the second repeats the first past the last pixel;
        // those columns are not stored).
        let p1 = if p0 + 16 < self.h * self.w {
            p0 + 16
        } else {
            p0
        };
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let halves = [
                image.add(self.segment(p0, ky, kx)),
                image.add(self.segment(p1, ky, kx)),
            ];
            for blk in range.clone() {
                let a = weights.add((tap * blocks + blk) * 1024);
                let off = blk * 16 * plane;
                tile_step(
                    [a, a.add(16 * 32)],
                    64,
                    [halves[0].add(off), halves[1].add(off)],
                    2 * plane,
                );
            }
        }
        store_accumulators(acc.as_mut_ptr().cast::<f32>(), 32);
    }
}

/// `out[i] = conv(map(x[i])) + bias_i (+ residual[i])` for `b` source images in `x` whose
/// mapped size is `h x w` (`map`: a GroupNorm's affine map, SiLU, upsampling, applied as the
/// padded copy is made), output `[b, cout, h, w]`; `bias` holds `cout` values per image (or
/// one row for all).
///
/// # Panics
/// When [`applies`] does not hold or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    weight: &PackedMatrix,
    x: &[f32],
    map: &InputMap,
    (b, cin, h, w): (usize, usize, usize, usize),
    bias: Option<&[f32]>,
    bias_per_image: bool,
    residual: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(
        applies(weight, cin, h, w),
        "amx_window: unsupported convolution"
    );
    let cout = weight.lines();
    assert_eq!(weight.depth(), cin * 9, "amx_window: weights are not 3x3");
    let pixels = h * w;
    let (hs, ws) = map
        .source_size(h, w)
        .expect("amx_window: an upsampled size is even");
    assert!(x.len() >= b * cin * hs * ws && out.len() >= b * cout * pixels);
    let layout = Layout::of(w);
    let image = padded_pairs(layout, x, map, b, cin, h, w);
    let weights: &[u16] = weight.data.buf.slice(weight.data.len);
    let win = Window {
        image: &image,
        layout,
        weights,
        cin,
        cout,
        h,
        w,
    };
    let out = OutPtr(out.as_mut_ptr().cast::<f32>());
    let tasks: Vec<(usize, usize)> = (0..b)
        .flat_map(|i| (0..pixels).step_by(PIXELS_PER_TASK).map(move |p| (i, p)))
        .collect();
    let job = Job {
        win: &win,
        bias,
        bias_per_image,
        residual,
        out,
    };
    tasks.into_par_iter().for_each(|(i, p_start)| {
        let p_end = (p_start + PIXELS_PER_TASK).min(pixels);
        // SAFETY: AMX was detected (`applies`); the tasks' pixel ranges are disjoint and
        // inside the images and the output, whose slices were checked above.
        unsafe { job.run(i, p_start..p_end) }
    });
}

/// What every task of one convolution reads and writes.
struct Job<'a> {
    win: &'a Window<'a>,
    bias: Option<&'a [f32]>,
    bias_per_image: bool,
    residual: Option<&'a [f32]>,
    out: OutPtr,
}

impl Job<'_> {
    /// Every output channel of image `i` at `pixels` (32-pixel tiles; the image's last may be
    /// 16).
    ///
    /// # Safety
    /// AMX is usable; the range lies in the image; no other task writes it.
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, i: usize, pixels: std::ops::Range<usize>) {
        let win = self.win;
        let (cout, plane_px) = (win.cout, win.h * win.w);
        let mut acc = [[_mm512_setzero_ps(); 2]; 32];
        let blocks = win.blocks();
        for b0 in (0..blocks).step_by(BLOCKS_PER_PASS) {
            let range = b0..(b0 + BLOCKS_PER_PASS).min(blocks);
            for panel in 0..cout.div_ceil(32) {
                let co0 = panel * 32;
                let bias_row = self.bias.map_or(std::ptr::null(), |v| {
                    let row = if self.bias_per_image { i * cout } else { 0 };
                    v[row + co0..].as_ptr()
                });
                for p0 in pixels.clone().step_by(32) {
                    let at = (i * cout + co0) * plane_px + p0;
                    let tile = Tile {
                        c: self.out.0.add(at),
                        ldc: plane_px,
                        rows: 32.min(cout - co0),
                        cols: 32.min(plane_px - p0),
                        first: b0 == 0,
                        bias_row,
                        bias_col: std::ptr::null(),
                        residual: self.residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
                        ld_residual: plane_px,
                        fresh_a: false,
                        fresh_b: false,
                    };
                    win.tile(i, panel, p0, range.clone(), &mut acc);
                    store(&acc, &tile);
                }
            }
        }
    }
}

/// A raw output pointer shared by the tasks; each writes its own pixels.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// u16 values in one channel-pair plane of the padded copy.
fn plane_len(layout: Layout, h: usize, w: usize) -> usize {
    match layout {
        Layout::Padded => (h + 2) * (w + 2) * 2,
        Layout::Shifted => (h + 2) * w * 2,
    }
}

/// Copies of the input per image.
fn copies(layout: Layout) -> usize {
    match layout {
        Layout::Padded => 1,
        Layout::Shifted => 3,
    }
}

/// The padded copy (see [`Layout`]) of the mapped `h x w` images, bf16 bits: channel pairs
/// interleaved, zeros around.
fn padded_pairs(
    layout: Layout,
    x: &[f32],
    map: &InputMap,
    b: usize,
    cin: usize,
    h: usize,
    w: usize,
) -> Vec<u16> {
    let plane = plane_len(layout, h, w);
    let (pairs, copies) = (cin / 2, copies(layout));
    let (hs, ws) = map.source_size(h, w).expect("checked by the caller");
    let mut image = vec![0u16; b * copies * pairs * plane];
    image.par_chunks_mut(plane).enumerate().for_each_init(
        || vec![0f32; 2 * w],
        |rows, (n, dst)| {
            let (i, kx, cp) = (n / (copies * pairs), (n / pairs) % copies, n % pairs);
            let (c0, c1) = (2 * cp, 2 * cp + 1);
            let source = |c: usize, sy: usize| {
                let at = ((i * cin + c) * hs + sy) * ws;
                &x[at..at + ws]
            };
            let maps = [map.plane(i, c0, cin), map.plane(i, c1, cin)];
            for y in 0..h {
                let sy = if map.upsample { y / 2 } else { y };
                let (r0, r1) = if map.is_identity() {
                    (source(c0, sy), source(c1, sy))
                } else {
                    let (m0, m1) = rows.split_at_mut(w);
                    map_row(source(c0, sy), maps[0], m0);
                    map_row(source(c1, sy), maps[1], m1);
                    (&*m0, &*m1)
                };
                match layout {
                    Layout::Padded => {
                        let d = &mut dst[((y + 1) * (w + 2) + 1) * 2..][..2 * w];
                        // SAFETY: AVX-512 BF16 comes with AMX (`applies`); w is a multiple
                        // of 16; both rows hold w values and `d` 2 w.
                        unsafe { interleave_bf16(r0.as_ptr(), r1.as_ptr(), w, d.as_mut_ptr()) };
                    }
                    Layout::Shifted => {
                        // Column x of copy kx is source column x + kx - 1.
                        let d = &mut dst[(y + 1) * w * 2..][..2 * w];
                        for (x, pair) in d.chunks_exact_mut(2).enumerate() {
                            let Some(sx) = (x + kx).checked_sub(1).filter(|&sx| sx < w) else {
                                continue;
                            };
                            pair[0] = bf16_bits(r0[sx]);
                            pair[1] = bf16_bits(r1[sx]);
                        }
                    }
                }
            }
        },
    );
    image
}
