//! Several text-to-image requests through the UNet together: the frames of a walk, the cells of
//! a grid. Requests that differ only in their seed, prompts, start noise and conditioning are
//! stacked into one batch (`[uncond × n; cond × n]`, each row its own request's), so one UNet
//! call serves `n` images. This is exact only when the sampler draws no noise after the start
//! (a batch shares one generator's later draws), so with Euler a, DDPM or DDIM with eta > 0
//! the requests run one by one.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::conditioning::Conditioning;
use crate::error::Result;
use crate::infotext::Infotext;
use crate::request::GenerateRequest;
use crate::rng::TorchRng;
use crate::stable_diffusion::{StableDiffusion, VAE_SCALE};

/// What one request of [`generate_batched`] made.
#[derive(Debug, Clone)]
pub struct BatchedImage {
    /// The image.
    pub image: RgbImage,
    /// Its A1111 parameters (its own prompt and seed).
    pub infotext: Infotext,
}

/// Makes one image per request, in order, batching up to `max_batch` consecutive requests
/// that can share a UNet batch (see the module docs); `done(images made, total)` follows
/// progress. With `max_batch` 1, or a sampler that draws noise while denoising, this is
/// [`StableDiffusion::generate`] for each request in turn. Batched images match the unbatched
/// ones within a level (the sums of a larger batch round differently).
pub fn generate_batched(
    sd: &StableDiffusion,
    requests: &[GenerateRequest],
    max_batch: usize,
    done: &mut dyn FnMut(usize, usize),
) -> Result<Vec<BatchedImage>> {
    let total = requests.len();
    let mut out = Vec::with_capacity(total);
    let batching = max_batch > 1 && !requests.is_empty() && !draws_noise(sd, &requests[0])?;
    let mut start = 0;
    while start < total {
        let mut end = start + 1;
        if batching {
            while end < total
                && end - start < max_batch
                && compatible(&requests[start], &requests[end])
            {
                end += 1;
            }
        }
        out.extend(generate_together(sd, &requests[start..end])?);
        done(out.len(), total);
        start = end;
    }
    Ok(out)
}

/// Whether `request`'s sampler draws noise after the start.
fn draws_noise(sd: &StableDiffusion, request: &GenerateRequest) -> Result<bool> {
    let kind = request.scheduler.unwrap_or(sd.default_scheduler());
    let scheduler = sd_scheduler::build(kind, sd.scheduler_config(), request.steps)?;
    Ok((0..scheduler.timesteps().len()).any(|i| scheduler.noise_needed(i)))
}

/// Whether a request can join a batch at all: text-to-image, one image, no per-token weights,
/// no `<lora:…>` tags (a batch applies one request's LoRA choice to all).
fn batchable(r: &GenerateRequest) -> bool {
    r.init.is_none()
        && r.batch_size == 1
        && r.conditioning
            .as_ref()
            .is_none_or(|c| c.token_weights.is_none())
        && !r.prompt.contains("<lora:")
        && !r.negative_prompt.contains("<lora:")
}

/// Whether `a` and `b` differ only in what a batch can hold per image.
fn compatible(a: &GenerateRequest, b: &GenerateRequest) -> bool {
    batchable(a)
        && batchable(b)
        && a.steps == b.steps
        && a.guidance_scale.to_bits() == b.guidance_scale.to_bits()
        && a.guidance == b.guidance
        && a.width == b.width
        && a.height == b.height
        && a.scheduler == b.scheduler
        && a.emphasis == b.emphasis
        && a.decoder == b.decoder
}

/// Runs `requests` (one, or several [`compatible`] ones) as one generation.
fn generate_together(
    sd: &StableDiffusion,
    requests: &[GenerateRequest],
) -> Result<Vec<BatchedImage>> {
    if let [one] = requests {
        let mut generated = sd.generate_simple(one)?;
        return Ok(vec![BatchedImage {
            image: generated.images.remove(0),
            infotext: generated.infotexts.remove(0),
        }]);
    }
    let first = &requests[0];
    let (width, height) = first.size(sd.sample_size())?;
    let shape = [1, 4, height / VAE_SCALE, width / VAE_SCALE];
    let mut noises = Vec::with_capacity(requests.len());
    let mut contexts = Vec::with_capacity(requests.len());
    for r in requests {
        noises.push(match &r.start_noise {
            Some(noise) => noise.to_dtype(DType::F32)?,
            // The seed's first draw, as `generate` makes it.
            None => TorchRng::new(r.seed).randn_tensor(&shape, &Device::Cpu, DType::F32)?,
        });
        contexts.push(match &r.conditioning {
            Some(given) => given.context.clone(),
            None => sd.encode(r)?.context,
        });
    }
    let rows = contexts[0].dim(0)?;
    if contexts.iter().any(|c| c.dims() != contexts[0].dims()) {
        // Prompts of different 77-token window counts cannot stack.
        return requests
            .iter()
            .map(|r| Ok(generate_together(sd, std::slice::from_ref(r))?.remove(0)))
            .collect();
    }
    // Each request's rows are [uncond; cond] (guided) or [cond]: stack all the uncond rows,
    // then all the cond rows.
    let mut stacked = Vec::with_capacity(rows * contexts.len());
    for row in 0..rows {
        for c in &contexts {
            stacked.push(c.narrow(0, row, 1)?);
        }
    }
    let batch = GenerateRequest {
        batch_size: requests.len(),
        start_noise: Some(Tensor::cat(&noises, 0)?),
        conditioning: Some(Conditioning {
            context: Tensor::cat(&stacked, 0)?,
            token_weights: None,
        }),
        ..first.clone()
    };
    let guided = first.guidance.uses_uncond(first.guidance_scale);
    let generated = sd.generate_simple(&batch)?;
    Ok(generated
        .images
        .into_iter()
        .zip(generated.infotexts)
        .zip(requests)
        .map(|((image, mut infotext), r)| {
            // The batch's parameters are the first request's: each image gets its own.
            infotext.prompt = r.prompt.clone();
            if guided {
                infotext.negative_prompt = r.negative_prompt.clone();
            }
            infotext.seed = r.seed;
            infotext.batch_position = None;
            BatchedImage { image, infotext }
        })
        .collect())
}
