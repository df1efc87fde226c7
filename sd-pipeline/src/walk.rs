//! Latent walks (after Karpathy's latent-walk gist and nateraw's stable-diffusion-videos):
//! frames between keyframes of (prompt, seed), each frame one text-to-image run with the start
//! noise slerped between the keyframes' seeds and the text conditioning interpolated between
//! their prompts, with the same scheduler, steps and settings throughout.
//!
//! ```
//! use sd_pipeline::walk::{walk, Keyframe, WalkOptions};
//! use sd_pipeline::{GenerateRequest, StableDiffusion};
//!
//! # fn main() -> sd_pipeline::Result<()> {
//! // A tiny random-weight model from the test fixtures; any SD 1.x / 2.x model works.
//! let sd = StableDiffusion::builder("../fixtures/pipeline/tiny-sd1").build()?;
//! let keyframes = [
//!     Keyframe { prompt: "a photo of a cat".into(), seed: 1 },
//!     Keyframe { prompt: "a photo of a dog".into(), seed: 2 },
//! ];
//! let base = GenerateRequest { steps: 4, ..GenerateRequest::default() };
//! let options = WalkOptions { between: 2, max_batch: 2, ..WalkOptions::default() };
//! let frames = walk(&sd, &base, &keyframes, &options, &mut |_, _| {})?;
//! assert_eq!(frames.len(), 4); // cat, two frames between, dog
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::batch::generate_batched;
use crate::conditioning::Conditioning;
use crate::error::{Error, Result};
use crate::request::GenerateRequest;
use crate::rng::TorchRng;
use crate::stable_diffusion::{StableDiffusion, VAE_SCALE};

/// The most frames a walk makes (every frame is a whole text-to-image run).
pub const MAX_FRAMES: usize = 10_000;

/// How text conditioning moves between two prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextPath {
    /// A straight line (nateraw's default).
    #[default]
    Linear,
    /// Spherical, as the noise.
    Spherical,
}

/// `(1 - t) a + t b`; `a` and `b` exactly at 0 and 1.
pub fn lerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    if t == 0.0 {
        return Ok(a.clone());
    }
    if t == 1.0 {
        return Ok(b.clone());
    }
    Ok((a.affine(1.0 - t, 0.0)? + b.affine(t, 0.0)?)?)
}

/// Spherical interpolation of `a` and `b` as whole vectors: along the great circle between
/// them, at angle fraction `t` (linear when they are nearly parallel); `a` and `b` exactly at
/// 0 and 1, norms kept when the two are the same length, and `slerp(a, b, t) = slerp(b, a,
/// 1 - t)`.
pub fn slerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    if t == 0.0 {
        return Ok(a.clone());
    }
    if t == 1.0 {
        return Ok(b.clone());
    }
    let a32 = a.to_dtype(DType::F32)?;
    let b32 = b.to_dtype(DType::F32)?;
    let dot = f64::from((&a32 * &b32)?.sum_all()?.to_scalar::<f32>()?);
    let na = f64::from(a32.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt();
    let nb = f64::from(b32.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt();
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let cos = (dot / (na * nb)).clamp(-1.0, 1.0);
    if cos.abs() > 0.9995 {
        return lerp(a, b, t);
    }
    let theta = cos.acos();
    let (wa, wb) = (
        ((1.0 - t) * theta).sin() / theta.sin(),
        (t * theta).sin() / theta.sin(),
    );
    Ok((a32.affine(wa, 0.0)? + b32.affine(wb, 0.0)?)?)
}

/// One keyframe of a walk.
#[derive(Debug, Clone)]
pub struct Keyframe {
    /// Its prompt.
    pub prompt: String,
    /// Its seed.
    pub seed: u64,
}

/// How a walk goes: frames per segment, looping, the text path, and batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// In-between frames per segment.
    pub between: usize,
    /// Add a last segment back to the first keyframe.
    pub loop_back: bool,
    /// How the text conditioning moves.
    pub text_path: TextPath,
    /// Frames denoised together as one UNet batch (1: one at a time); see
    /// [`generate_batched`] for when batches apply.
    pub max_batch: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            between: 8,
            loop_back: false,
            text_path: TextPath::Linear,
            max_batch: 1,
        }
    }
}

/// The frames from `keyframes[0]` to the last one, `options.between` in-between frames per
/// segment (frame `k (between + 1)` is keyframe `k`'s own image, pixel for pixel what
/// [`StableDiffusion::generate`] makes for its prompt and seed when unbatched), and with
/// `loop_back` a last segment back to the first keyframe (whose image is then not repeated).
/// `base` gives every other setting (text-to-image, batch 1). `frame_done(i, total)` is told
/// of each frame.
///
/// # Errors
/// Fewer than two keyframes, an image-to-image `base`, or prompts whose encodings differ in
/// length (different 77-token window counts) for the text path.
pub fn walk(
    sd: &StableDiffusion,
    base: &GenerateRequest,
    keyframes: &[Keyframe],
    options: &WalkOptions,
    frame_done: &mut dyn FnMut(usize, usize),
) -> Result<Vec<RgbImage>> {
    let WalkOptions {
        between,
        loop_back,
        text_path,
        max_batch,
    } = *options;
    if keyframes.len() < 2 {
        return Err(Error::request(
            "keyframes",
            "a walk needs at least two keyframes",
        ));
    }
    let segments_count = keyframes.len() - 1 + usize::from(loop_back);
    let frames_count = between
        .checked_add(1)
        .and_then(|per| per.checked_mul(segments_count))
        .and_then(|n| n.checked_add(usize::from(!loop_back)));
    if frames_count.is_none_or(|n| n > MAX_FRAMES) {
        return Err(Error::request(
            "between",
            format!(
                "{} keyframes with {between} frames between each make more than {MAX_FRAMES} frames",
                keyframes.len()
            ),
        ));
    }
    if base.init.is_some() || base.batch_size != 1 {
        return Err(Error::request(
            "keyframes",
            "a walk is text-to-image, one image per frame",
        ));
    }
    let (width, height) = base.size(sd.sample_size())?;
    let shape = [1, 4, height / VAE_SCALE, width / VAE_SCALE];
    let mut noises = Vec::with_capacity(keyframes.len());
    let mut texts = Vec::with_capacity(keyframes.len());
    for k in keyframes {
        let request = GenerateRequest {
            prompt: k.prompt.clone(),
            seed: k.seed,
            ..base.clone()
        };
        noises.push(TorchRng::new(k.seed).randn_tensor(
            &shape,
            &candle_core::Device::Cpu,
            DType::F32,
        )?);
        texts.push(sd.encode(&request)?);
    }
    let mut segments: Vec<(usize, usize)> = (0..keyframes.len() - 1).map(|k| (k, k + 1)).collect();
    if loop_back {
        segments.push((keyframes.len() - 1, 0));
    }
    let mut plan = Vec::new();
    for &(a, b) in &segments {
        for i in 0..=between {
            plan.push((a, b, i as f64 / (between + 1) as f64));
        }
    }
    if !loop_back {
        plan.push((keyframes.len() - 1, keyframes.len() - 1, 0.0));
    }
    let mut requests = Vec::with_capacity(plan.len());
    for (a, b, t) in plan {
        let (ca, cb) = (&texts[a].context, &texts[b].context);
        if ca.dims() != cb.dims() {
            return Err(Error::request(
                "prompt",
                format!(
                    "prompts {a} and {b} encode to {:?} and {:?}: give prompts of the same \
                     number of 77-token windows",
                    ca.dims(),
                    cb.dims()
                ),
            ));
        }
        let context = match text_path {
            TextPath::Linear => lerp(ca, cb, t)?,
            TextPath::Spherical => slerp(ca, cb, t)?,
        };
        requests.push(GenerateRequest {
            prompt: keyframes[a].prompt.clone(),
            seed: keyframes[a].seed,
            start_noise: Some(slerp(&noises[a], &noises[b], t)?),
            conditioning: Some(Conditioning {
                context,
                token_weights: (t == 0.0).then(|| texts[a].token_weights.clone()).flatten(),
            }),
            ..base.clone()
        });
    }
    let frames = generate_batched(sd, &requests, max_batch, frame_done)?;
    Ok(frames.into_iter().map(|f| f.image).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(seed: u64) -> Tensor {
        crate::test_util::seeded(&[1, 4, 6, 5], seed)
    }

    fn norm(t: &Tensor) -> f32 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_util::max_abs_diff(a, b)
    }

    #[test]
    fn slerp_keeps_endpoints_norms_and_symmetry() {
        let (a, b) = (randn(1), randn(2));
        assert_eq!(max_diff(&slerp(&a, &b, 0.0).unwrap(), &a), 0.0);
        assert_eq!(max_diff(&slerp(&a, &b, 1.0).unwrap(), &b), 0.0);
        // Unit vectors stay unit vectors all the way.
        let (ua, ub) = (
            (&a / f64::from(norm(&a))).unwrap(),
            (&b / f64::from(norm(&b))).unwrap(),
        );
        for t in [0.1, 0.25, 0.5, 0.9] {
            let m = slerp(&ua, &ub, t).unwrap();
            assert!((norm(&m) - 1.0).abs() < 1e-4, "t {t}: norm {}", norm(&m));
            let back = slerp(&ub, &ua, 1.0 - t).unwrap();
            assert!(max_diff(&m, &back) < 1e-5, "t {t}: not symmetric");
        }
        // Halfway between two random normals: the norm stays near theirs (lerp shrinks it).
        let mid = slerp(&a, &b, 0.5).unwrap();
        let lin = lerp(&a, &b, 0.5).unwrap();
        assert!(norm(&mid) > 0.9 * norm(&a).min(norm(&b)));
        assert!(norm(&lin) < 0.8 * norm(&mid));
        // Parallel vectors fall back to the straight line.
        let twice = (&a * 2.0).unwrap();
        let m = slerp(&a, &twice, 0.5).unwrap();
        assert!(max_diff(&m, &(&a * 1.5).unwrap()) < 1e-5);
    }
}
