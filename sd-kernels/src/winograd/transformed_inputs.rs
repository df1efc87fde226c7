//! V, the transformed input tiles of one chunk, stored the way the products read it: f32
//! rows that each product packs, or, for bf16 products on the dot-product kernel, that
//! kernel's packed pairs, written once by the input transform and read in place.

use rayon::prelude::*;

use super::{Grid, Minimal, Transforms};
use crate::gemm::{
    self, AlignedBuf, MatOperand, NoSource, Precision, RightOperand, Strided, BF16_PAIR_PANEL,
};
use crate::input_map::InputMap;

/// How V is stored for the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VLayout {
    /// f32, `[cin][T²][tiles]`, packed by each product (any kernel).
    Rows,
    /// For each position, the bf16 dot-product kernel's packed right operand
    /// ([`RightOperand::Bf16Pairs`]: panels of 32 tiles, pairs of channels): half the bytes of
    /// f32 rows and no packing pass (packing the rows was ~2.5% of a bf16 512² UNet call).
    Bf16Pairs,
}

impl VLayout {
    /// [`VLayout::Bf16Pairs`] for bf16 products on the bf16 dot-product kernel, else rows.
    pub(super) fn of(products: Precision, cin: usize) -> Self {
        if products == Precision::Bf16 && gemm::runs_on_avx512_panels(Precision::Bf16, cin) {
            VLayout::Bf16Pairs
        } else {
            VLayout::Rows
        }
    }
}

/// The storage of V for the chunks of one convolution (sized for the largest chunk).
pub(super) struct TransformedInputs {
    layout: VLayout,
    positions: usize,
    cin: usize,
    max_tiles: usize,
    /// f32 rows, or bf16 pairs as u16 (see [`VLayout`]).
    values: AlignedBuf,
}

/// V of one chunk, as [`TransformedInputs::transform`] wrote it.
pub(super) enum ChunkV<'a> {
    /// `data[(ci * T² + e) * tiles + t]`.
    Rows {
        data: &'a [f32],
        positions: usize,
        tiles: usize,
        cin: usize,
    },
    /// Position e's panels at `data[e * stride..]`.
    Pairs {
        data: &'a [u16],
        stride: usize,
        tiles: usize,
        cin: usize,
    },
}

impl TransformedInputs {
    /// Room for chunks of up to `max_tiles` tiles of `cin` channels, `positions` = T² each.
    pub(super) fn new(layout: VLayout, positions: usize, cin: usize, max_tiles: usize) -> Self {
        let mut v = TransformedInputs {
            layout,
            positions,
            cin,
            max_tiles,
            values: AlignedBuf::new(),
        };
        // SAFETY: each chunk's transform writes all of the values its products read. Not
        // zeroed: a block the allocator reuses would be cleared for nothing (up to 32 MiB a
        // convolution).
        v.values = unsafe {
            match layout {
                VLayout::Rows => AlignedBuf::unwritten::<f32>(positions * cin * max_tiles),
                VLayout::Bf16Pairs => {
                    AlignedBuf::unwritten::<u16>(positions * v.pair_stride(max_tiles))
                }
            }
        };
        v
    }

    /// Values of one position's panels for `tiles` tiles.
    fn pair_stride(&self, tiles: usize) -> usize {
        tiles.div_ceil(BF16_PAIR_PANEL) * self.cin.div_ceil(2) * 2 * BF16_PAIR_PANEL
    }

    /// V of tile rows `rows.0..rows.1` (`tiles` tiles) of the image that `map` reads from
    /// `input`, all channels on all threads.
    pub(super) fn transform<W: Minimal + Transforms>(
        &mut self,
        input: &[f32],
        map: &InputMap,
        grid: &Grid,
        rows: (usize, usize),
        tiles: usize,
    ) -> ChunkV<'_> {
        let (positions, cin) = (self.positions, self.cin);
        assert!(
            tiles <= self.max_tiles,
            "winograd: chunk larger than its storage"
        );
        match self.layout {
            VLayout::Rows => {
                let v = self.values.slice_mut::<f32>(positions * cin * tiles);
                v.par_chunks_mut(positions * tiles)
                    .enumerate()
                    .for_each(|(ci, dst)| W::input_tiles(input, map, grid, ci, rows, dst));
                ChunkV::Rows {
                    data: v,
                    positions,
                    tiles,
                    cin,
                }
            }
            VLayout::Bf16Pairs => {
                let stride = self.pair_stride(tiles);
                let groups = cin.div_ceil(2);
                let max_tiles = self.max_tiles;
                let pairs = self.values.slice_mut::<u16>(positions * stride);
                let dst = SharedOut(pairs.as_mut_ptr());
                // Channels 2g and 2g + 1 as f32 rows in scratch, then as group g of every
                // position's panels.
                (0..groups).into_par_iter().for_each_init(
                    || vec![0f32; 2 * positions * max_tiles],
                    |scratch, g| {
                        let (a, b) = scratch.split_at_mut(positions * max_tiles);
                        let (a, b) = (&mut a[..positions * tiles], &mut b[..positions * tiles]);
                        W::input_tiles(input, map, grid, 2 * g, rows, a);
                        if 2 * g + 1 < cin {
                            W::input_tiles(input, map, grid, 2 * g + 1, rows, b);
                        } else {
                            b.fill(0.0);
                        }
                        for (e, (a, b)) in a.chunks(tiles).zip(b.chunks(tiles)).enumerate() {
                            dst.write_group(a, b, e * stride + g * 2 * BF16_PAIR_PANEL, groups);
                        }
                    },
                );
                ChunkV::Pairs {
                    data: pairs,
                    stride,
                    tiles,
                    cin,
                }
            }
        }
    }
}

impl ChunkV<'_> {
    /// The right operand of position `e`'s product (`tiles x cin`).
    pub(super) fn position(&self, e: usize) -> RightOperand<'_, NoSource> {
        match *self {
            ChunkV::Rows {
                data,
                positions,
                tiles,
                cin,
            } => RightOperand::Mat(MatOperand::Strided(Strided {
                data: &data[e * tiles..],
                lines: tiles,
                depth: cin,
                line_stride: 1,
                depth_stride: positions * tiles,
            })),
            ChunkV::Pairs {
                data,
                stride,
                tiles,
                cin,
            } => RightOperand::Bf16Pairs {
                data: &data[e * stride..(e + 1) * stride],
                lines: tiles,
                depth: cin,
            },
        }
    }
}

/// The pair panels of a chunk, written by the tasks of a parallel loop, each its own groups.
#[derive(Clone, Copy)]
struct SharedOut(*mut u16);
// SAFETY: each task writes only its own group of every panel (see `write_group`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Writes depth rows `a`, `b` (one position's values of a channel pair) as the group at
    /// `at` of each of that position's panels, panels `groups` groups apart.
    fn write_group(self, a: &[f32], b: &[f32], at: usize, groups: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `VLayout::Bf16Pairs` is chosen only for the bf16 dot-product kernel (the
        // CPU has AVX-512 BF16); `transform` sized the buffer for every group of every panel,
        // and each task writes the groups of its own channel pair only.
        unsafe {
            gemm::avx512::pair_rows_into_panels(a, b, self.0.add(at), groups * 2 * BF16_PAIR_PANEL)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no bf16 dot-product kernel: {} {} {at} {groups}",
            a.len(),
            b.len()
        );
    }
}
