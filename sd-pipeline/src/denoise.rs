//! The sampling loop: at each step, one batched UNet call, classifier-free guidance, one
//! scheduler step (with the step's noise drawn from the run's generator), and for inpainting
//! with a plain model the latent mask blend.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use sd_scheduler::{PredictionType, Scheduler};

use crate::components::Denoiser;
use crate::conditioning::Conditioning;
use crate::error::{Error, Result};
use crate::rng::TorchRng;

/// What the step callback sees after each model call.
#[derive(Debug)]
pub struct StepProgress<'a> {
    /// Model calls done so far in this run (1 after the first).
    pub step: usize,
    /// Model calls this run makes in all.
    pub total: usize,
    /// The timestep just run.
    pub timestep: f64,
    /// The latents after this step `[B, 4, h, w]`.
    pub latents: &'a Tensor,
    /// The clean latents this step's prediction implies (x0, diffusers'
    /// `pred_original_sample`) `[B, 4, h, w]`: what previews and denoising animations show.
    pub predicted_original: &'a Tensor,
}

/// The callback type: `ControlFlow::Break(())` cancels the run.
pub type StepCallback<'a> = dyn FnMut(&StepProgress) -> ControlFlow<()> + 'a;

/// How each step's two predictions are combined.
#[derive(Debug, Clone, Copy)]
pub enum Guidance {
    /// One conditional pass.
    Conditional,
    /// uncond + scale (cond - uncond), the batch being `[uncond; cond]`.
    Classifier {
        /// The guidance scale g.
        scale: f64,
    },
}

/// The extra inputs of inpainting.
#[derive(Debug, Clone)]
pub enum Inpainting {
    /// A 9-channel UNet: the mask `[rows, 1, h, w]` and masked-image latents `[rows, 4, h, w]`
    /// are concatenated to the latents of every call (rows: the UNet batch).
    Channels {
        /// The latent-size mask, repeated per UNet row.
        mask: Tensor,
        /// The masked image's latents, repeated per UNet row.
        masked_image_latents: Tensor,
    },
    /// A plain UNet: after each step, the kept region is reset to the init image's latents
    /// noised to the next step's level: `(1 - m) * add_noise(x0, noise, next) + m * x`.
    Blend {
        /// The latent-size mask `[B, 1, h, w]`.
        mask: Tensor,
        /// The init image's latents `[B, 4, h, w]`.
        image_latents: Tensor,
        /// The noise the start latents were made with.
        noise: Tensor,
    },
}

/// Runs the scheduler's steps `start..` on `latents` and returns the denoised latents.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    denoiser: &dyn Denoiser,
    scheduler: &mut dyn Scheduler,
    start: usize,
    mut latents: Tensor,
    conditioning: &Conditioning,
    guidance: Guidance,
    inpainting: Option<&Inpainting>,
    rng: &mut TorchRng,
    prediction_type: PredictionType,
    callback: &mut StepCallback,
) -> Result<Tensor> {
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len().saturating_sub(start);
    for (done, index) in (start..timesteps.len()).enumerate() {
        let t = timesteps[index];
        let scaled = scheduler.scale_model_input(&latents, index)?;
        let mut input = match guidance {
            Guidance::Conditional => scaled,
            Guidance::Classifier { .. } => Tensor::cat(&[&scaled, &scaled], 0)?,
        };
        if let Some(Inpainting::Channels {
            mask,
            masked_image_latents,
        }) = inpainting
        {
            input = Tensor::cat(&[&input, mask, masked_image_latents], 1)?;
        }
        let prediction = denoiser.predict(
            &input,
            t,
            &conditioning.context,
            conditioning.token_weights.as_ref(),
        )?;
        let prediction = match guidance {
            Guidance::Conditional => prediction,
            Guidance::Classifier { scale } => {
                let rows = prediction.dim(0)? / 2;
                let uncond = prediction.narrow(0, 0, rows)?;
                let cond = prediction.narrow(0, rows, rows)?;
                (&uncond + ((&cond - &uncond)? * scale)?)?
            }
        };
        let predicted_original =
            predicted_original(scheduler, index, &latents, &prediction, prediction_type)?;
        let noise = if scheduler.noise_needed(index) {
            Some(rng.randn_tensor(latents.dims(), latents.device(), DType::F32)?)
        } else {
            None
        };
        latents = scheduler.step(index, &prediction, &latents, noise.as_ref())?;
        if let Some(Inpainting::Blend {
            mask,
            image_latents,
            noise,
        }) = inpainting
        {
            let kept = if index + 1 < timesteps.len() {
                scheduler.add_noise(image_latents, noise, index + 1)?
            } else {
                image_latents.clone()
            };
            let inverse = (1.0 - mask)?;
            latents = (kept.broadcast_mul(&inverse)? + mask.broadcast_mul(&latents)?)?;
        }
        let progress = StepProgress {
            step: done + 1,
            total,
            timestep: t,
            latents: &latents,
            predicted_original: &predicted_original,
        };
        if callback(&progress).is_break() {
            return Err(Error::Cancelled { step: done + 1 });
        }
    }
    Ok(latents)
}

/// x0 from the latents `x` at step `index` and the model's `prediction`, for any scheduler: its
/// `add_noise` at this step says how it mixes signal and noise (`x = a x0 + b ε`: a = √ᾱ,
/// b = √(1 - ᾱ) for DDIM-like schedulers, a = 1, b = σ for sigma ones), which gives the
/// variance-preserving coefficients α = a / √(a² + b²), σ = b / √(a² + b²) of `x / √(a² + b²)`.
pub fn predicted_original(
    scheduler: &dyn Scheduler,
    index: usize,
    x: &Tensor,
    prediction: &Tensor,
    prediction_type: PredictionType,
) -> Result<Tensor> {
    let device = x.device();
    let one = Tensor::ones(1, DType::F32, device)?;
    let zero = Tensor::zeros(1, DType::F32, device)?;
    let scalar = |t: Tensor| -> Result<f64> { Ok(f64::from(t.to_vec1::<f32>()?[0])) };
    let a = scalar(scheduler.add_noise(&one, &zero, index)?)?;
    let b = scalar(scheduler.add_noise(&zero, &one, index)?)?;
    let norm = (a * a + b * b).sqrt();
    let (alpha, sigma) = (a / norm, b / norm);
    let x_vp = x.to_dtype(DType::F32)?.affine(1.0 / norm, 0.0)?;
    let prediction = prediction.to_dtype(DType::F32)?;
    Ok(match prediction_type {
        PredictionType::Epsilon => ((x_vp - prediction.affine(sigma, 0.0)?)? / alpha)?,
        PredictionType::VPrediction => {
            (x_vp.affine(alpha, 0.0)? - prediction.affine(sigma, 0.0)?)?
        }
        PredictionType::Sample => prediction,
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use sd_scheduler::{SchedulerConfig, SchedulerKind};

    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        crate::test_util::seeded(shape, seed)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_util::max_abs_diff(a, b)
    }

    #[test]
    fn the_clean_latents_come_back_from_noised_ones_for_every_scheduler() {
        let x0 = seeded(&[1, 4, 8, 8], 1);
        let eps = seeded(&[1, 4, 8, 8], 2);
        let config = SchedulerConfig::default();
        for name in [
            "ddim",
            "ddpm",
            "pndm",
            "lms",
            "euler",
            "euler-ancestral",
            "heun",
            "dpm-solver++",
            "unipc",
        ] {
            let kind: SchedulerKind = name.parse().unwrap();
            let scheduler = sd_scheduler::build(kind, &config, 20).unwrap();
            for index in [0, 7, scheduler.timesteps().len() - 1] {
                let x = scheduler.add_noise(&x0, &eps, index).unwrap();
                let back = predicted_original(
                    scheduler.as_ref(),
                    index,
                    &x,
                    &eps,
                    PredictionType::Epsilon,
                )
                .unwrap();
                let d = max_diff(&back, &x0);
                assert!(d < 2e-3, "{name} at {index}: {d}");
            }
        }
    }

    #[test]
    fn v_prediction_and_sample_prediction_give_the_clean_latents() {
        let x0 = seeded(&[1, 4, 8, 8], 3);
        let eps = seeded(&[1, 4, 8, 8], 4);
        let scheduler = sd_scheduler::build(
            SchedulerKind::Ddim,
            &SchedulerConfig::sd2_v_prediction(),
            20,
        )
        .unwrap();
        let index = 5;
        let x = scheduler.add_noise(&x0, &eps, index).unwrap();
        // x = α x0 + σ ε with α² + σ² = 1, so v = α ε - σ x0.
        let one = Tensor::ones(1, DType::F32, &Device::Cpu).unwrap();
        let zero = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        let alpha = scheduler
            .add_noise(&one, &zero, index)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let sigma = (1.0 - alpha * alpha).sqrt();
        let v = ((&eps * f64::from(alpha)).unwrap() - (&x0 * f64::from(sigma)).unwrap()).unwrap();
        let back = predicted_original(
            scheduler.as_ref(),
            index,
            &x,
            &v,
            PredictionType::VPrediction,
        )
        .unwrap();
        assert!(max_diff(&back, &x0) < 1e-4);
        let same =
            predicted_original(scheduler.as_ref(), index, &x, &x0, PredictionType::Sample).unwrap();
        assert_eq!(max_diff(&same, &x0), 0.0);
    }
}
