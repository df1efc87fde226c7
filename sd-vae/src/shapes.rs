//! The input checks both autoencoders make before running.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// `image` must be `[B >= 1, channels, H, W]` with H and W positive multiples of `multiple`.
pub(crate) fn check_image(image: &Tensor, channels: usize, multiple: usize) -> Result<()> {
    let err = || Error::ImageShape {
        channels,
        multiple,
        shape: image.dims().to_vec(),
    };
    let (b, c, h, w) = image.dims4().map_err(|_| err())?;
    let fits = |n: usize| n > 0 && n.is_multiple_of(multiple);
    if b == 0 || c != channels || !fits(h) || !fits(w) {
        return Err(err());
    }
    Ok(())
}

/// `latents` must be `[B >= 1, channels, h >= 1, w >= 1]`.
pub(crate) fn check_latents(latents: &Tensor, channels: usize) -> Result<()> {
    let err = || Error::LatentShape {
        channels,
        shape: latents.dims().to_vec(),
    };
    let (b, c, h, w) = latents.dims4().map_err(|_| err())?;
    if b == 0 || c != channels || h == 0 || w == 0 {
        return Err(err());
    }
    Ok(())
}
