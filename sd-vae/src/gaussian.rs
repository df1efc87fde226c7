//! The encoder's output distribution.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// A diagonal Gaussian over latents, N(mean, diag(exp(logvar))), made from the encoder's moments.
///
/// As diffusers' `DiagonalGaussianDistribution`: the moments `[B, 2C, h, w]` split into mean and
/// log-variance along channels, the log-variance is clamped to [-30, 20] so that exp cannot
/// overflow or vanish, and std = exp(logvar / 2).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    mean: Tensor,
    logvar: Tensor,
    std: Tensor,
}

impl DiagonalGaussian {
    /// Splits `moments` `[B, 2C, h, w]` into the distribution's parameters.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let chunks = moments.chunk(2, 1)?;
        let [mean, logvar] = chunks.as_slice() else {
            return Err(Error::LatentShape {
                channels: 2,
                shape: moments.dims().to_vec(),
            });
        };
        let logvar = logvar.clamp(-30f32, 20f32)?;
        let std = (&logvar * 0.5)?.exp()?;
        Ok(Self {
            mean: mean.contiguous()?,
            logvar,
            std,
        })
    }

    /// The mean (also the mode): the deterministic latent.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The clamped log-variance.
    pub fn logvar(&self) -> &Tensor {
        &self.logvar
    }

    /// The standard deviation exp(logvar / 2).
    pub fn std(&self) -> &Tensor {
        &self.std
    }

    /// The variance exp(logvar).
    pub fn var(&self) -> Result<Tensor> {
        Ok(self.logvar.exp()?)
    }

    /// The mode, which for a Gaussian is the mean (diffusers' `mode()`).
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// A sample mean + std * noise, with `noise` ~ N(0, I) of the mean's shape drawn by the
    /// caller (so runs are reproducible); the noise is cast to the distribution's dtype.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::NoiseShape {
                expected: self.mean.dims().to_vec(),
                got: noise.dims().to_vec(),
            });
        }
        let noise = noise
            .to_dtype(self.mean.dtype())?
            .to_device(self.mean.device())?;
        Ok((&self.mean + (&self.std * noise)?)?)
    }
}
