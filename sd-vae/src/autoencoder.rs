//! `AutoencoderKl`: encoder + `quant_conv` to a latent distribution, `post_quant_conv` + decoder
//! back to pixels, optionally tiled, with the f16 overflow fallback.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::Conv2d;

use crate::config::AutoencoderKlConfig;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::Result;
use crate::gaussian::DiagonalGaussian;
use crate::loader::{mmap_var_builder, precise};
use crate::shapes::{check_image, check_latents};
use crate::tiling::TileOptions;
use crate::upcast::{all_finite, F32Fallback, Recorder};

/// The Stable Diffusion VAE (diffusers' `AutoencoderKL`), in the dtype of its `VarBuilder`.
pub struct AutoencoderKl {
    config: AutoencoderKlConfig,
    encode: EncodePath,
    decode: DecodePath,
    dtype: DType,
    device: Device,
    fallback: Option<F32Fallback>,
}

/// What [`AutoencoderKl::decode_with_status`] returns.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The image `[B, out_channels, H, W]`, nominally in [-1, 1], in the model's dtype.
    pub sample: Tensor,
    /// True when the half-precision pass overflowed (inf / NaN) and the image, or at least one
    /// tile of it, was decoded again in f32.
    pub upcast_to_f32: bool,
}

/// What [`AutoencoderKl::encode_with_status`] returns.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The latent distribution.
    pub latent_dist: DiagonalGaussian,
    /// True when the half-precision pass overflowed and was redone in f32.
    pub upcast_to_f32: bool,
}

/// Whether a model computing in `dtype` keeps the f32 overflow fallback: f16 only. bf16 has
/// f32's exponent range, so a pass that overflows in bf16 overflows in f32 as well; and the
/// kept weights would be a second copy wherever the layers pack their own (sd-kernels' CPU
/// convolutions): 160 MB of an SD 1.5 VAE, which a 512² bf16 text-to-image run's peak memory
/// does not have to spare.
fn has_fallback(dtype: DType) -> bool {
    dtype == DType::F16
}

impl AutoencoderKl {
    /// Builds the model from diffusers-named weights (`encoder.*`, `decoder.*`, `quant_conv.*`,
    /// `post_quant_conv.*`) in `vb`'s dtype and device.
    ///
    /// For f16 the loaded weights are remembered (sharing their storage) so that an
    /// overflowing pass can be redone with them upcast to f32, as diffusers' `upcast_vae` does.
    /// bf16 keeps no such fallback: it has f32's exponent range.
    pub fn new(config: &AutoencoderKlConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        if !has_fallback(vb.dtype()) {
            return Self::build(config, vb, None);
        }
        let (recording, seen) = Recorder::wrap(vb.clone());
        let mut model = Self::build(config, recording, None)?;
        let tensors = seen.lock().map(|m| m.clone()).unwrap_or_default();
        let source = VarBuilder::from_tensors(tensors, DType::F32, vb.device());
        model.fallback = Some(F32Fallback::new(source));
        Ok(model)
    }

    /// Memory-maps safetensors files (e.g. `vae/diffusion_pytorch_model.safetensors`) and builds
    /// the model in `dtype` on `device`. Errors name the missing / misshapen / non-float tensor
    /// and its file. For f16 the f32 fallback re-reads the files, so it sees the weights at
    /// their stored precision.
    pub fn from_safetensors(
        config: &AutoencoderKlConfig,
        paths: &[impl AsRef<Path>],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (vb, slot) = mmap_var_builder(paths, dtype, device)?;
        let fallback = has_fallback(dtype).then(|| F32Fallback::new(vb.clone()));
        Self::build(config, vb, fallback).map_err(|e| precise(e, &slot))
    }

    fn build(
        config: &AutoencoderKlConfig,
        vb: VarBuilder,
        fallback: Option<F32Fallback>,
    ) -> Result<Self> {
        Ok(Self {
            config: config.clone(),
            encode: EncodePath::new(config, vb.clone())?,
            decode: DecodePath::new(config, vb.clone())?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            fallback,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderKlConfig {
        &self.config
    }

    /// The compute dtype (that of the weights).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes images `[B, in_channels, H, W]` in [-1, 1] (H, W multiples of 8 for SD) to the
    /// latent distribution; multiply a sample by `scaling_factor` before the UNet.
    pub fn encode(&self, image: &Tensor) -> Result<DiagonalGaussian> {
        Ok(self.encode_with_status(image, None)?.latent_dist)
    }

    /// [`encode`](Self::encode) in overlapping tiles when the image is larger than a tile.
    pub fn tiled_encode(&self, image: &Tensor, tiles: &TileOptions) -> Result<DiagonalGaussian> {
        Ok(self.encode_with_status(image, Some(tiles))?.latent_dist)
    }

    /// Encodes, tiled when `tiles` is given and the image exceeds a tile (as diffusers with
    /// `enable_tiling()`), and says whether an f16 overflow forced an f32 pass.
    pub fn encode_with_status(
        &self,
        image: &Tensor,
        tiles: Option<&TileOptions>,
    ) -> Result<Encoded> {
        self.check_image(image)?;
        let compute = sd_kernels::nn::compute_dtype(self.dtype, &self.device);
        let image = image.to_dtype(compute)?.to_device(&self.device)?;
        let (_, _, h, w) = image.dims4()?;
        let mut upcast = false;
        let moments = match tiles {
            Some(opts) if h > opts.sample_size || w > opts.sample_size => {
                opts.validate()?;
                opts.encode_plan()
                    .run(&image, |tile| self.encode_checked(tile, &mut upcast))?
            }
            _ => self.encode_checked(&image, &mut upcast)?,
        };
        let moments = moments.to_dtype(self.dtype)?;
        Ok(Encoded {
            latent_dist: DiagonalGaussian::from_moments(&moments)?,
            upcast_to_f32: upcast,
        })
    }

    /// Decodes latents `[B, latent_channels, h, w]`, already divided by `scaling_factor`, to
    /// images `[B, out_channels, 8h, 8w]` in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.decode_with_status(latents, None)?.sample)
    }

    /// [`decode`](Self::decode) in overlapping tiles when the latents are larger than a tile.
    pub fn tiled_decode(&self, latents: &Tensor, tiles: &TileOptions) -> Result<Tensor> {
        Ok(self.decode_with_status(latents, Some(tiles))?.sample)
    }

    /// Decodes, tiled when `tiles` is given and the latents exceed a tile (as diffusers with
    /// `enable_tiling()`), and says whether an f16 overflow forced an f32 pass.
    pub fn decode_with_status(
        &self,
        latents: &Tensor,
        tiles: Option<&TileOptions>,
    ) -> Result<Decoded> {
        check_latents(latents, self.config.latent_channels)?;
        let (_, _, h, w) = latents.dims4()?;
        // Activations run in f32 on the CPU fast path (bf16 weights too); the image comes back
        // in the model's dtype.
        let compute = sd_kernels::nn::compute_dtype(self.dtype, &self.device);
        let latents = latents.to_dtype(compute)?.to_device(&self.device)?;
        let mut upcast = false;
        let sample = match tiles {
            Some(opts) if h > opts.latent_size || w > opts.latent_size => {
                opts.validate()?;
                opts.decode_plan()
                    .run(&latents, |tile| self.decode_checked(tile, &mut upcast))?
            }
            _ => self.decode_checked(&latents, &mut upcast)?,
        };
        Ok(Decoded {
            sample: sample.to_dtype(self.dtype)?,
            upcast_to_f32: upcast,
        })
    }

    fn encode_checked(&self, image: &Tensor, upcast: &mut bool) -> Result<Tensor> {
        let moments = self.encode.forward(image)?;
        match &self.fallback {
            Some(fallback) if !all_finite(&moments)? => {
                let path = fallback.encode_path(&self.config)?;
                *upcast = true;
                Ok(path
                    .forward(&image.to_dtype(DType::F32)?)?
                    .to_dtype(image.dtype())?)
            }
            _ => Ok(moments),
        }
    }

    fn decode_checked(&self, latents: &Tensor, upcast: &mut bool) -> Result<Tensor> {
        let image = self.decode.forward(latents)?;
        match &self.fallback {
            Some(fallback) if !all_finite(&image)? => {
                let path = fallback.decode_path(&self.config)?;
                *upcast = true;
                Ok(path
                    .forward(&latents.to_dtype(DType::F32)?)?
                    .to_dtype(latents.dtype())?)
            }
            _ => Ok(image),
        }
    }

    fn check_image(&self, image: &Tensor) -> Result<()> {
        check_image(
            image,
            self.config.in_channels,
            self.config.downsample_factor(),
        )
    }
}

/// Encoder then `quant_conv`: image to moments.
pub(crate) struct EncodePath {
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
}

impl EncodePath {
    pub(crate) fn new(config: &AutoencoderKlConfig, vb: VarBuilder) -> Result<Self> {
        let moments = 2 * config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            let cfg = Conv2dConfig::default();
            Some(Conv2d::new(moments, moments, 1, cfg, vb.pp("quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            quant_conv,
        })
    }

    pub(crate) fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let h = self.encoder.forward(image)?;
        Ok(match &self.quant_conv {
            Some(conv) => conv.forward(&h)?,
            None => h,
        })
    }
}

/// `post_quant_conv` then decoder: latents to image.
pub(crate) struct DecodePath {
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
}

impl DecodePath {
    pub(crate) fn new(config: &AutoencoderKlConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.latent_channels;
        let post_quant_conv = if config.use_post_quant_conv {
            let cfg = Conv2dConfig::default();
            Some(Conv2d::new(c, c, 1, cfg, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            post_quant_conv,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
        })
    }

    pub(crate) fn forward(&self, latents: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        self.decoder.forward(&z)
    }
}
