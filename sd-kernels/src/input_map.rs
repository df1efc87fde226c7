//! What a convolution can do to its input while reading it, so the step before it needs no
//! pass of its own and no tensor of its own: GroupNorm's per-channel affine map (statistics
//! computed beforehand, one read of the input), SiLU, and nearest-neighbour 2x upsampling.
//!
//! A resnet's `conv(silu(group_norm(x)))` and an up-block's `conv(upsample(x))` then write only
//! the convolution's output: in the VAE decoder at 512² the normalised or upsampled input alone
//! is 256 MiB.
//!
//! For image b and channel c the map reads source value v at (y >> u, x >> u) (u = 1 when
//! upsampling) and gives `silu?(v * scale[b, c] + shift[b, c])`; the convolution's zero padding
//! stays zero (it pads the mapped image).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::math;
use crate::simd::multiversion;
use crate::tensor::{from_vec, output, with_f32};

/// A map applied to a convolution's input as it is read (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputMap {
    /// Per (image, channel) `scale` and `shift`, `[B * C]` each: v * scale + shift.
    pub affine: Option<ChannelAffine>,
    /// SiLU after the affine map.
    pub silu: bool,
    /// Nearest-neighbour 2x upsampling: the source is `[B, C, H/2, W/2]`.
    pub upsample: bool,
}

/// The per-(image, channel) affine map of a GroupNorm, `[B * C]` values each.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAffine {
    /// Multiplies each value.
    pub scale: Vec<f32>,
    /// Added after.
    pub shift: Vec<f32>,
}

/// The map of one (image, channel) plane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaneMap {
    scale: f32,
    shift: f32,
    silu: bool,
    upsample: bool,
}

impl InputMap {
    /// No map: the input as it is.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Whether reading through this map is reading the input as it is.
    pub fn is_identity(&self) -> bool {
        self.affine.is_none() && !self.silu && !self.upsample
    }

    /// The source's spatial size for a mapped image of `h x w`, if it has one.
    pub(crate) fn source_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        if !self.upsample {
            return Some((h, w));
        }
        (h.is_multiple_of(2) && w.is_multiple_of(2)).then_some((h / 2, w / 2))
    }

    /// The mapped image's spatial size for a source of `h x w`.
    pub fn mapped_size(&self, h: usize, w: usize) -> (usize, usize) {
        if self.upsample {
            (2 * h, 2 * w)
        } else {
            (h, w)
        }
    }

    /// Checks the map against a source of `batch x channels`.
    pub(crate) fn check(&self, op: &'static str, batch: usize, channels: usize) -> Result<()> {
        if let Some(a) = &self.affine {
            if a.scale.len() != batch * channels || a.shift.len() != batch * channels {
                return Err(Error::Shape {
                    op,
                    what: format!(
                        "input map of {} / {} values for {batch} x {channels} channels",
                        a.scale.len(),
                        a.shift.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The map of plane (`image`, `channel`) of a source with `channels` channels.
    pub(crate) fn plane(&self, image: usize, channel: usize, channels: usize) -> PlaneMap {
        let (scale, shift) = self.affine.as_ref().map_or((1.0, 0.0), |a| {
            let i = image * channels + channel;
            (a.scale[i], a.shift[i])
        });
        PlaneMap {
            scale,
            shift,
            silu: self.silu,
            upsample: self.upsample,
        }
    }

    /// The mapped image itself, `[B, C, H', W']` (f32, CPU): for the paths that read their
    /// input as a plain matrix, and as the reference in tests.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        self.check("input map", b, c)?;
        let (ho, wo) = self.mapped_size(h, w);
        let mut out = output(b * c * ho * wo);
        with_f32("input map", x, |xs| {
            xs.par_chunks_exact(h * w)
                .zip(out.par_chunks_exact_mut(ho * wo))
                .enumerate()
                .for_each(|(p, (src, dst))| map_plane(src, w, self.plane(p / c, p % c, c), dst));
        })?;
        from_vec(out, (b, c, ho, wo))
    }
}

multiversion! {
    /// One mapped plane (`dst`, rows of `2 w` when upsampling, else `w`) from its source plane
    /// (rows of `w`).
    fn map_plane(src: &[f32], w: usize, map: PlaneMap, dst: &mut [f32]) {
        let wo = if map.upsample { 2 * w } else { w };
        for (y, row) in dst.chunks_exact_mut(wo).enumerate() {
            let sy = if map.upsample { y / 2 } else { y };
            map.row(&src[sy * w..(sy + 1) * w], 0, row);
        }
    }
}

multiversion! {
    /// One whole mapped row (`out`: `2 w` values when upsampling, else `w`) from its source
    /// row `src` (`w` values).
    fn map_row(src: &[f32], map: PlaneMap, out: &mut [f32]) {
        map.row(src, 0, out)
    }
}

impl PlaneMap {
    /// Mapped values `x0..x0 + out.len()` of one row of the mapped image, from its source
    /// row (all inside the image).
    #[inline(always)]
    pub(crate) fn row(&self, src: &[f32], x0: usize, out: &mut [f32]) {
        // The same arithmetic as `norm::group_norm`, so fused and separate passes agree.
        let f = |v: f32| {
            let y = v * self.scale + self.shift;
            if self.silu {
                math::silu(y)
            } else {
                y
            }
        };
        if self.upsample {
            for (j, o) in out.iter_mut().enumerate() {
                *o = f(src[(x0 + j) >> 1]);
            }
        } else {
            for (o, v) in out.iter_mut().zip(&src[x0..]) {
                *o = f(*v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::{group_norm, group_norm_map};
    use crate::test_util::{max_abs_diff, rand};

    #[test]
    fn the_group_norm_map_is_group_norm_and_upsampling_is_nearest() {
        let x = rand(&[2, 8, 5, 6], 3);
        let gamma: Vec<f32> = (0..8).map(|c| 0.5 + 0.25 * c as f32).collect();
        let beta: Vec<f32> = (0..8).map(|c| 0.1 * c as f32 - 0.3).collect();
        for silu in [false, true] {
            let map = group_norm_map(&x, 4, &gamma, &beta, 1e-5, silu).unwrap();
            let want = group_norm(&x, 4, &gamma, &beta, 1e-5, silu).unwrap();
            // The same arithmetic in both: equal to the bit.
            assert_eq!(max_abs_diff(&map.apply(&x).unwrap(), &want), 0.0);
            let up = InputMap {
                upsample: true,
                ..map
            };
            let want = want.upsample_nearest2d(10, 12).unwrap();
            assert_eq!(max_abs_diff(&up.apply(&x).unwrap(), &want), 0.0);
        }
        assert!(group_norm_map(&x, 3, &gamma, &beta, 1e-5, true).is_err());
        let short = InputMap {
            affine: Some(ChannelAffine {
                scale: vec![1.0; 3],
                shift: vec![0.0; 3],
            }),
            ..InputMap::identity()
        };
        let err = short.apply(&x).unwrap_err().to_string();
        assert!(err.contains("input map"), "{err}");
    }
}
