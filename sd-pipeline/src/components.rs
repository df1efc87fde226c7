//! The three networks as object-safe traits, so a pipeline can run any text encoder, UNet or VAE
//! that speaks these shapes, and their implementations for `sd-clip`, `sd-unet` and `sd-vae`.

use candle_core::{DType, Tensor};
use sd_clip::ClipTextModel;
use sd_unet::UNet2DConditionModel;
use sd_vae::{AutoencoderKl, DiagonalGaussian, TileOptions};

use crate::error::{Error, Result};

/// Token ids to the hidden states the UNet attends to.
pub trait TextEncoder: Send + Sync {
    /// Encodes k windows of token ids (each the same length, usually 77) one by one and
    /// concatenates them along the sequence: `[1, k * len, hidden_size]` in f32.
    ///
    /// `clip_skip` is A1111's: 1 is the last layer, 2 the penultimate, and so on.
    fn encode(&self, windows: &[Vec<u32>], clip_skip: usize) -> Result<Tensor>;
}

/// The noise predictor (the UNet).
pub trait Denoiser: Send + Sync {
    /// Channels of the sample it takes: 4, or 9 for inpainting models (latents, mask, masked
    /// image latents).
    fn in_channels(&self) -> usize;

    /// Predicts the noise (or v, or x0: the scheduler config says) for `sample`
    /// `[B, in_channels, h, w]` at `timestep`, given `context` `[B, L, C]` and optional per-token
    /// cross-attention value weights `[B, L]`. Returns `[B, 4, h, w]` in f32.
    fn predict(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        token_weights: Option<&Tensor>,
    ) -> Result<Tensor>;
}

/// Images to latent distributions and latents back to images (the VAE).
pub trait Autoencoder: Send + Sync {
    /// The factor latents are multiplied by after encoding (SD 1.x / 2.x: 0.18215).
    fn scaling_factor(&self) -> f64;

    /// Images `[B, 3, H, W]` in [-1, 1] to the latent distribution (unscaled).
    fn encode(&self, image: &Tensor) -> Result<DiagonalGaussian>;

    /// Latents `[B, C, h, w]`, already divided by the scaling factor, to images `[B, 3, 8h, 8w]`
    /// in about [-1, 1], f32.
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;
}

impl TextEncoder for ClipTextModel {
    fn encode(&self, windows: &[Vec<u32>], clip_skip: usize) -> Result<Tensor> {
        let hidden = self
            .encode_windows(windows, clip_skip)
            .map_err(|e| Error::model("text_encoder", e))?;
        Ok(hidden.to_dtype(DType::F32)?)
    }
}

impl Denoiser for UNet2DConditionModel {
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }

    fn predict(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        token_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let out = self
            .forward_with_token_weights(sample, timestep, context, token_weights)
            .map_err(|e| Error::model("unet", e))?;
        Ok(out.to_dtype(DType::F32)?)
    }
}

/// An [`AutoencoderKl`] with an optional tiling plan for images larger than a tile.
pub struct Vae {
    model: AutoencoderKl,
    tiles: Option<TileOptions>,
}

impl Vae {
    /// Wraps `model`; with `tiled`, encode and decode run in overlapping tiles (diffusers'
    /// `enable_tiling()` defaults for the model's config) when the image exceeds one tile.
    pub fn new(model: AutoencoderKl, tiled: bool) -> Self {
        let tiles = tiled.then(|| TileOptions::for_config(model.config()));
        Self { model, tiles }
    }
}

impl Autoencoder for Vae {
    fn scaling_factor(&self) -> f64 {
        self.model.config().scaling_factor
    }

    fn encode(&self, image: &Tensor) -> Result<DiagonalGaussian> {
        let encoded = self
            .model
            .encode_with_status(image, self.tiles.as_ref())
            .map_err(|e| Error::model("vae", e))?;
        Ok(encoded.latent_dist)
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let decoded = self
            .model
            .decode_with_status(latents, self.tiles.as_ref())
            .map_err(|e| Error::model("vae", e))?;
        Ok(decoded.sample.to_dtype(DType::F32)?)
    }
}
