//! Group normalisation (optionally followed by SiLU, as every resnet and the VAE use it) and
//! layer normalisation, in one pass to read the statistics and one to write, f32 throughout.
//!
//! GroupNorm (Wu & He 2018): for each sample and group of C/G channels,
//!   y = (x - mean) / sqrt(var + eps) * gamma_c + beta_c   (biased variance).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::input_map::{ChannelAffine, InputMap};
use crate::math;
use crate::simd::multiversion;
use crate::tensor::{from_vec, output, with_f32};

multiversion! {
    /// (sum, sum of squares) of `x` in f64-free pairwise-ish f32 lanes (16 partial sums).
    fn mean_var(x: &[f32]) -> (f32, f32) {
        let mut s = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, v) in s.iter_mut().zip(c) {
                *a += *v;
            }
        }
        let mean = (s.iter().sum::<f32>() + tail.iter().sum::<f32>()) / x.len() as f32;
        // Second pass on centred values: no cancellation, as torch's Welford-style kernels.
        let mut q = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, v) in q.iter_mut().zip(c) {
                let d = *v - mean;
                *a += d * d;
            }
        }
        let var = (q.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>())
            / x.len() as f32;
        (mean, var)
    }
}

multiversion! {
    /// out = x * scale + shift, then SiLU when `silu`.
    fn scale_shift(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (o, v) in out.iter_mut().zip(x) {
                *o = math::silu(v * scale + shift);
            }
        } else {
            for (o, v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }
}

multiversion! {
    /// out = (x - mean) * rstd * gamma + beta.
    fn affine_row(x: &[f32], out: &mut [f32], mean: f32, rstd: f32, gamma: &[f32], beta: &[f32]) {
        for (((o, v), g), b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
}

/// A channel's GroupNorm as one affine map: (x - mean) rstd gamma + beta = x scale + shift.
fn channel_affine(mean: f32, rstd: f32, gamma: f32, beta: f32) -> (f32, f32) {
    let scale = rstd * gamma;
    (scale, beta - mean * scale)
}

/// Checks a GroupNorm's arguments for `x`; returns (batch, channels, spatial size).
fn group_norm_shape(
    op: &'static str,
    x: &Tensor,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
) -> Result<(usize, usize, usize)> {
    let dims = x.dims();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        return Err(Error::Shape {
            op,
            what: format!("input {dims:?} with {groups} groups"),
        });
    }
    let (b, c) = (dims[0], dims[1]);
    if gamma.len() != c || beta.len() != c {
        return Err(Error::Shape {
            op,
            what: format!(
                "{} / {} affine values for {c} channels",
                gamma.len(),
                beta.len()
            ),
        });
    }
    Ok((b, c, dims[2..].iter().product()))
}

/// GroupNorm of `x` `[B, C, H, W]` (f32, CPU), then SiLU when `silu`, as an [`InputMap`] a
/// convolution applies while reading `x` ([`Conv2d::forward_mapped`](crate::Conv2d::forward_mapped)):
/// only the statistics are computed here (one read of `x`), the normalised tensor is never
/// written.
pub fn group_norm_map(
    x: &Tensor,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Result<InputMap> {
    let (b, c, spatial) = group_norm_shape("group_norm_map", x, groups, gamma, beta)?;
    let per_group = c / groups * spatial;
    let stats: Vec<(f32, f32)> = with_f32("group_norm_map", x, |xs| {
        xs.par_chunks(per_group).map(mean_var).collect()
    })?;
    let (mut scale, mut shift) = (Vec::with_capacity(b * c), Vec::with_capacity(b * c));
    for i in 0..b * c {
        let (mean, var) = stats[i / (c / groups)];
        let ch = i % c;
        let (a, s) = channel_affine(mean, 1.0 / (var + eps).sqrt(), gamma[ch], beta[ch]);
        scale.push(a);
        shift.push(s);
    }
    Ok(InputMap {
        affine: Some(ChannelAffine { scale, shift }),
        silu,
        upsample: false,
    })
}

/// GroupNorm of `x` `[B, C, ...]` (f32, CPU) with `groups` groups, per-channel `gamma` and
/// `beta` (length C), then SiLU when `silu`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c, spatial) = group_norm_shape("group_norm", x, groups, gamma, beta)?;
    let per_group = c / groups * spatial;
    let mut out = output(b * c * spatial);
    with_f32("group_norm", x, |xs| {
        out.par_chunks_mut(per_group)
            .zip(xs.par_chunks(per_group))
            .enumerate()
            .for_each(|(i, (o, xg))| {
                let (mean, var) = mean_var(xg);
                let rstd = 1.0 / (var + eps).sqrt();
                let g0 = (i % groups) * (c / groups);
                for (j, (oc, xc)) in o.chunks_mut(spatial).zip(xg.chunks(spatial)).enumerate() {
                    let (scale, shift) = channel_affine(mean, rstd, gamma[g0 + j], beta[g0 + j]);
                    scale_shift(xc, oc, scale, shift, silu);
                }
            });
    })?;
    from_vec(out, dims)
}

/// LayerNorm over the last dimension of `x` (f32, CPU): `gamma`, `beta` of that length.
pub fn layer_norm(x: &Tensor, gamma: &[f32], beta: &[f32], eps: f32) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let c = *dims.last().unwrap_or(&0);
    if c == 0 || gamma.len() != c || beta.len() != c {
        return Err(Error::Shape {
            op: "layer_norm",
            what: format!(
                "input {dims:?}, {} / {} affine values",
                gamma.len(),
                beta.len()
            ),
        });
    }
    let mut out = output(x.elem_count());
    with_f32("layer_norm", x, |xs| {
        // Rows in chunks, so a task is big enough to amortise scheduling.
        let rows_per_task = (16384 / c).max(1);
        out.par_chunks_mut(c * rows_per_task)
            .zip(xs.par_chunks(c * rows_per_task))
            .for_each(|(o, xr)| {
                for (orow, xrow) in o.chunks_mut(c).zip(xr.chunks(c)) {
                    let (mean, var) = mean_var(xrow);
                    affine_row(xrow, orow, mean, 1.0 / (var + eps).sqrt(), gamma, beta);
                }
            });
    })?;
    from_vec(out, dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{rand, rel_l2};
    use candle_core::{DType, Device, Module};
    use candle_nn::VarBuilder;

    #[test]
    fn group_norm_matches_candle_nn_with_and_without_silu() {
        for (dims, groups) in [
            (vec![2, 32, 9, 7], 8),
            (vec![1, 6, 5], 3),
            (vec![2, 64, 16, 16], 32),
        ] {
            let c = dims[1];
            let x = rand(&dims, 5);
            let gamma = rand(&[c], 6);
            let beta = rand(&[c], 7);
            let want = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, groups, 1e-6)
                .unwrap()
                .forward(&x)
                .unwrap();
            let (g, b) = (
                gamma.to_vec1::<f32>().unwrap(),
                beta.to_vec1::<f32>().unwrap(),
            );
            let got = group_norm(&x, groups, &g, &b, 1e-6, false).unwrap();
            assert!(
                rel_l2(&got, &want) < 1e-6,
                "{dims:?}: {}",
                rel_l2(&got, &want)
            );
            let got = group_norm(&x, groups, &g, &b, 1e-6, true).unwrap();
            let want = candle_nn::ops::silu(&want).unwrap();
            assert!(
                rel_l2(&got, &want) < 1e-6,
                "{dims:?} silu: {}",
                rel_l2(&got, &want)
            );
        }
    }

    #[test]
    fn layer_norm_matches_candle_nn() {
        let x = rand(&[2, 33, 40], 9);
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _ = vb;
        let gamma = rand(&[40], 10);
        let beta = rand(&[40], 11);
        let want = candle_nn::LayerNorm::new(gamma.clone(), beta.clone(), 1e-5)
            .forward(&x)
            .unwrap();
        let got = layer_norm(
            &x,
            &gamma.to_vec1::<f32>().unwrap(),
            &beta.to_vec1::<f32>().unwrap(),
            1e-5,
        )
        .unwrap();
        assert!(rel_l2(&got, &want) < 1e-6, "{}", rel_l2(&got, &want));
    }

    #[test]
    fn shape_errors_name_the_op() {
        let x = rand(&[1, 6, 4], 1);
        let err = group_norm(&x, 4, &[1.0; 6], &[0.0; 6], 1e-5, false).unwrap_err();
        assert!(err.to_string().contains("group_norm"), "{err}");
        let err = layer_norm(&x, &[1.0; 3], &[0.0; 3], 1e-5).unwrap_err();
        assert!(err.to_string().contains("layer_norm"), "{err}");
    }
}
