//! `Transformer2DModel`: group norm, projection to tokens, `BasicTransformerBlock`s
//! (self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm and residual), and
//! projection back, added to the input.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::attention::{Attention, AttentionMode};
use crate::layers::{Conv2d, GroupNorm, LayerNorm, Linear};

/// What a transformer needs to know besides its width.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSettings {
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the text states cross-attended to.
    pub cross_attention_dim: usize,
    /// Group-norm groups of the input norm.
    pub groups: usize,
    /// Linear (SD 2.x) instead of 1x1-convolution projections.
    pub use_linear_projection: bool,
    /// Scores in f32 even in f16/bf16.
    pub upcast_attention: bool,
}

/// The feed-forward of a transformer block: `net.2(h * gelu(gate))` where
/// `[h, gate] = net.0.proj(x)` split in two halves (GEGLU, Shazeer 2020, eq. 6; exact-erf GELU).
#[derive(Debug, Clone)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: Linear::new(dim, 2 * inner, vb.pp("net").pp("0").pp("proj"))?,
            out: Linear::new(inner, dim, vb.pp("net").pp("2"))?,
        })
    }

    /// `out(geglu(proj(x))) + residual`, [`FF_CHUNK_ROWS`] tokens at a time.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let dim = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / dim.max(1);
        if rows <= FF_CHUNK_ROWS {
            return self.rows(x, residual);
        }
        let (x, residual) = (x.reshape((rows, dim))?, residual.reshape((rows, dim))?);
        let chunks = (0..rows)
            .step_by(FF_CHUNK_ROWS)
            .map(|r0| {
                let n = FF_CHUNK_ROWS.min(rows - r0);
                self.rows(&x.narrow(0, r0, n)?, &residual.narrow(0, r0, n)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chunks, 0)?.reshape(dims)
    }

    /// The feed-forward of some tokens, all at once.
    fn rows(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let gated = sd_kernels::nn::geglu(&self.proj.forward(x)?)?;
        self.out.forward_residual(&gated, residual)
    }
}

/// Tokens per pass of the feed-forward (as diffusers' `enable_forward_chunking`): each token's
/// output depends on that token alone, and at 512² the whole projection would be a
/// [2, 4096, 2560] f32 tensor (84 MB, plus 42 MB gated) at the moment of peak memory.
const FF_CHUNK_ROWS: usize = 1024;

/// diffusers' `BasicTransformerBlock` as SD uses it (layer norms with eps 1e-5).
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    /// A block of width `dim` with `s.heads` heads.
    pub fn new(dim: usize, s: &TransformerSettings, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / s.heads;
        let up = s.upcast_attention;
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, dim, s.heads, head_dim, up, vb.pp("attn1"))?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(
                dim,
                s.cross_attention_dim,
                s.heads,
                head_dim,
                up,
                vb.pp("attn2"),
            )?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    /// `x` `[B, HW, dim]`, `context` `[B, L, cross_dim]`, optional value weights `[B, L]`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        weights: Option<&Tensor>,
        mode: AttentionMode,
    ) -> Result<Tensor> {
        // Each residual add is fused into the output projection before it.
        let x = self
            .attn1
            .forward(&self.norm1.forward(x)?, None, None, mode, Some(x))?;
        let x = self.attn2.forward(
            &self.norm2.forward(&x)?,
            Some(context),
            weights,
            mode,
            Some(&x),
        )?;
        self.ff.forward(&self.norm3.forward(&x)?, &x)
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel` over `[B, C, h, w]` feature maps.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    /// A transformer over `channels` channels (inner width = channels).
    pub fn new(channels: usize, s: &TransformerSettings, vb: VarBuilder) -> Result<Self> {
        let proj = |name: &str| -> Result<Projection> {
            Ok(if s.use_linear_projection {
                Projection::Linear(Linear::new(channels, channels, vb.pp(name))?)
            } else {
                Projection::Conv(Conv2d::new(
                    channels,
                    channels,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..s.layers)
            .map(|i| BasicTransformerBlock::new(channels, s, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            // Transformer2DModel fixes this epsilon at 1e-6, whatever the UNet's norm_eps.
            norm: GroupNorm::new(s.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    /// `x + proj_out(blocks(proj_in(norm(x))))`, the blocks seeing `[B, h*w, C]` tokens.
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        weights: Option<&Tensor>,
        mode: AttentionMode,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let to_tokens = |t: Tensor| sd_kernels::nn::tokens_of_map(&t);
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, weights, mode)?;
        }
        match &self.proj_out {
            Projection::Conv(conv) => conv.forward_tokens(&tokens, (h, w), Some(x)),
            Projection::Linear(lin) => {
                sd_kernels::nn::map_of_tokens(&lin.forward(&tokens)?, (h, w))? + x
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};
    use std::collections::HashMap;

    /// More tokens than one pass takes (and a last pass of fewer): the chunked feed-forward
    /// equals the plain composition `W2 (h * gelu(g)) + b2 + residual` over all tokens at once.
    #[test]
    fn feed_forward_in_chunks_equals_all_tokens_at_once() -> Result<()> {
        let dev = Device::Cpu;
        let (dim, tokens) = (8, FF_CHUNK_ROWS + 300);
        let inner = 4 * dim;
        let r = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev);
        let (w1, b1, w2, b2) = (
            r(&[2 * inner, dim])?,
            r(&[2 * inner])?,
            r(&[dim, inner])?,
            r(&[dim])?,
        );
        let tensors = HashMap::from([
            ("net.0.proj.weight".to_string(), w1.clone()),
            ("net.0.proj.bias".to_string(), b1.clone()),
            ("net.2.weight".to_string(), w2.clone()),
            ("net.2.bias".to_string(), b2.clone()),
        ]);
        let ff = FeedForward::new(dim, VarBuilder::from_tensors(tensors, DType::F32, &dev))?;
        let (x, residual) = (r(&[2, tokens, dim])?, r(&[2, tokens, dim])?);
        let got = ff.forward(&x, &residual)?;
        let proj = x.broadcast_matmul(&w1.t()?)?.broadcast_add(&b1)?;
        let gated = (proj.narrow(D::Minus1, 0, inner)?
            * proj.narrow(D::Minus1, inner, inner)?.gelu_erf()?)?;
        let want = ((gated.broadcast_matmul(&w2.t()?)?.broadcast_add(&b2))? + &residual)?;
        assert_eq!(got.dims(), want.dims());
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            err <= 1e-5 * scale,
            "max error {err} (outputs up to {scale})"
        );
        Ok(())
    }
}
