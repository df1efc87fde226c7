//! Previews of latents while a run denoises: the cheap linear projection of the 4 latent
//! channels to RGB (no network, microseconds), or the full VAE decode
//! ([`StableDiffusion::decode_latents`](crate::StableDiffusion::decode_latents)).
//!
//! Show a step's [`predicted_original`](crate::StepProgress::predicted_original) (x0), not
//! its noisy latents: x0 is what the image would be if the run stopped there.
//!
//! ```
//! use std::ops::ControlFlow;
//! use sd_pipeline::{preview, GenerateRequest, LatentDecoder, StableDiffusion};
//!
//! # fn main() -> sd_pipeline::Result<()> {
//! // Tiny random-weight fixtures; TAESD previews need `.taesd(path)`.
//! let sd = StableDiffusion::builder("../fixtures/pipeline/tiny-sd1")
//!     .taesd("../fixtures/vae/taesd")
//!     .build()?;
//! let request = GenerateRequest {
//!     steps: 4,
//!     scheduler: Some("euler".parse()?), // 4 model calls (PNDM would make 5)
//!     ..GenerateRequest::new("a photo of a cat")
//! };
//! let mut frames = Vec::new();
//! sd.generate(&request, &mut |step| {
//!     let x0 = &step.predicted_original;
//!     frames.push(preview::latent_to_rgb(x0).unwrap().remove(0));
//!     frames.push(sd.decode_latents_with(x0, LatentDecoder::Taesd).unwrap().remove(0));
//!     ControlFlow::Continue(())
//! })?;
//! assert_eq!(frames.len(), 8);
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::stable_diffusion::VAE_SCALE;

/// RGB from SD 1.x / 2.x latent channels (the same latent space): `rgb[k] = Σ_c latent[c] ·
/// FACTORS[c][k]`, in [-1, 1]. The least-squares fit ComfyUI publishes for SD 1.5's latents.
pub const LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// One image per batch entry of `latents` `[B, 4, h, w]`, projected to RGB and shown at the
/// output size (each latent cell as an 8 x 8 block), so a preview lines up with the final image.
///
/// # Errors
/// When `latents` is not `[B, 4, h, w]`.
pub fn latent_to_rgb(latents: &Tensor) -> Result<Vec<RgbImage>> {
    let (batch, channels, h, w) = latents.dims4()?;
    if channels != 4 {
        return Err(Error::model(
            "preview",
            format!("latents have {channels} channels; SD 1.x / 2.x have 4"),
        ));
    }
    let values: Vec<f32> = latents.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = h * w;
    let mut images = Vec::with_capacity(batch);
    for b in 0..batch {
        let latent = &values[b * 4 * plane..(b + 1) * 4 * plane];
        let mut image = RgbImage::new((w * VAE_SCALE) as u32, (h * VAE_SCALE) as u32);
        for y in 0..h {
            for x in 0..w {
                let mut rgb = [0f32; 3];
                for (c, factors) in LATENT_RGB_FACTORS.iter().enumerate() {
                    let v = latent[c * plane + y * w + x];
                    for (out, f) in rgb.iter_mut().zip(factors) {
                        *out += v * f;
                    }
                }
                let pixel =
                    image::Rgb(rgb.map(|v| (((v + 1.0) * 127.5).round()).clamp(0.0, 255.0) as u8));
                for dy in 0..VAE_SCALE {
                    for dx in 0..VAE_SCALE {
                        image.put_pixel(
                            (x * VAE_SCALE + dx) as u32,
                            (y * VAE_SCALE + dy) as u32,
                            pixel,
                        );
                    }
                }
            }
        }
        images.push(image);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn each_cell_is_the_projection_of_its_channels() {
        // Cell (0, 0): only channel 0 at 1 -> its factor row; cell (0, 1): all zero -> mid grey.
        let mut v = vec![0f32; 2 * 4 * 2];
        v[0] = 1.0;
        let latents = Tensor::from_vec(v, (2, 4, 1, 2), &Device::Cpu).unwrap();
        let images = latent_to_rgb(&latents).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].dimensions(), (16, 8));
        let expect = LATENT_RGB_FACTORS[0].map(|f| ((f + 1.0) * 127.5).round() as u8);
        assert_eq!(images[0].get_pixel(7, 7).0, expect);
        assert_eq!(images[0].get_pixel(8, 0).0, [128, 128, 128]);
        assert_eq!(images[1].get_pixel(0, 0).0, [128, 128, 128]);
        let wrong = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(latent_to_rgb(&wrong).is_err());
    }
}
