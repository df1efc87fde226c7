//! TAESD, the tiny autoencoder, as a second decoder: for previews while a run denoises and, when
//! a request asks for it, for the final image. It decodes 512² in a fraction of the full VAE's
//! time at lower quality; the published weights (`madebyollin/taesd`, or A1111's
//! `taesd_decoder.pth`) share SD 1.x / 2.x's latent space.
//!
//! TAESD works on the latents the UNet sees: diffusers' pipelines divide by its
//! `scaling_factor`, 1, where the full VAE divides by 0.18215.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use sd_checkpoint::TaesdWeights;
use sd_vae::AutoencoderTiny;

use crate::error::{Error, Result};
use crate::image::tensor_to_images;

/// Which network turns the final latents into the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatentDecoder {
    /// The model's own VAE (full quality).
    #[default]
    Vae,
    /// The TAESD loaded with
    /// [`StableDiffusionBuilder::taesd`](crate::StableDiffusionBuilder::taesd).
    Taesd,
}

/// A loaded TAESD.
pub struct Taesd {
    model: AutoencoderTiny,
    files: Vec<PathBuf>,
    device: Device,
}

impl Taesd {
    /// Reads a TAESD folder or file in any layout [`TaesdWeights`] knows and builds it in
    /// `dtype` on `device`. It must have a decoder.
    pub fn open(path: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let weights = TaesdWeights::open(path)?;
        if !weights.has_decoder() {
            return Err(Error::model(
                "taesd",
                format!(
                    "{}: holds only an encoder; previews and decoding need taesd_decoder",
                    path.display()
                ),
            ));
        }
        let vb = VarBuilder::from_tensors(weights.tensors, dtype, device);
        let model = AutoencoderTiny::new(&weights.config, vb)
            .map_err(|e| Error::model("taesd", format!("{}: {e}", path.display())))?;
        Ok(Self {
            model,
            files: weights.files,
            device: device.clone(),
        })
    }

    /// The files it was read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The network.
    pub fn model(&self) -> &AutoencoderTiny {
        &self.model
    }

    /// 8-bit images of `latents` `[B, 4, h, w]` as the UNet sees them (unscaled, as
    /// [`StepProgress`](crate::StepProgress) gives them and the sampler ends with).
    pub fn decode(&self, latents: &Tensor) -> Result<Vec<RgbImage>> {
        let scale = self.model.config().scaling_factor;
        let latents = (latents.to_device(&self.device)? / scale)?;
        let images = self
            .model
            .decode(&latents)
            .map_err(|e| Error::model("taesd", e))?;
        tensor_to_images(&images)
    }
}
