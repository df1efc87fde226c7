//! 2-D convolution as one product per image: C[Cout, Ho*Wo] = W[Cout, Cin*kh*kw] P, where
//! the patch matrix P (im2col) is never stored whole — the packing step of the matrix engine
//! reads each depth row (ci, ky, kx) of a panel straight from the input, with the padding as
//! zeros. Weights are packed once; bias and an optional residual are added as the product is
//! written. A batch of small images (the low-resolution levels of a UNet) runs as one product
//! over all their pixels instead, so the weights stream through the cache once per call.
//! 1x1 stride-1 convolutions read the input as a plain matrix; 3x3 "same" ones on large images
//! run as Winograd F(4x4, 3x3) in f32 (4 times fewer multiplies) and F(2x2, 3x3) in bf16 (2.25
//! times fewer; narrow bf16 layers off AMX run F(4x4, 3x3) in f32, see `winograd::Plan`). In bf16 on AMX, 3x3 "same" layers keep their weights in (tap, channel) order
//! (`DepthOrder::TapMajor`) and run without patches where the image allows
//! (`gemm::amx_window`).

use std::mem::MaybeUninit;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::gemm::{self, DepthRows, Epilogue, MatOperand, PackedMatrix, Precision, Side, Strided};
use crate::input_map::InputMap;
use crate::tensor::{
    from_vec, output, pack_weight, pack_weight_taps_first, with_f32, with_f32_opt, Unwritten,
};
use crate::winograd;

/// Stride and zero padding of a convolution (the same on both axes, as in SD's networks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
}

/// How a 3x3 "same" convolution is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd where it is faster (large images, 16+ channels): F(4x4, 3x3) for f32 weights,
    /// F(2x2, 3x3) for bf16 (F(4x4, 3x3) with f32 products for layers of at most 320 channels
    /// off AMX); else direct.
    #[default]
    Auto,
    /// Always the direct sum (implicit GEMM over the 9 taps).
    Direct,
    /// Winograd F(2x2, 3x3) at every size (direct for other kernels and geometries).
    WinogradF2,
    /// Winograd F(4x4, 3x3) at every size (direct for other kernels and geometries).
    WinogradF4,
}

/// How the depth k of a convolution's packed weights (and of its patch matrix) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DepthOrder {
    /// k = (ci, ky, kx): the order PyTorch stores the weights in.
    ChannelMajor,
    /// k = (ky, kx, ci): on AMX, each 32-deep step of the product is then one tap of 32
    /// channels, whose B tiles `gemm::amx_window` reads from the input in place.
    TapMajor,
}

/// A convolution with packed weights `[Cout, Cin, kh, kw]` and optional bias `[Cout]`.
#[derive(Debug)]
pub struct Conv2d {
    weight: PackedMatrix,
    bias: Option<Vec<f32>>,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    geometry: ConvGeometry,
    algorithm: ConvAlgorithm,
    order: DepthOrder,
}

impl Conv2d {
    /// Packs `weight` (any float dtype, any device; read once) and `bias` for products in
    /// `precision`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        geometry: ConvGeometry,
        precision: Precision,
    ) -> Result<Self> {
        let (cout, cin, kh, kw) = weight.dims4()?;
        if geometry.stride == 0 {
            return Err(Error::Shape {
                op: "conv2d",
                what: "stride 0".into(),
            });
        }
        let depth = cin * kh * kw;
        let order = if tap_major_pays(precision, cin, (kh, kw), geometry) {
            DepthOrder::TapMajor
        } else {
            DepthOrder::ChannelMajor
        };
        let packed = match order {
            DepthOrder::ChannelMajor => {
                pack_weight("conv2d", weight, (cout, depth), Side::Left, precision)?
            }
            DepthOrder::TapMajor => {
                pack_weight_taps_first("conv2d", weight, Side::Left, precision)?
            }
        };
        let bias = match bias {
            Some(b) => {
                if b.dims() != [cout] {
                    return Err(Error::Shape {
                        op: "conv2d",
                        what: format!("bias {:?} for {cout} output channels", b.dims()),
                    });
                }
                let b = b
                    .to_device(&candle_core::Device::Cpu)?
                    .to_dtype(candle_core::DType::F32)?;
                Some(b.to_vec1::<f32>()?)
            }
            None => None,
        };
        Ok(Self {
            weight: packed,
            bias,
            cin,
            cout,
            kh,
            kw,
            geometry,
            algorithm: ConvAlgorithm::Auto,
            order,
        })
    }

    /// Chooses how 3x3 "same" convolutions are computed (default [`ConvAlgorithm::Auto`]).
    pub fn set_algorithm(&mut self, algorithm: ConvAlgorithm) {
        self.algorithm = algorithm;
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.cin
    }

    /// Bytes held by the packed weights.
    pub fn weight_bytes(&self) -> usize {
        self.weight.bytes()
    }

    /// The output size for an `h x w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let g = self.geometry;
        let span =
            |n: usize, k: usize| (n + 2 * g.padding).checked_sub(k).map(|d| d / g.stride + 1);
        Some((span(h, self.kh)?, span(w, self.kw)?))
    }

    /// `conv(x) + bias (+ residual)` for `x` `[B, Cin, H, W]` (f32, CPU); `residual` must have
    /// the output's shape.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        self.forward_ex(x, None, residual)
    }

    /// [`forward`](Self::forward) plus a per-image channel bias `[B, Cout]` (f32, CPU), e.g.
    /// a resnet's projected time embedding, added in the same pass.
    pub fn forward_ex(
        &self,
        x: &Tensor,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_mapped(x, &InputMap::identity(), channel_bias, residual)
    }

    /// [`forward_ex`](Self::forward_ex) of the image `map` reads from `x` (e.g. `x`
    /// normalised by a GroupNorm and activated, or upsampled). On the Winograd path that image
    /// is never stored: the input transform maps each value as it reads it. The direct product
    /// reads each value once per tap, so there the mapped image is made first.
    pub fn forward_mapped(
        &self,
        x: &Tensor,
        map: &InputMap,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, cin, hs, ws) = x.dims4()?;
        let bad = |what: String| Error::Shape { op: "conv2d", what };
        if cin != self.cin {
            return Err(bad(format!(
                "input {:?} for {} input channels",
                x.dims(),
                self.cin
            )));
        }
        map.check("conv2d", b, cin)?;
        let (h, w) = map.mapped_size(hs, ws);
        if !map.is_identity() && self.winograd_plan(b, h, w).is_none() && !self.runs_on_window(h, w)
        {
            // Only the Winograd input transform maps as it reads (each input value once or
            // twice); the direct product would map every value once per tap: map first.
            return self.forward_ex(&map.apply(x)?, channel_bias, residual);
        }
        let (ho, wo) = self
            .output_size(h, w)
            .ok_or_else(|| bad(format!("input {h}x{w} smaller than the kernel")))?;
        let out_shape = (b, self.cout, ho, wo);
        if let Some(r) = residual {
            if r.dims() != [b, self.cout, ho, wo] {
                return Err(bad(format!(
                    "residual {:?}, output {:?}",
                    r.dims(),
                    out_shape
                )));
            }
        }
        let image_bias: Option<Vec<f32>> = match channel_bias {
            Some(cb) => {
                if cb.dims() != [b, self.cout] {
                    return Err(bad(format!(
                        "channel bias {:?} for [{b}, {}]",
                        cb.dims(),
                        self.cout
                    )));
                }
                let mut v = with_f32("conv2d", cb, |d| d.to_vec())?;
                if let Some(bias) = &self.bias {
                    for row in v.chunks_mut(self.cout) {
                        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
                    }
                }
                Some(v)
            }
            None => None,
        };
        let plane_in = cin * hs * ws;
        let plane_out = self.cout * ho * wo;
        if let Some(plan) = self.winograd_plan(b, h, w) {
            let mut out = output(b * plane_out);
            let bias: Option<Vec<f32>> = image_bias.or_else(|| {
                let row = self.bias.as_ref()?;
                Some((0..b).flat_map(|_| row.iter().copied()).collect())
            });
            let grid = winograd::Grid {
                batch: b,
                cin,
                cout: self.cout,
                h,
                w,
            };
            with_f32("conv2d", x, |xs| {
                with_f32_opt("conv2d", residual, |rs| {
                    winograd::conv3x3(
                        plan,
                        None,
                        &self.weight,
                        self.order,
                        grid,
                        xs,
                        map,
                        bias.as_deref(),
                        rs,
                        &mut out,
                    )
                })
            })??;
            return from_vec(out, out_shape);
        }
        let run = |xs: &[f32], res: Option<&[f32]>, out: &mut [MaybeUninit<f32>]| {
            #[cfg(target_arch = "x86_64")]
            if self.runs_on_window(h, w) {
                let (bias, per_image) = match &image_bias {
                    Some(v) => (Some(v.as_slice()), true),
                    None => (self.bias.as_deref(), false),
                };
                gemm::amx_window::conv3x3(
                    &self.weight,
                    xs,
                    map,
                    (b, cin, h, w),
                    bias,
                    per_image,
                    res,
                    out,
                );
                return;
            }
            if b > 1 && ho * wo < ONE_PRODUCT_MAX_PIXELS {
                self.images_at_once(xs, b, h, w, ho, wo, image_bias.as_deref(), res, out);
                return;
            }
            for i in 0..b {
                let input = &xs[i * plane_in..(i + 1) * plane_in];
                let c = &mut out[i * plane_out..(i + 1) * plane_out];
                let bias_row = match &image_bias {
                    Some(v) => Some(&v[i * self.cout..(i + 1) * self.cout]),
                    None => self.bias.as_deref(),
                };
                let epi = Epilogue {
                    bias_row,
                    bias_col: None,
                    residual: res.map(|r| &r[i * plane_out..(i + 1) * plane_out]),
                    residual_ld: ho * wo,
                };
                self.image(input, h, w, ho, wo, c, &epi);
            }
        };
        let mut out = Unwritten::new(b * plane_out);
        with_f32("conv2d", x, |xs| {
            with_f32_opt("conv2d", residual, |rs| run(xs, rs, out.slots()))
        })??;
        // SAFETY: each image's product (or the batch's, scattered) wrote all of its output.
        from_vec(unsafe { out.assume_written() }, out_shape)
    }

    /// Whether this is a 1x1, stride 1, padding 0 convolution: a product per pixel, which
    /// [`forward_tokens`](Self::forward_tokens) runs on tokens.
    pub fn is_pointwise(&self) -> bool {
        let g = self.geometry;
        (self.kh, self.kw, g.stride, g.padding) == (1, 1, 1, 0)
    }

    /// A 1x1 convolution of the `h x w` feature map whose pixels are the rows of `tokens`
    /// `[B, h*w, Cin]` (f32, CPU), plus bias and `residual` `[B, Cout, h, w]`: a transformer's
    /// output projection. The product reads the tokens as they are; the map is never stored.
    pub fn forward_tokens(
        &self,
        tokens: &Tensor,
        (h, w): (usize, usize),
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let bad = |what: String| Error::Shape {
            op: "conv2d tokens",
            what,
        };
        if !self.is_pointwise() {
            let g = self.geometry;
            return Err(bad(format!(
                "a {}x{} convolution (stride {}, padding {}) is not a per-token product",
                self.kh, self.kw, g.stride, g.padding
            )));
        }
        let (b, pixels, cin) = tokens.dims3()?;
        if pixels != h * w || cin != self.cin {
            return Err(bad(format!(
                "tokens {:?} for a {h}x{w} map of {} channels",
                tokens.dims(),
                self.cin
            )));
        }
        let out_shape = (b, self.cout, h, w);
        if let Some(r) = residual {
            if r.dims() != [b, self.cout, h, w] {
                return Err(bad(format!(
                    "residual {:?}, output {out_shape:?}",
                    r.dims()
                )));
            }
        }
        let plane_out = self.cout * pixels;
        let mut out = Unwritten::new(b * plane_out);
        let run = |ts: &[f32], res: Option<&[f32]>, out: &mut [MaybeUninit<f32>]| {
            for (i, c) in out.chunks_exact_mut(plane_out).enumerate() {
                let epi = Epilogue {
                    bias_row: self.bias.as_deref(),
                    bias_col: None,
                    residual: res.map(|r| &r[i * plane_out..(i + 1) * plane_out]),
                    residual_ld: pixels,
                };
                let image =
                    Strided::rows(&ts[i * pixels * cin..(i + 1) * pixels * cin], pixels, cin);
                gemm::matmul_unwritten(
                    MatOperand::Packed(&self.weight),
                    image.into(),
                    c,
                    pixels,
                    &epi,
                    self.weight.precision(),
                );
            }
        };
        with_f32("conv2d tokens", tokens, |ts| {
            with_f32_opt("conv2d tokens", residual, |rs| run(ts, rs, out.slots()))
        })??;
        // SAFETY: each image's product wrote all of its output.
        from_vec(unsafe { out.assume_written() }, out_shape)
    }

    /// Whether the direct product on `h x w` images runs on the AMX window (no patches).
    fn runs_on_window(&self, h: usize, w: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.order == DepthOrder::TapMajor
                && gemm::amx_window::applies(&self.weight, self.cin, h, w)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (h, w);
            false
        }
    }

    /// Whether this is a 3x3, stride 1, padding 1 convolution (output size = input size).
    fn is_same_3x3(&self) -> bool {
        same_3x3((self.kh, self.kw), self.geometry)
    }

    /// The Winograd plan this call runs as, if any: a 3x3 "same" convolution, on an image
    /// big enough for the transforms to pay unless forced (see [`winograd::worthwhile`]).
    fn winograd_plan(&self, batch: usize, h: usize, w: usize) -> Option<winograd::Plan> {
        if !self.is_same_3x3() {
            return None;
        }
        let precision = self.weight.precision();
        match self.algorithm {
            ConvAlgorithm::Direct => None,
            ConvAlgorithm::WinogradF2 => {
                Some(winograd::Plan::forced(winograd::Variant::F2, precision))
            }
            ConvAlgorithm::WinogradF4 => {
                Some(winograd::Plan::forced(winograd::Variant::F4, precision))
            }
            // The AMX window beat Winograd F(2x2) at every size it takes (bf16, 1 image:
            // 512 ch 128² 71 against 118 ms, 256 ch 256² 66 / 152, 128 ch 512² 90 / 356).
            ConvAlgorithm::Auto if self.runs_on_window(h, w) => None,
            ConvAlgorithm::Auto => {
                winograd::worthwhile(batch, h, w, self.cin, self.cout, precision)
                    .then(|| winograd::Plan::auto(precision, self.cin, self.cout))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn image(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        c: &mut [MaybeUninit<f32>],
        epi: &Epilogue,
    ) {
        let g = self.geometry;
        let precision = self.weight.precision();
        if self.kh == 1 && self.kw == 1 && g.stride == 1 && g.padding == 0 {
            let x = Strided::cols(input, self.cin, h * w);
            gemm::matmul_unwritten(
                MatOperand::Packed(&self.weight),
                x.into(),
                c,
                ho * wo,
                epi,
                precision,
            );
            return;
        }
        self.patch_product(input, 1, (h, w), (ho, wo), c, epi);
    }

    /// C[Cout, images * ho * wo] = W P for the patches P of `images` images `[Cin, h, w]`
    /// stored one after another in `input`, each image's output pixels a run of lines.
    fn patch_product(
        &self,
        input: &[f32],
        images: usize,
        (h, w): (usize, usize),
        (ho, wo): (usize, usize),
        c: &mut [MaybeUninit<f32>],
        epi: &Epilogue,
    ) {
        let g = self.geometry;
        let lines = images * ho * wo;
        let patches = Patches {
            input,
            order: self.order,
            cin: self.cin,
            h,
            w,
            wo,
            pixels: ho * wo,
            kh: self.kh,
            kw: self.kw,
            stride: g.stride,
            padding: g.padding,
        };
        gemm::matmul_with_source(
            MatOperand::Packed(&self.weight),
            gemm::RightOperand::Rows {
                source: &patches,
                lines,
                depth: self.cin * self.kh * self.kw,
            },
            c,
            lines,
            epi,
            self.weight.precision(),
        );
    }
}

impl Conv2d {
    /// The direct product of all `b` images at once into a scratch `[Cout, b * pixels]`, then
    /// written out as `[b, Cout, pixels]` with the bias (per image `[b, Cout]` if given, else
    /// the layer's) and the residual added.
    #[allow(clippy::too_many_arguments)]
    fn images_at_once(
        &self,
        xs: &[f32],
        b: usize,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        image_bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let pixels = ho * wo;
        let lines = b * pixels;
        let mut c = Unwritten::new(self.cout * lines);
        self.patch_product(xs, b, (h, w), (ho, wo), c.slots(), &Epilogue::NONE);
        // SAFETY: the product wrote all of C.
        let c = unsafe { c.assume_written() };
        for (i, image) in out.chunks_exact_mut(self.cout * pixels).enumerate() {
            for (co, dst) in image.chunks_exact_mut(pixels).enumerate() {
                let src = &c[co * lines + i * pixels..][..pixels];
                let add = match image_bias {
                    Some(v) => v[i * self.cout + co],
                    None => self.bias.as_ref().map_or(0.0, |v| v[co]),
                };
                let at = (i * self.cout + co) * pixels;
                match residual {
                    Some(r) => {
                        let r = &r[at..at + pixels];
                        for ((d, s), r) in dst.iter_mut().zip(src).zip(r) {
                            d.write(s + add + r);
                        }
                    }
                    None => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            d.write(s + add);
                        }
                    }
                }
            }
        }
    }
}

/// Whether a layer's weights are packed [`DepthOrder::TapMajor`]: 3x3 "same" convolutions of
/// whole 32-channel blocks in bf16 on AMX, which `gemm::amx_window` runs without patches.
fn tap_major_pays(
    precision: Precision,
    cin: usize,
    (kh, kw): (usize, usize),
    geometry: ConvGeometry,
) -> bool {
    cfg!(target_arch = "x86_64")
        && same_3x3((kh, kw), geometry)
        && precision == Precision::Bf16
        && cin.is_multiple_of(32)
        && crate::cpu::Isa::active() == crate::cpu::Isa::Amx
}

/// Whether a `kh x kw` kernel with `geometry` is a 3x3, stride 1, padding 1 ("same")
/// convolution.
fn same_3x3(kernel: (usize, usize), geometry: ConvGeometry) -> bool {
    kernel == (3, 3) && (geometry.stride, geometry.padding) == (1, 1)
}

/// Batches of images smaller than this many output pixels each run as one product (lines =
/// every image's pixels), so the weights stream through the cache once per call rather than
/// once per image, and a 4x4 image's 16 pixels do not leave a thread without work.
const ONE_PRODUCT_MAX_PIXELS: usize = 1024;

/// The patch matrix of a batch of images: depth row (ci, ky, kx) (or (ky, kx, ci)), line
/// p = (i, oy, ox) holds
/// `x[i, ci, oy*s + ky - pad, ox*s + kx - pad]`, zero outside the image.
struct Patches<'a> {
    input: &'a [f32],
    /// How depth rows are numbered (as the weights' k).
    order: DepthOrder,
    cin: usize,
    h: usize,
    w: usize,
    wo: usize,
    /// Output pixels per image (`ho * wo`): lines per image.
    pixels: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
}

/// A run of panel lines in one output row: output (image, oy, ox..ox + len) at panel offset
/// `at`.
#[derive(Clone, Copy)]
struct Segment {
    image: usize,
    oy: usize,
    ox: usize,
    len: usize,
    at: usize,
}

impl Patches<'_> {
    /// Writes depth row k ((ci, ky, kx) or (ky, kx, ci), as `order` says) of the given
    /// segments into `out`.
    fn fill(&self, k: usize, segments: &[Segment], out: &mut [f32]) {
        let (ci, tap) = match self.order {
            DepthOrder::ChannelMajor => (k / (self.kh * self.kw), k % (self.kh * self.kw)),
            DepthOrder::TapMajor => (k % self.cin, k / self.cin),
        };
        let (ky, kx) = (tap / self.kw, tap % self.kw);
        let area = self.h * self.w;
        let (s, pad) = (self.stride, self.padding as isize);
        for seg in segments {
            let at = (seg.image * self.cin + ci) * area;
            let plane = &self.input[at..at + area];
            let out = &mut out[seg.at..seg.at + seg.len];
            let iy = (seg.oy * s) as isize + ky as isize - pad;
            if iy < 0 || iy >= self.h as isize {
                out.fill(0.0);
                continue;
            }
            let row = &plane[iy as usize * self.w..(iy as usize + 1) * self.w];
            let x0 = (seg.ox * s) as isize + kx as isize - pad;
            let len = seg.len;
            if s == 1 {
                let first = (-x0).clamp(0, len as isize) as usize;
                let last = (self.w as isize - x0).clamp(0, len as isize) as usize;
                out[..first].fill(0.0);
                if last > first {
                    let from = (x0 + first as isize) as usize;
                    out[first..last].copy_from_slice(&row[from..from + (last - first)]);
                }
                out[last.max(first)..].fill(0.0);
            } else {
                for (j, v) in out.iter_mut().enumerate() {
                    let ix = x0 + (j * s) as isize;
                    *v = if ix >= 0 && ix < self.w as isize {
                        row[ix as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// The output-row runs of lines `l0..l0 + lines`.
    fn segments(&self, l0: usize, lines: usize, out: &mut Vec<Segment>) {
        out.clear();
        let mut done = 0;
        while done < lines {
            let (image, p) = ((l0 + done) / self.pixels, (l0 + done) % self.pixels);
            let (oy, ox) = (p / self.wo, p % self.wo);
            let len = (self.wo - ox).min(lines - done);
            out.push(Segment {
                image,
                oy,
                ox,
                len,
                at: done,
            });
            done += len;
        }
    }
}

impl DepthRows for Patches<'_> {
    fn panel(&self, k0: usize, l0: usize, lines: usize, w: usize, panel: &mut [f32]) {
        let mut segments = Vec::with_capacity(4);
        self.segments(l0, lines, &mut segments);
        for (k, group) in panel.chunks_exact_mut(w).enumerate() {
            self.fill(k0 + k, &segments, &mut group[..lines]);
            group[lines..].fill(0.0);
        }
    }

    fn row(&self, k: usize, l0: usize, out: &mut [f32]) {
        let mut segments = Vec::with_capacity(4);
        self.segments(l0, out.len(), &mut segments);
        self.fill(k, &segments, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{rand, rel_l2};
    use candle_core::DType;

    #[test]
    fn matches_candle_on_sd_and_odd_shapes() {
        // (batch, cin, cout, h, w, k, stride, padding)
        let cases = [
            (2, 32, 40, 16, 16, 3, 1, 1),
            (1, 7, 5, 9, 5, 3, 1, 1),
            (2, 16, 16, 9, 7, 3, 2, 1),
            (1, 16, 16, 8, 8, 3, 2, 0),
            (2, 24, 8, 5, 11, 1, 1, 0),
            (1, 4, 33, 3, 3, 3, 1, 1),
            (1, 3, 4, 1, 1, 3, 1, 1),
            // Large enough for Winograd F(2x2, 3x3), odd width.
            (2, 16, 24, 48, 45, 3, 1, 1),
        ];
        for (i, &(b, cin, cout, h, w, k, s, p)) in cases.iter().enumerate() {
            let x = rand(&[b, cin, h, w], 11 + i as u64);
            let wt = rand(&[cout, cin, k, k], 23 + i as u64);
            let bias = rand(&[cout], 31 + i as u64);
            let want = x
                .conv2d(&wt, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let res = rand(want.dims(), 41 + i as u64);
            let geometry = ConvGeometry {
                stride: s,
                padding: p,
            };
            for precision in [Precision::F32, Precision::Bf16] {
                let conv = Conv2d::new(&wt, Some(&bias), geometry, precision).unwrap();
                let got = conv.forward(&x, None).unwrap();
                let bound = if precision == Precision::F32 {
                    1e-6
                } else {
                    1e-2
                };
                let e = rel_l2(&got, &want);
                assert!(e < bound, "case {i} {precision:?}: rel L2 {e}");
                let got = conv.forward(&x, Some(&res)).unwrap();
                let e = rel_l2(&got, &(&want + &res).unwrap());
                assert!(e < bound, "case {i} {precision:?} + residual: rel L2 {e}");
                let cb = rand(&[b, cout], 53 + i as u64);
                let got = conv.forward_ex(&x, Some(&cb), None).unwrap();
                let with_cb = want
                    .broadcast_add(&cb.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
                    .unwrap();
                let e = rel_l2(&got, &with_cb);
                assert!(
                    e < bound,
                    "case {i} {precision:?} + channel bias: rel L2 {e}"
                );
            }
        }
    }

    #[test]
    fn a_mapped_input_is_the_map_then_the_convolution() {
        // (batch, cin, cout, source h, source w, kernel, stride, padding)
        let cases = [
            (2, 16, 24, 24, 23, 3, 1, 1),
            (1, 7, 5, 5, 9, 3, 1, 1),
            (2, 16, 8, 9, 7, 3, 2, 1),
            (2, 24, 8, 5, 11, 1, 1, 0),
        ];
        for (i, &(b, cin, cout, h, w, k, s, p)) in cases.iter().enumerate() {
            let x = rand(&[b, cin, h, w], 61 + i as u64);
            let wt = rand(&[cout, cin, k, k], 67 + i as u64);
            let bias = rand(&[cout], 71 + i as u64);
            let geometry = ConvGeometry {
                stride: s,
                padding: p,
            };
            let affine = || crate::ChannelAffine {
                scale: (0..b * cin).map(|j| 0.5 + 0.1 * (j % 7) as f32).collect(),
                shift: (0..b * cin).map(|j| 0.3 - 0.05 * (j % 5) as f32).collect(),
            };
            let maps = [
                InputMap {
                    affine: Some(affine()),
                    silu: true,
                    upsample: false,
                },
                InputMap {
                    affine: None,
                    silu: false,
                    upsample: true,
                },
                InputMap {
                    affine: Some(affine()),
                    silu: true,
                    upsample: true,
                },
            ];
            let algorithms = [
                ConvAlgorithm::Direct,
                ConvAlgorithm::WinogradF2,
                ConvAlgorithm::WinogradF4,
            ];
            for map in &maps {
                let mapped = map.apply(&x).unwrap();
                for precision in [Precision::F32, Precision::Bf16] {
                    for algorithm in algorithms {
                        let mut conv = Conv2d::new(&wt, Some(&bias), geometry, precision).unwrap();
                        conv.set_algorithm(algorithm);
                        let want = conv.forward(&mapped, None).unwrap();
                        let res = rand(want.dims(), 73);
                        let got = conv.forward_mapped(&x, map, None, Some(&res)).unwrap();
                        let e = rel_l2(&got, &(&want + &res).unwrap());
                        assert!(
                            e < 1e-6,
                            "case {i} {map:?} {precision:?} {algorithm:?}: {e}"
                        );
                    }
                }
            }
        }
    }

    /// bf16 3x3 convolutions on AMX read their B tiles from the padded input in place
    /// (`gemm::amx_window`): exact products of the bf16-rounded values, summed in f32.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn amx_window_is_the_convolution_of_the_rounded_values() {
        use crate::cpu::{with_isa, Isa};
        if Isa::supported() < Isa::Amx {
            return;
        }
        let bf16 = |t: &Tensor| {
            t.to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        // (batch, cin, cout, h, w): a partial panel of output channels, 64-wide rows,
        // 16-wide rows (two rows a tile), several 32-channel blocks, two passes over them;
        // rows of 8 and 12 pixels (the column-shifted copies), a last tile of 16 pixels.
        let cases = [
            (2, 64, 40, 32, 32),
            (1, 32, 64, 16, 64),
            (2, 96, 32, 64, 16),
            (1, 160, 40, 16, 16),
            (2, 64, 40, 8, 8),
            (1, 32, 40, 10, 8),
            (1, 160, 40, 12, 12),
        ];
        let same = ConvGeometry {
            stride: 1,
            padding: 1,
        };
        for (i, &(b, cin, cout, h, w)) in cases.iter().enumerate() {
            let x = rand(&[b, cin, h, w], 81 + i as u64);
            let wt = rand(&[cout, cin, 3, 3], 83 + i as u64);
            let bias = rand(&[cout], 85 + i as u64);
            let res = rand(&[b, cout, h, w], 87 + i as u64);
            let cb = rand(&[b, cout], 89 + i as u64);
            let conv = with_isa(Isa::Amx, || {
                Conv2d::new(&wt, Some(&bias), same, Precision::Bf16).unwrap()
            });
            let (got, got_cb) = with_isa(Isa::Amx, || {
                assert!(gemm::amx_window::applies(&conv.weight, cin, h, w));
                (
                    conv.forward(&x, Some(&res)).unwrap(),
                    conv.forward_ex(&x, Some(&cb), None).unwrap(),
                )
            });
            let exact = bf16(&x).conv2d(&bf16(&wt), 1, 1, 1, 1).unwrap();
            let plus = |t: &Tensor, v: &Tensor| {
                let v = v.unsqueeze(2).unwrap().unsqueeze(3).unwrap();
                t.broadcast_add(&v).unwrap()
            };
            let want = (plus(&exact, &bias.unsqueeze(0).unwrap()) + &res).unwrap();
            let e = rel_l2(&got, &want);
            assert!(e < 1e-5, "case {i} + residual: rel L2 {e}");
            let want_cb = plus(&plus(&exact, &bias.unsqueeze(0).unwrap()), &cb);
            let e = rel_l2(&got_cb, &want_cb);
            assert!(e < 1e-5, "case {i} + channel bias: rel L2 {e}");
            // A GroupNorm's map with SiLU, and 2x upsampling, applied as the padded copy is
            // made: the convolution of the mapped image.
            let affine = || crate::ChannelAffine {
                scale: (0..b * cin).map(|j| 0.5 + 0.1 * (j % 7) as f32).collect(),
                shift: (0..b * cin).map(|j| 0.3 - 0.05 * (j % 5) as f32).collect(),
            };
            let maps = [
                (
                    x.clone(),
                    InputMap {
                        affine: Some(affine()),
                        silu: true,
                        upsample: false,
                    },
                ),
                (
                    x.narrow(2, 0, h / 2)
                        .unwrap()
                        .narrow(3, 0, w / 2)
                        .unwrap()
                        .contiguous()
                        .unwrap(),
                    InputMap {
                        affine: Some(affine()),
                        silu: true,
                        upsample: true,
                    },
                ),
            ];
            for (source, map) in &maps {
                let mapped = map.apply(source).unwrap();
                let got = with_isa(Isa::Amx, || {
                    assert!(gemm::amx_window::applies(&conv.weight, cin, h, w));
                    conv.forward_mapped(source, map, None, Some(&res)).unwrap()
                });
                let exact = bf16(&mapped).conv2d(&bf16(&wt), 1, 1, 1, 1).unwrap();
                let want = (plus(&exact, &bias.unsqueeze(0).unwrap()) + &res).unwrap();
                let e = rel_l2(&got, &want);
                let what = format!("silu {}, upsample {}", map.silu, map.upsample);
                assert!(e < 1e-5, "case {i} mapped ({what}): rel L2 {e}");
            }
            // The layer's other paths read the same (tap, channel)-ordered weights: patches
            // of an image too small for the window, and Winograd.
            let small = x.narrow(2, 0, 4).unwrap().narrow(3, 0, 4).unwrap();
            let got = with_isa(Isa::Amx, || conv.forward(&small, None).unwrap());
            let exact = bf16(&small).conv2d(&bf16(&wt), 1, 1, 1, 1).unwrap();
            let e = rel_l2(&got, &plus(&exact, &bias.unsqueeze(0).unwrap()));
            assert!(e < 1e-5, "case {i} patches: rel L2 {e}");
            let want = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
            let want = plus(&want, &bias.unsqueeze(0).unwrap());
            for algorithm in [ConvAlgorithm::WinogradF2, ConvAlgorithm::WinogradF4] {
                let mut conv = with_isa(Isa::Amx, || {
                    Conv2d::new(&wt, Some(&bias), same, Precision::Bf16).unwrap()
                });
                conv.set_algorithm(algorithm);
                let got = with_isa(Isa::Amx, || conv.forward(&x, None).unwrap());
                let e = rel_l2(&got, &want);
                assert!(e < 1e-2, "case {i} {algorithm:?}: rel L2 {e}");
            }
        }
    }

    #[test]
    fn a_pointwise_convolution_of_tokens_is_that_of_their_map() {
        let (b, cin, cout, h, w) = (2, 40, 24, 5, 7);
        let tokens = rand(&[b, h * w, cin], 91);
        let map = tokens
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, cin, h, w))
            .unwrap();
        let wt = rand(&[cout, cin, 1, 1], 93);
        let bias = rand(&[cout], 95);
        let res = rand(&[b, cout, h, w], 97);
        let pointwise = ConvGeometry {
            stride: 1,
            padding: 0,
        };
        for precision in [Precision::F32, Precision::Bf16] {
            let conv = Conv2d::new(&wt, Some(&bias), pointwise, precision).unwrap();
            assert!(conv.is_pointwise());
            let want = conv.forward(&map, Some(&res)).unwrap();
            let got = conv.forward_tokens(&tokens, (h, w), Some(&res)).unwrap();
            let e = rel_l2(&got, &want);
            assert!(e < 1e-6, "{precision:?}: rel L2 {e}");
            assert!(conv.forward_tokens(&tokens, (w, h + 1), None).is_err());
        }
        let same = ConvGeometry {
            stride: 1,
            padding: 1,
        };
        let conv3 = Conv2d::new(&rand(&[cout, cin, 3, 3], 99), None, same, Precision::F32).unwrap();
        assert!(!conv3.is_pointwise());
        let err = conv3.forward_tokens(&tokens, (h, w), None).unwrap_err();
        assert!(err.to_string().contains("per-token"), "{err}");
    }

    #[test]
    fn rejects_wrong_channels_and_non_f32() {
        let conv = Conv2d::new(
            &rand(&[4, 3, 3, 3], 1),
            None,
            ConvGeometry {
                stride: 1,
                padding: 1,
            },
            Precision::F32,
        )
        .unwrap();
        let err = conv.forward(&rand(&[1, 5, 8, 8], 2), None).unwrap_err();
        assert!(err.to_string().contains("input channels"), "{err}");
        let half = rand(&[1, 3, 8, 8], 3).to_dtype(DType::F16).unwrap();
        assert!(conv.forward(&half, None).is_err());
    }
}
