//! TAESD: diffusers' `AutoencoderTiny`, a ~1 M-parameter autoencoder trained to match the SD VAE's
//! latent space. It decodes in a small fraction of the full VAE's time, which makes it the usual
//! choice for live previews (A1111, ComfyUI, stable-diffusion.cpp) and for fast final decodes.
//!
//! Both halves are plain stacks (`encoder.layers.N`, `decoder.layers.N`, numbered as diffusers'
//! `nn.Sequential`) of 3x3 convolutions and residual blocks, with no normalisation and no
//! attention:
//!
//! - encoder: image in [-1, 1] → [0, 1] → conv → blocks → (stride-2 conv → blocks) × 3 → conv →
//!   latents;
//! - decoder: latents → `3 · tanh(x / 3)` (a soft clamp) → conv → ReLU → (blocks → upsample ×2 →
//!   conv) × 3 → blocks → conv → [0, 1] → [-1, 1].
//!
//! A block is `ReLU(conv(act(conv(act(conv(x))))) + x)`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::activation::Activation;
use crate::conv::Conv2d;
use crate::error::{Error, Result};
use crate::loader::{mmap_var_builder, precise};
use crate::shapes::{check_image, check_latents};
use crate::tiny_config::AutoencoderTinyConfig;

/// The tiny autoencoder, with either half optional (TAESD is often shipped as a decoder alone).
pub struct AutoencoderTiny {
    config: AutoencoderTinyConfig,
    encoder: Option<Stack>,
    decoder: Option<Stack>,
    dtype: DType,
    device: Device,
}

impl AutoencoderTiny {
    /// Builds the halves whose weights `vb` holds (diffusers names: `encoder.layers.*`,
    /// `decoder.layers.*`), in `vb`'s dtype and device. With neither present, the error names
    /// the decoder's first missing tensor.
    pub fn new(config: &AutoencoderTinyConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let has = |half: &str| vb.contains_tensor(&format!("{half}.layers.0.weight"));
        let encoder = has("encoder")
            .then(|| Stack::encoder(config, vb.pp("encoder").pp("layers")))
            .transpose()?;
        let decoder = if has("decoder") || encoder.is_none() {
            Some(Stack::decoder(config, vb.pp("decoder").pp("layers"))?)
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Memory-maps safetensors files in diffusers naming (`diffusion_pytorch_model.safetensors`
    /// of a diffusers `AutoencoderTiny` folder) and builds the model in `dtype` on `device`.
    /// Errors name the missing / misshapen tensor and its file.
    pub fn from_safetensors(
        config: &AutoencoderTinyConfig,
        paths: &[impl AsRef<Path>],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (vb, slot) = mmap_var_builder(paths, dtype, device)?;
        Self::new(config, vb).map_err(|e| precise(e, &slot))
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderTinyConfig {
        &self.config
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the encoder's weights were loaded.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Whether the decoder's weights were loaded.
    pub fn has_decoder(&self) -> bool {
        self.decoder.is_some()
    }

    /// Encodes images `[B, in_channels, H, W]` in [-1, 1] (H, W multiples of 8) to latents
    /// `[B, latent_channels, H/8, W/8]` (multiply by `scaling_factor`, 1 for TAESD, before the
    /// UNet). Deterministic: there is no distribution to sample.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        let encoder = self
            .encoder
            .as_ref()
            .ok_or(Error::MissingHalf { half: "encoder" })?;
        check_image(
            image,
            self.config.in_channels,
            self.config.downsample_factor(),
        )?;
        let x = self.to_compute(image)?;
        // TAESD works on images in [0, 1].
        let x = ((x + 1.0)? * 0.5)?;
        Ok(encoder.forward(&x)?.to_dtype(self.dtype)?)
    }

    /// Decodes latents `[B, latent_channels, h, w]`, already divided by `scaling_factor`, to
    /// images `[B, out_channels, 8h, 8w]` in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let decoder = self
            .decoder
            .as_ref()
            .ok_or(Error::MissingHalf { half: "decoder" })?;
        check_latents(latents, self.config.latent_channels)?;
        let z = self.to_compute(latents)?;
        let z = ((z / 3.0)?.tanh()? * 3.0)?;
        let image = decoder.forward(&z)?;
        // From TAESD's [0, 1] to diffusers' [-1, 1].
        Ok(((image * 2.0)? - 1.0)?.to_dtype(self.dtype)?)
    }

    fn to_compute(&self, x: &Tensor) -> Result<Tensor> {
        // Activations run in f32 on the CPU fast path, bf16 weights included.
        let compute = sd_kernels::nn::compute_dtype(self.dtype, &self.device);
        Ok(x.to_dtype(compute)?.to_device(&self.device)?)
    }
}

/// One entry of a half's `nn.Sequential`.
enum Layer {
    Conv(Conv2d),
    Act(Activation),
    Block(Box<Block>),
    Upsample(usize),
}

/// `ReLU(conv(act(conv(act(conv(x))))) + x)`: diffusers' `AutoencoderTinyBlock` with equal
/// input and output widths (its skip is then the identity).
struct Block {
    convs: [Conv2d; 3],
    act: Activation,
}

impl Block {
    fn new(channels: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        let conv = |i: usize| conv3(channels, channels, 1, true, vb.pp("conv").pp(i));
        Ok(Self {
            convs: [conv(0)?, conv(2)?, conv(4)?],
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.act.forward(&self.convs[0].forward(x)?)?;
        let h = self.act.forward(&self.convs[1].forward(&h)?)?;
        Ok(self.convs[2].forward_residual(&h, x)?.relu()?)
    }
}

/// A 3x3 convolution with padding 1.
fn conv3(cin: usize, cout: usize, stride: usize, bias: bool, vb: VarBuilder) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    if bias {
        Conv2d::new(cin, cout, 3, config, vb)
    } else {
        Conv2d::no_bias(cin, cout, 3, config, vb)
    }
}

/// A half: its layers in `nn.Sequential` order, each loaded under its index.
struct Stack(Vec<Layer>);

impl Stack {
    fn encoder(config: &AutoencoderTinyConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&config.act_fn)?;
        let c = config.encoder_block_out_channels[0];
        let mut layers = Vec::new();
        for (level, &blocks) in config.num_encoder_blocks.iter().enumerate() {
            let conv = if level == 0 {
                conv3(config.in_channels, c, 1, true, vb.pp(layers.len()))?
            } else {
                conv3(c, c, 2, false, vb.pp(layers.len()))?
            };
            layers.push(Layer::Conv(conv));
            for _ in 0..blocks {
                layers.push(Layer::Block(Box::new(Block::new(
                    c,
                    act,
                    vb.pp(layers.len()),
                )?)));
            }
        }
        let out = conv3(c, config.latent_channels, 1, true, vb.pp(layers.len()))?;
        layers.push(Layer::Conv(out));
        Ok(Self(layers))
    }

    fn decoder(config: &AutoencoderTinyConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&config.act_fn)?;
        let c = config.decoder_block_out_channels[0];
        let mut layers = vec![
            Layer::Conv(conv3(config.latent_channels, c, 1, true, vb.pp(0))?),
            Layer::Act(act),
        ];
        let levels = config.num_decoder_blocks.len();
        for (level, &blocks) in config.num_decoder_blocks.iter().enumerate() {
            for _ in 0..blocks {
                layers.push(Layer::Block(Box::new(Block::new(
                    c,
                    act,
                    vb.pp(layers.len()),
                )?)));
            }
            let last = level + 1 == levels;
            if !last {
                layers.push(Layer::Upsample(config.upsampling_scaling_factor));
            }
            let cout = if last { config.out_channels } else { c };
            layers.push(Layer::Conv(conv3(c, cout, 1, last, vb.pp(layers.len()))?));
        }
        Ok(Self(layers))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.0 {
            x = match layer {
                Layer::Conv(conv) => conv.forward(&x)?,
                Layer::Act(act) => act.forward(&x)?,
                Layer::Block(block) => block.forward(&x)?,
                Layer::Upsample(factor) => {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * factor, w * factor)?
                }
            };
        }
        Ok(x)
    }
}
