//! The single-head self-attention of the VAE's mid block.

use candle_core::{DType, Tensor};
use candle_nn::{Module, VarBuilder};
use sd_kernels::nn::Linear;
use sd_kernels::Precision;

use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::resnet::VAE_NORM_EPS;

/// diffusers' `Attention(channels, heads=1, dim_head=channels, norm_num_groups, residual_connection,
/// rescale_output_factor=1)` over the H*W positions of a feature map:
/// out = x + to_out(softmax(q k^T / sqrt(C)) v), with q, k, v = to_q/k/v(group_norm(x)).
///
/// The scores, softmax and weighted sum run in f32 whatever the compute dtype: one 4096x4096
/// score matrix at 512x512 is where f16 loses most. On the CPU (f32 activations) this is
/// sd-kernels' fused attention, which never stores that matrix (bf16 products for bf16
/// weights).
#[derive(Debug, Clone)]
pub struct MidAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
    precision: Precision,
}

impl MidAttention {
    /// Loads `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0` under `vb`.
    pub fn new(channels: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(groups, channels, VAE_NORM_EPS, vb.pp("group_norm"))?,
            to_q: Linear::new(channels, channels, vb.pp("to_q"))?,
            to_k: Linear::new(channels, channels, vb.pp("to_k"))?,
            to_v: Linear::new(channels, channels, vb.pp("to_v"))?,
            to_out: Linear::new(channels, channels, vb.pp("to_out").pp("0"))?,
            channels,
            precision: if vb.dtype() == DType::BF16 {
                Precision::Bf16
            } else {
                Precision::F32
            },
        })
    }

    /// Runs attention on `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let tokens = sd_kernels::nn::tokens_of_map(&self.group_norm.forward(x)?)?;
        if sd_kernels::tensor::is_cpu_f32(&tokens) {
            let (q, k, v) = (
                self.to_q.forward(&tokens)?,
                self.to_k.forward(&tokens)?,
                self.to_v.forward(&tokens)?,
            );
            let scale = 1.0 / (self.channels as f32).sqrt();
            let attended = sd_kernels::attention(&q, &k, &v, 1, scale, None, self.precision)
                .map_err(candle_core::Error::from)?;
            let residual = sd_kernels::nn::tokens_of_map(x)?;
            let out = self.to_out.forward_residual(&attended, &residual)?;
            return Ok(sd_kernels::nn::map_of_tokens(&out, (h, w))?);
        }
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let q = f32(self.to_q.forward(&tokens)?)?;
        let k = f32(self.to_k.forward(&tokens)?)?;
        let v = f32(self.to_v.forward(&tokens)?)?;
        let scale = 1.0 / (self.channels as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = probs.matmul(&v)?.to_dtype(dtype)?;
        let out = self.to_out.forward(&attended)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((out + x)?)
    }
}
