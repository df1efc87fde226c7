//! The sampling loop: at each step, one batched UNet call, classifier-free guidance, one
//! scheduler step (with the step's noise drawn from the run's generator), and for inpainting
//! with a plain model the latent mask blend.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use sd_scheduler::Scheduler;

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
    /// The latents after this step `[B, 4, h, w]` (for previews).
    pub latents: &'a Tensor,
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
        };
        if callback(&progress).is_break() {
            return Err(Error::Cancelled { step: done + 1 });
        }
    }
    Ok(latents)
}
