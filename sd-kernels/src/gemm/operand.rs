//! The operands of a product, as the driver sees them: a set of "lines" (rows of A, columns
//! of B), each `depth` long, delivered as packed panels of `W` lines for a block of depth —
//! either from panels packed once ([`Prepacked`], weights) or packed on the fly into scratch
//! (strided matrices, convolution patches).

use super::buffer::AlignedBuf;
use super::kernel::{is_type, PackElem};

/// A block of panels: panel `p` starts at `ptr + p * panel_stride`; `row_stride` 0 means
/// packed panels, else rows read in place at that distance (direct A).
#[derive(Clone, Copy)]
pub(crate) struct Panels<E> {
    pub ptr: *const E,
    pub panel_stride: usize,
    pub row_stride: usize,
}

/// Something the driver can read panels from.
pub(crate) trait Operand<E: PackElem>: Sync {
    /// Panels for lines `[l0, l0 + nl)` (l0 a multiple of `w`) and depth `[k0, k0 + kc)`
    /// (k0 a multiple of `kp`), zero-padded to whole panels and groups.
    ///
    /// # Safety
    /// The ranges must lie inside the operand; the result is valid until `scratch` is reused.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels(
        &self,
        l0: usize,
        nl: usize,
        k0: usize,
        kc: usize,
        w: usize,
        kp: usize,
        scratch: &mut AlignedBuf,
    ) -> Panels<E>;

    /// Whether panels come without packing work (then the driver splits the other operand).
    fn is_prepacked(&self) -> bool {
        false
    }
}

/// Lines whose values the operand computes one depth row at a time: `row(k, l0, out)` writes
/// the values of lines `l0..l0 + out.len()` at depth `k` (used for B operands, where a row of
/// depth is contiguous across lines, and for convolution patches).
pub(crate) trait DepthRows: Sync {
    /// Writes `out[i] = value(line l0 + i, depth k)`.
    fn row(&self, k: usize, l0: usize, out: &mut [f32]);

    /// The values of lines `l0..l0 + len` at depth `k` where they lie contiguously in memory,
    /// so packing can read them in place; `None` (the default) when they must be computed.
    fn contiguous(&self, _k: usize, _l0: usize, _len: usize) -> Option<&[f32]> {
        None
    }

    /// One f32 panel: for each depth `k0 + g` (g < groups), `panel[g * w + i]` = value of line
    /// `l0 + i` for `i < lines`, zero for `lines <= i < w`. Sources override it to share the
    /// work of locating the lines across depths.
    fn panel(&self, k0: usize, l0: usize, lines: usize, w: usize, panel: &mut [f32]) {
        panel_by_rows(self, k0, l0, lines, w, panel)
    }
}

/// The default [`DepthRows::panel`]: one [`DepthRows::row`] per depth.
fn panel_by_rows<S: DepthRows + ?Sized>(
    src: &S,
    k0: usize,
    l0: usize,
    lines: usize,
    w: usize,
    panel: &mut [f32],
) {
    for (k, group) in panel.chunks_exact_mut(w).enumerate() {
        src.row(k0 + k, l0, &mut group[..lines]);
        group[lines..].fill(0.0);
    }
}

impl<T: DepthRows> DepthRows for &T {
    fn row(&self, k: usize, l0: usize, out: &mut [f32]) {
        (**self).row(k, l0, out)
    }

    fn contiguous(&self, k: usize, l0: usize, len: usize) -> Option<&[f32]> {
        (**self).contiguous(k, l0, len)
    }

    fn panel(&self, k0: usize, l0: usize, lines: usize, w: usize, panel: &mut [f32]) {
        (**self).panel(k0, l0, lines, w, panel)
    }
}

/// Packs `nl` lines from `src` as panels of width `w`, each value through `E::from_f32`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_by_rows<E: PackElem, S: DepthRows>(
    src: &S,
    l0: usize,
    nl: usize,
    k0: usize,
    kc: usize,
    w: usize,
    kp: usize,
    scratch: &mut AlignedBuf,
) -> Panels<E> {
    let groups = kc.div_ceil(kp);
    let panel_stride = groups * w * kp;
    let npanels = nl.div_ceil(w);
    let dst = scratch.get::<E>(npanels * panel_stride);
    let mut rows = vec![0f32; w * kp];
    let fast_bf16 =
        kp == 2 && w.is_multiple_of(16) && crate::cpu::Isa::supported().has_bf16_instructions();
    let direct_f32 = kp == 1 && is_type::<E, f32>();
    // A source whose values are computed (convolution patches) fills a whole f32 panel at once,
    // locating each line once for all depths; pairs of its rows are then interleaved.
    let mut computed = Vec::new();
    for p in 0..npanels {
        let lines = w.min(nl - p * w);
        let panel = &mut dst[p * panel_stride..(p + 1) * panel_stride];
        if fast_bf16 && src.contiguous(k0, l0 + p * w, lines).is_none() {
            computed.resize(groups * kp * w, 0f32);
            src.panel(k0, l0 + p * w, lines, w, &mut computed[..kc * w]);
            computed[kc * w..].fill(0.0);
            for (g, group) in panel.chunks_exact_mut(kp * w).enumerate() {
                let rows = computed[g * kp * w..].as_ptr();
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512 BF16 (checked); each group of `computed` holds
                // two rows of w values, `group` 2 w; E is u16 whenever kp == 2.
                unsafe {
                    super::avx512::interleave_bf16(rows, rows.add(w), w, group.as_mut_ptr().cast())
                };
            }
            continue;
        }
        if direct_f32 {
            // SAFETY: E is f32 (checked by TypeId): rows are written straight into the panel.
            let panel: &mut [f32] =
                unsafe { std::slice::from_raw_parts_mut(panel.as_mut_ptr().cast(), panel.len()) };
            src.panel(k0, l0 + p * w, lines, w, panel);
            continue;
        }
        for g in 0..groups {
            let group = &mut panel[g * w * kp..(g + 1) * w * kp];
            if fast_bf16 && lines == w && g * kp + 1 < kc {
                let (k, l) = (k0 + g * kp, l0 + p * w);
                if let (Some(r0), Some(r1)) = (src.contiguous(k, l, w), src.contiguous(k + 1, l, w))
                {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as below; both rows hold w values, read in place (no copy
                    // through `rows`, whose memcpy calls cost 14% of a bf16 UNet call).
                    unsafe {
                        super::avx512::interleave_bf16(
                            r0.as_ptr(),
                            r1.as_ptr(),
                            w,
                            group.as_mut_ptr().cast(),
                        )
                    };
                    continue;
                }
            }
            for (q, row) in rows.chunks_exact_mut(w).enumerate() {
                let k = g * kp + q;
                if k < kc {
                    src.row(k0 + k, l0 + p * w, &mut row[..lines]);
                    row[lines..].fill(0.0);
                } else {
                    row.fill(0.0);
                }
            }
            if fast_bf16 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512 BF16 (checked), rows hold 2 w values, group 2 w;
                // E is u16 whenever kp == 2.
                unsafe {
                    super::avx512::interleave_bf16(
                        rows.as_ptr(),
                        rows.as_ptr().add(w),
                        w,
                        group.as_mut_ptr().cast(),
                    )
                };
                continue;
            }
            for l in 0..w {
                for q in 0..kp {
                    group[l * kp + q] = E::from_f32(rows[q * w + l]);
                }
            }
        }
    }
    Panels {
        ptr: dst.as_ptr(),
        panel_stride,
        row_stride: 0,
    }
}

/// A plain matrix view: value (line l, depth k) is `data[l * line_stride + k * depth_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Number of lines.
    pub lines: usize,
    /// Length of each line.
    pub depth: usize,
    /// Step between lines.
    pub line_stride: usize,
    /// Step along a line.
    pub depth_stride: usize,
}

impl<'a> Strided<'a> {
    /// A row-major `[rows, cols]` matrix read as the left operand (lines = rows).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            lines: rows,
            depth: cols,
            line_stride: cols,
            depth_stride: 1,
        }
    }

    /// A row-major `[rows, cols]` matrix read as the right operand (lines = columns).
    pub fn cols(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            lines: cols,
            depth: rows,
            line_stride: 1,
            depth_stride: cols,
        }
    }

    /// Whether every index this view can form lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        if self.lines == 0 || self.depth == 0 {
            return true;
        }
        let last = (self.lines - 1) * self.line_stride + (self.depth - 1) * self.depth_stride;
        last < self.data.len()
    }
}

impl Strided<'_> {
    /// A full panel of `W` contiguous lines: one fixed-size copy per depth, which compiles to a
    /// few vector moves (a `memmove` call per 16 values cost 8% of a 512² UNet call).
    fn full_panel<const W: usize>(&self, k0: usize, l0: usize, panel: &mut [f32]) {
        let (groups, _) = panel.as_chunks_mut::<W>();
        for (g, dst) in groups.iter_mut().enumerate() {
            let base = (k0 + g) * self.depth_stride + l0;
            let src: &[f32; W] = self.data[base..base + W]
                .try_into()
                .expect("a slice of W values");
            *dst = *src;
        }
    }
}

impl DepthRows for Strided<'_> {
    fn contiguous(&self, k: usize, l0: usize, len: usize) -> Option<&[f32]> {
        let base = k * self.depth_stride + l0 * self.line_stride;
        (self.line_stride == 1).then(|| &self.data[base..base + len])
    }

    fn row(&self, k: usize, l0: usize, out: &mut [f32]) {
        let base = k * self.depth_stride + l0 * self.line_stride;
        if self.line_stride == 1 {
            out.copy_from_slice(&self.data[base..base + out.len()]);
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = self.data[base + i * self.line_stride];
            }
        }
    }

    fn panel(&self, k0: usize, l0: usize, lines: usize, w: usize, panel: &mut [f32]) {
        match (self.line_stride, lines == w, w) {
            (1, true, 16) => self.full_panel::<16>(k0, l0, panel),
            (1, true, 32) => self.full_panel::<32>(k0, l0, panel),
            _ => panel_by_rows(self, k0, l0, lines, w, panel),
        }
    }
}

impl<E: PackElem> Operand<E> for Strided<'_> {
    unsafe fn panels(
        &self,
        l0: usize,
        nl: usize,
        k0: usize,
        kc: usize,
        w: usize,
        kp: usize,
        scratch: &mut AlignedBuf,
    ) -> Panels<E> {
        if kp == 1
            && is_type::<E, f32>()
            && (l0, nl, self.lines, self.line_stride, self.depth_stride) == (0, w, w, 1, w)
        {
            // Already one packed f32 panel (depth rows of exactly `w` lines, e.g. attention's
            // scores of one panel of queries): the kernel reads it in place.
            return Panels {
                ptr: self.data[k0 * w..].as_ptr().cast(),
                panel_stride: kc * w,
                row_stride: 0,
            };
        }
        if self.depth_stride != 1 {
            return pack_by_rows(self, l0, nl, k0, kc, w, kp, scratch);
        }
        let panel_stride = kc.div_ceil(kp) * w * kp;
        let dst = scratch.get::<E>(nl.div_ceil(w) * panel_stride);
        pack_contiguous(self.data, self.line_stride, l0, nl, k0, kc, w, kp, dst);
        Panels {
            ptr: dst.as_ptr(),
            panel_stride,
            row_stride: 0,
        }
    }
}

/// Depth values converted per line and step of a block in [`pack_contiguous`] (16 KiB of f32).
const BLOCK_VALUES: usize = 4096;

/// A number type matrices are packed from: f32, or bf16 (weights loaded in bf16).
pub(crate) trait PackSource: Copy + Sync + 'static {
    /// `dst[i]` = the packed value of `src[i]`.
    fn convert<E: PackElem>(src: &[Self], dst: &mut [E]);
}

impl PackSource for f32 {
    fn convert<E: PackElem>(src: &[Self], dst: &mut [E]) {
        E::from_f32_slice(src, dst)
    }
}

impl PackSource for half::bf16 {
    fn convert<E: PackElem>(src: &[Self], dst: &mut [E]) {
        E::from_bf16_slice(src, dst)
    }
}

/// Packs lines `[l0, l0 + nl)` and depth `[k0, k0 + kc)` of a matrix whose lines lie
/// contiguously along depth, `line_stride` apart in `data` (weights as safetensors stores
/// them, row-major activations), into `dst`, whole panels of `w` lines:
/// `dst[p][(g * w + l) * kp + q]` = value (line `l0 + p * w + l`, depth `k0 + g * kp + q`),
/// zero past `nl` lines or `kc` values.
///
/// f32 values packed as bf16 pairs on a CPU with AVX-512 BF16 are converted and transposed in
/// registers ([`super::avx512::pack_pair_panel`]); everything else goes through
/// [`pack_blocks`].
///
/// # Panics
/// When `dst` is not whole panels or the view lacks the lines or depth.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_contiguous<E: PackElem, S: PackSource>(
    data: &[S],
    line_stride: usize,
    l0: usize,
    nl: usize,
    k0: usize,
    kc: usize,
    w: usize,
    kp: usize,
    dst: &mut [E],
) {
    let rows = (data, line_stride);
    match kp {
        1 => pack_contiguous_as::<E, S, 1>(rows, l0, nl, k0, kc, w, dst),
        2 => pack_contiguous_as::<E, S, 2>(rows, l0, nl, k0, kc, w, dst),
        32 => pack_contiguous_as::<E, S, 32>(rows, l0, nl, k0, kc, w, dst),
        _ => unreachable!("pack_contiguous: no kernel groups depth by {kp}"),
    }
}

fn pack_contiguous_as<E: PackElem, S: PackSource, const KP: usize>(
    (data, line_stride): (&[S], usize),
    l0: usize,
    nl: usize,
    k0: usize,
    kc: usize,
    w: usize,
    dst: &mut [E],
) {
    let groups = kc.div_ceil(KP);
    let panel_stride = groups * w * KP;
    assert!(dst.len().is_multiple_of(panel_stride) && dst.len() / panel_stride == nl.div_ceil(w));
    #[cfg(target_arch = "x86_64")]
    if KP == 2
        && is_type::<S, f32>()
        && is_type::<E, u16>()
        && crate::cpu::Isa::supported().has_bf16_instructions()
    {
        // Activations packed for the bf16 kernels at every product: converted and transposed
        // in registers (the block path below was ~7% of a bf16 UNet call).
        assert!(nl == 0 || (l0 + nl - 1) * line_stride + k0 + kc <= data.len());
        for (p, panel) in dst.chunks_exact_mut(panel_stride).enumerate() {
            let lines = w.min(nl - p * w);
            // SAFETY: the CPU has AVX-512 BF16 (checked); S is f32 and E is u16 (checked); the
            // rows lie in `data` (asserted) and `panel` holds groups * w pairs.
            unsafe {
                super::avx512::pack_pair_panel(
                    data.as_ptr().add((l0 + p * w) * line_stride + k0).cast(),
                    line_stride,
                    lines,
                    kc,
                    w,
                    panel.as_mut_ptr().cast(),
                )
            };
        }
        return;
    }
    pack_blocks::<E, S, KP>((data, line_stride), l0, nl, k0, kc, w, dst);
}

/// [`pack_contiguous`] on any CPU. Each line's block of depth is first converted into a small
/// line-major buffer (contiguous, vectorised), then written out one group of all `w` lines
/// after another, so the panel is written in order (the value-by-value loop it replaced wrote
/// `w * kp` values apart and packed weights at about 1 GB/s).
pub(super) fn pack_blocks<E: PackElem, S: PackSource, const KP: usize>(
    (data, line_stride): (&[S], usize),
    l0: usize,
    nl: usize,
    k0: usize,
    kc: usize,
    w: usize,
    dst: &mut [E],
) {
    let groups = kc.div_ceil(KP);
    let panel_stride = groups * w * KP;
    // Groups per block, and the block: line l's groups at [l * block_groups, ...).
    let block_groups = (BLOCK_VALUES / (w * KP)).max(1);
    let mut block = vec![[E::default(); KP]; w * block_groups];
    for (p, panel) in dst.chunks_exact_mut(panel_stride).enumerate() {
        let lines = w.min(nl - p * w);
        for g0 in (0..groups).step_by(block_groups) {
            let ng = block_groups.min(groups - g0);
            let values = (kc - g0 * KP).min(ng * KP);
            for (l, line) in block.chunks_exact_mut(block_groups).enumerate() {
                let line = &mut line.as_flattened_mut()[..ng * KP];
                if l < lines {
                    let start = (l0 + p * w + l) * line_stride + k0 + g0 * KP;
                    S::convert(&data[start..start + values], &mut line[..values]);
                    line[values..].fill(E::default());
                } else {
                    line.fill(E::default());
                }
            }
            let out = &mut panel[g0 * w * KP..(g0 + ng) * w * KP];
            let (out, _) = out.as_chunks_mut::<KP>();
            for (g, group) in out.chunks_exact_mut(w).enumerate() {
                for (l, unit) in group.iter_mut().enumerate() {
                    *unit = block[l * block_groups + g];
                }
            }
        }
    }
}

/// Any [`DepthRows`] source packed row by row.
pub(crate) struct ByRows<'a, S>(pub &'a S);

impl<E: PackElem, S: DepthRows> Operand<E> for ByRows<'_, S> {
    unsafe fn panels(
        &self,
        l0: usize,
        nl: usize,
        k0: usize,
        kc: usize,
        w: usize,
        kp: usize,
        scratch: &mut AlignedBuf,
    ) -> Panels<E> {
        pack_by_rows(self.0, l0, nl, k0, kc, w, kp, scratch)
    }
}

/// Panels packed once for the whole depth: panel p at `p * groups_total * w * kp`.
pub(crate) struct Prepacked<'a, E> {
    pub data: &'a [E],
    pub groups_total: usize,
}

impl<E: PackElem> Operand<E> for Prepacked<'_, E> {
    unsafe fn panels(
        &self,
        l0: usize,
        _nl: usize,
        k0: usize,
        _kc: usize,
        w: usize,
        kp: usize,
        _scratch: &mut AlignedBuf,
    ) -> Panels<E> {
        let panel_stride = self.groups_total * w * kp;
        Panels {
            ptr: self
                .data
                .as_ptr()
                .add((l0 / w) * panel_stride + (k0 / kp) * w * kp),
            panel_stride,
            row_stride: 0,
        }
    }

    fn is_prepacked(&self) -> bool {
        true
    }
}

/// A row-major left operand read in place by an f32 kernel (no packing): row l at `l * ld`.
/// Only whole panels may be asked for.
pub(crate) struct DirectRows<'a, E> {
    pub data: &'a [E],
    pub ld: usize,
}

impl<E: PackElem> Operand<E> for DirectRows<'_, E> {
    unsafe fn panels(
        &self,
        l0: usize,
        _nl: usize,
        k0: usize,
        _kc: usize,
        w: usize,
        _kp: usize,
        _scratch: &mut AlignedBuf,
    ) -> Panels<E> {
        Panels {
            ptr: self.data.as_ptr().add(l0 * self.ld + k0),
            panel_stride: w * self.ld,
            row_stride: self.ld,
        }
    }
}
