//! Tiled decode and encode: run the network on overlapping tiles and blend the overlaps, so that
//! memory stays bounded whatever the image size (diffusers' `tiled_decode` / `_tiled_encode`).

use candle_core::{DType, Tensor};

use crate::config::AutoencoderKlConfig;
use crate::error::{Error, Result};

/// Tile sizes, as diffusers' `tile_sample_min_size`, `tile_latent_min_size` and
/// `tile_overlap_factor` attributes.
///
/// Tiles line up exactly (the output has 8x the latent size) when `latent_size` is a multiple
/// of 4 and `sample_size` is `latent_size` times the downsampling factor, as the defaults are;
/// other sizes reproduce diffusers' output, whose size then may differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileOptions {
    /// Tile edge in image pixels (diffusers: the config's `sample_size`, 512 for SD 1.5).
    pub sample_size: usize,
    /// Tile edge in latent pixels (diffusers: `sample_size / 2^(blocks - 1)`, 64 for SD 1.5).
    pub latent_size: usize,
    /// Fraction of a tile that overlaps its neighbour (diffusers: 0.25).
    pub overlap_factor: f64,
}

impl TileOptions {
    /// diffusers' defaults for a model: tiles of `sample_size` pixels, a quarter overlapping.
    pub fn for_config(config: &AutoencoderKlConfig) -> Self {
        Self {
            sample_size: config.sample_size,
            latent_size: config.sample_size / config.downsample_factor(),
            overlap_factor: 0.25,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.overlap_factor) {
            return Err(Error::TileOptions(format!(
                "overlap_factor {} is not in [0, 1)",
                self.overlap_factor
            )));
        }
        for (what, size) in [
            ("sample_size", self.sample_size),
            ("latent_size", self.latent_size),
        ] {
            if scaled(size, 1.0 - self.overlap_factor) == 0 {
                return Err(Error::TileOptions(format!(
                    "{what} {size} leaves no step between tiles at overlap {}",
                    self.overlap_factor
                )));
            }
        }
        Ok(())
    }

    /// The geometry of tiled decoding: latent tiles in, image tiles out.
    pub(crate) fn decode_plan(&self) -> TilePlan {
        plan(self.latent_size, self.sample_size, self.overlap_factor)
    }

    /// The geometry of tiled encoding: image tiles in, latent tiles out.
    pub(crate) fn encode_plan(&self) -> TilePlan {
        plan(self.sample_size, self.latent_size, self.overlap_factor)
    }
}

/// Python's `int(size * factor)` for non-negative values.
fn scaled(size: usize, factor: f64) -> usize {
    (size as f64 * factor) as usize
}

fn plan(tile_in: usize, tile_out: usize, overlap: f64) -> TilePlan {
    let blend = scaled(tile_out, overlap);
    TilePlan {
        tile_in,
        step_in: scaled(tile_in, 1.0 - overlap),
        blend,
        keep: tile_out - blend,
    }
}

/// How the input is cut and the outputs are put back together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TilePlan {
    /// Tile edge on the input side.
    tile_in: usize,
    /// Distance between tile origins on the input side.
    step_in: usize,
    /// Rows / columns blended with the previous tile on the output side.
    blend: usize,
    /// Rows / columns of each output tile kept (diffusers' `row_limit`).
    keep: usize,
}

impl TilePlan {
    /// Cuts `x` `[B, C, H, W]` into tiles starting every `step_in` pixels, maps each through
    /// `f`, blends every output tile into the one above and the one to the left, and keeps the
    /// top-left `keep` x `keep` of each.
    ///
    /// Tiles are blended in row-major order and in place, as diffusers does: the neighbour a tile
    /// is blended with has already been blended with its own upper and left neighbours.
    pub(crate) fn run(
        &self,
        x: &Tensor,
        mut f: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let starts = |len: usize| (0..len).step_by(self.step_in).collect::<Vec<_>>();
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for &i in &starts(h) {
            let mut row = Vec::new();
            for &j in &starts(w) {
                let tile = x.narrow(2, i, self.tile_in.min(h - i))?.narrow(
                    3,
                    j,
                    self.tile_in.min(w - j),
                )?;
                row.push(f(&tile)?);
            }
            rows.push(row);
        }
        let mut result_rows = Vec::with_capacity(rows.len());
        for i in 0..rows.len() {
            let mut kept = Vec::with_capacity(rows[i].len());
            for j in 0..rows[i].len() {
                let mut tile = rows[i][j].clone();
                if i > 0 {
                    tile = blend(&rows[i - 1][j], &tile, self.blend, 2)?;
                }
                if j > 0 {
                    tile = blend(&rows[i][j - 1], &tile, self.blend, 3)?;
                }
                let (_, _, th, tw) = tile.dims4()?;
                kept.push(
                    tile.narrow(2, 0, self.keep.min(th))?
                        .narrow(3, 0, self.keep.min(tw))?,
                );
                rows[i][j] = tile;
            }
            result_rows.push(Tensor::cat(&kept, 3)?);
        }
        Ok(Tensor::cat(&result_rows, 2)?)
    }
}

/// Linear cross-fade from the end of `a` into the start of `b` along `dim` (2: vertical,
/// diffusers' `blend_v`; 3: horizontal, `blend_h`): for y < e,
/// b[y] = a[len_a - e + y] * (1 - y/e) + b[y] * (y/e), with e = min(extent, len_a, len_b).
pub(crate) fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let (len_a, len_b) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(len_a).min(len_b);
    if e == 0 {
        return Ok(b.clone());
    }
    let ramp: Vec<f32> = (0..e).map(|y| (y as f64 / e as f64) as f32).collect();
    let mut shape = vec![1usize; 4];
    shape[dim] = e;
    let w_b = Tensor::from_vec(ramp, shape.as_slice(), b.device())?;
    let w_a = w_b.affine(-1.0, 1.0)?;
    let a_tail = a.narrow(dim, len_a - e, e)?.to_dtype(DType::F32)?;
    let b_head = b.narrow(dim, 0, e)?.to_dtype(DType::F32)?;
    let mixed = (a_tail.broadcast_mul(&w_a)? + b_head.broadcast_mul(&w_b)?)?.to_dtype(b.dtype())?;
    if e == len_b {
        return Ok(mixed);
    }
    Ok(Tensor::cat(&[mixed, b.narrow(dim, e, len_b - e)?], dim)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blend_is_a_linear_ramp() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((1, 1, 6, 1))
            .unwrap();
        let b = Tensor::full(100f32, (1, 1, 5, 1), &dev).unwrap();
        let out = blend(&a, &b, 4, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // y = 0..4 mixes a[2 + y] with weight 1 - y/4 and b[y] = 100 with weight y/4.
        let expected = [
            2.0,
            3.0 * 0.75 + 25.0,
            4.0 * 0.5 + 50.0,
            5.0 * 0.25 + 75.0,
            100.0,
        ];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?}");
        }
    }

    /// A deterministic, non-smooth test pattern `[1, 2, h, w]`.
    fn pattern(h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i as f32 * 12.9898).sin() * 43758.545).fract())
            .collect();
        Tensor::from_vec(v, (1, 2, h, w), &Device::Cpu).unwrap()
    }

    /// "Decodes" by a 3x3 box blur (zero-padded at the tile's edges, like the VAE's convolutions)
    /// then 8x nearest upsampling: a local stand-in for the decoder.
    fn blur_up(t: &Tensor) -> Result<Tensor> {
        let kernel = Tensor::full(1f32 / 9.0, (2, 1, 3, 3), t.device())?;
        let (_, _, h, w) = t.dims4()?;
        Ok(t.conv2d(&kernel, 1, 1, 1, 2)?
            .upsample_nearest2d(8 * h, 8 * w)?)
    }

    fn opts8() -> TileOptions {
        TileOptions {
            sample_size: 64,
            latent_size: 8,
            overlap_factor: 0.25,
        }
    }

    #[test]
    fn tiling_a_pointwise_map_is_exact_everywhere() {
        // Blending two tiles' values for the same pixel gives that value back, so any misplaced
        // tile, band or crop shows up as a difference on this random pattern.
        let x = pattern(20, 14);
        let up = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            Ok(t.upsample_nearest2d(8 * h, 8 * w)?)
        };
        let tiled = opts8().decode_plan().run(&x, up).unwrap();
        let whole = up(&x).unwrap();
        assert_eq!(tiled.dims(), &[1, 2, 160, 112]);
        let diff = (tiled - whole).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn tiling_a_local_map_is_exact_away_from_the_blend_bands() {
        // Plan: latent tiles of 8 every 6, image tiles of 64 kept to 48, blended over 16 pixels:
        // tile k's edge effects (one latent pixel = 8 image pixels) fall inside the bands
        // [48k, 48k + 16), so everything else must equal the untiled map exactly.
        let x = pattern(20, 14);
        let tiled = opts8().decode_plan().run(&x, blur_up).unwrap();
        let whole = blur_up(&x).unwrap();
        let diff = (tiled - whole).unwrap().abs().unwrap().squeeze(0).unwrap();
        let diff = diff.max(0).unwrap().to_vec2::<f32>().unwrap();
        let in_band = |p: usize| p >= 48 && p % 48 < 16;
        let mut seen_band_difference = false;
        for (r, row) in diff.iter().enumerate() {
            for (c, d) in row.iter().enumerate() {
                if in_band(r) || in_band(c) {
                    seen_band_difference |= *d > 1e-3;
                } else {
                    assert!(
                        *d < 1e-6,
                        "difference {d} at ({r}, {c}), outside the blend bands"
                    );
                }
            }
        }
        assert!(
            seen_band_difference,
            "the tiles' edge effects should show in the bands"
        );
    }

    #[test]
    fn sd15_defaults_match_diffusers() {
        let opts = TileOptions::for_config(&AutoencoderKlConfig::default());
        assert_eq!((opts.sample_size, opts.latent_size), (512, 64));
        let d = opts.decode_plan();
        assert_eq!((d.tile_in, d.step_in, d.blend, d.keep), (64, 48, 128, 384));
        let e = opts.encode_plan();
        assert_eq!((e.tile_in, e.step_in, e.blend, e.keep), (512, 384, 16, 48));
    }

    #[test]
    fn bad_options_are_rejected() {
        let mut opts = TileOptions::for_config(&AutoencoderKlConfig::default());
        opts.overlap_factor = 1.0;
        assert!(matches!(opts.validate(), Err(Error::TileOptions(_))));
        opts.overlap_factor = 0.25;
        opts.latent_size = 1;
        assert!(matches!(opts.validate(), Err(Error::TileOptions(_))));
    }
}
