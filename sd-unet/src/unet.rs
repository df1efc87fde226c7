//! `UNet2DConditionModel`: time embedding, `conv_in`, down blocks, mid block, up blocks over the
//! skip connections, `conv_norm_out` / act / `conv_out`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::attention::AttentionMode;
use crate::config::{DownBlockType, UNet2DConditionConfig, UpBlockType};
use crate::down_block::{DownBlock, DownBlockShape};
use crate::error::{Error, Result};
use crate::layers::{norm_act_conv, Conv2d, GroupNorm};
use crate::mid_block::MidBlock;
use crate::resnet::ResnetSettings;
use crate::timestep_embedding::TimestepEmbedding;
use crate::transformer::TransformerSettings;
use crate::up_block::{UpBlock, UpBlockShape};

/// The denoising UNet of Stable Diffusion 1.x / 2.x, in diffusers' layout and weight names.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    mode: AttentionMode,
    dtype: DType,
    device: Device,
}

impl UNet2DConditionModel {
    /// Builds the model from `config` with weights from `vb` (diffusers names, e.g.
    /// `down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight`). The model computes
    /// in `vb`'s dtype.
    pub fn new(config: &UNet2DConditionConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let c = config;
        let n = c.block_out_channels.len();
        let heads = c.heads()?;
        let depth = c.transformer_layers()?;
        let boc = &c.block_out_channels;
        let temb_dim = c.time_embed_dim();
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let resnet = ResnetSettings {
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            temb_channels: temb_dim,
            act: c.act_fn,
            output_scale_factor: 1.0,
        };
        let transformer = |i: usize| TransformerSettings {
            heads: heads[i],
            layers: depth[i],
            cross_attention_dim: c.cross_attention_dim,
            groups: c.norm_num_groups,
            use_linear_projection: c.use_linear_projection,
            upcast_attention: c.upcast_attention,
        };

        let time_embedding = TimestepEmbedding::new(
            boc[0],
            temb_dim,
            c.act_fn,
            c.flip_sin_to_cos,
            c.freq_shift,
            vb.pp("time_embedding"),
        )?;
        let conv_in = Conv2d::new(c.in_channels, boc[0], 3, same, vb.pp("conv_in"))?;

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let shape = DownBlockShape {
                in_channels: if i == 0 { boc[0] } else { boc[i - 1] },
                out_channels: boc[i],
                layers: c.layers_per_block,
                downsample_padding: (i + 1 < n).then_some(c.downsample_padding),
            };
            let t = (*kind == DownBlockType::CrossAttnDownBlock2D).then(|| transformer(i));
            down_blocks.push(DownBlock::new(
                shape,
                resnet,
                t,
                vb.pp("down_blocks").pp(i),
            )?);
        }

        let mid_resnet = ResnetSettings {
            output_scale_factor: c.mid_block_scale_factor,
            ..resnet
        };
        let mid_block = MidBlock::new(
            boc[n - 1],
            mid_resnet,
            transformer(n - 1),
            vb.pp("mid_block"),
        )?;

        let mut up_blocks = Vec::with_capacity(n);
        for (i, kind) in c.up_block_types.iter().enumerate() {
            // Up block i mirrors down block n-1-i (reversed channels, heads and depths).
            let mirror = n - 1 - i;
            let shape = UpBlockShape {
                in_channels: boc[mirror.saturating_sub(1)],
                prev_output_channels: boc[(mirror + 1).min(n - 1)],
                out_channels: boc[mirror],
                layers: c.layers_per_block + 1,
                add_upsample: i + 1 < n,
            };
            let t = (*kind == UpBlockType::CrossAttnUpBlock2D).then(|| transformer(mirror));
            up_blocks.push(UpBlock::new(shape, resnet, t, vb.pp("up_blocks").pp(i))?);
        }

        Ok(Self {
            config: config.clone(),
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                c.norm_num_groups,
                boc[0],
                c.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: Conv2d::new(boc[0], c.out_channels, 3, same, vb.pp("conv_out"))?,
            mode: AttentionMode::default(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The attention backend in use ([`AttentionMode::Fused`] unless set otherwise).
    pub fn attention_mode(&self) -> AttentionMode {
        self.mode
    }

    /// Selects the attention backend for later forwards (see [`AttentionMode`]).
    pub fn set_attention_mode(&mut self, mode: AttentionMode) {
        self.mode = mode;
    }

    /// Predicts the noise (or v) for `sample` `[B, in_channels, h, w]` at `timestep`, conditioned
    /// on `encoder_hidden_states` `[B, L, cross_attention_dim]`. Returns `[B, out_channels, h, w]`
    /// in the model's dtype. Any h, w >= 1 works (latents of any multiple of 8 pixels).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_token_weights(sample, timestep, encoder_hidden_states, None)
    }

    /// [`forward`](Self::forward) with optional per-token weights `[B, L]` that scale the
    /// cross-attention values of each text token (sd-fused emphasis; see [`crate::attention`]).
    pub fn forward_with_token_weights(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        token_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, h, w) =
            self.check_inputs(sample, timestep, encoder_hidden_states, token_weights)?;
        // Activations flow in f32 on the CPU fast path (bf16 weights included), else in the
        // weights' dtype; the result comes back in the model's dtype either way.
        let compute = sd_kernels::nn::compute_dtype(self.dtype, &self.device);
        let mut x = sample.to_dtype(compute)?;
        if self.config.center_input_sample {
            x = x.affine(2.0, -1.0)?;
        }
        let context = encoder_hidden_states.to_dtype(compute)?;
        let weights = token_weights.map(|t| t.to_dtype(DType::F32)).transpose()?;
        let weights = weights.as_ref();
        let mode = self.mode;
        let temb = self
            .time_embedding
            .forward(timestep, b, compute, sample.device())?;

        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(&x, &temb, &context, weights, mode, &mut skips)?;
        }
        x = self.mid_block.forward(&x, &temb, &context, weights, mode)?;

        // When h or w is not a multiple of the total downsampling, each upsampler must produce
        // exactly the size of the skip connection it meets next (diffusers' `upsample_size`).
        let factor = 1usize << self.config.num_downsamplers();
        let forward_size = h % factor != 0 || w % factor != 0;
        for block in &self.up_blocks {
            let next = skips.len().checked_sub(block.num_skips() + 1);
            let size = match next {
                Some(idx) if forward_size => {
                    let (_, _, sh, sw) = skips[idx].dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            x = block.forward(&x, &mut skips, &temb, &context, weights, mode, size)?;
        }
        let act = self.config.act_fn;
        let x = norm_act_conv(&self.conv_norm_out, act, &self.conv_out, &x, None, None)?;
        Ok(x.to_dtype(self.dtype)?)
    }

    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: f64,
        ehs: &Tensor,
        token_weights: Option<&Tensor>,
    ) -> Result<(usize, usize, usize)> {
        let c = &self.config;
        let dims = sample.dims();
        if dims.len() != 4
            || dims[1] != c.in_channels
            || dims[0] == 0
            || dims[2] == 0
            || dims[3] == 0
        {
            return Err(Error::SampleShape {
                expected_channels: c.in_channels,
                got: dims.to_vec(),
            });
        }
        let (b, h, w) = (dims[0], dims[2], dims[3]);
        let e = ehs.dims();
        if e.len() != 3 || e[0] != b || e[1] == 0 || e[2] != c.cross_attention_dim {
            return Err(Error::EncoderHiddenStatesShape {
                batch: b,
                expected_dim: c.cross_attention_dim,
                got: e.to_vec(),
            });
        }
        if let Some(t) = token_weights {
            if t.dims() != [b, e[1]] {
                return Err(Error::TokenWeightsShape {
                    batch: b,
                    tokens: e[1],
                    got: t.dims().to_vec(),
                });
            }
        }
        if !timestep.is_finite() {
            return Err(Error::Timestep(timestep));
        }
        Ok((b, h, w))
    }
}
