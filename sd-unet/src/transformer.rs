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

    /// `out(geglu(proj(x))) + residual`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let gated = sd_kernels::nn::geglu(&self.proj.forward(x)?)?;
        self.out.forward_residual(&gated, residual)
    }
}

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
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: Tensor| t.flatten_from(2)?.transpose(1, 2)?.contiguous();
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, weights, mode)?;
        }
        let to_map = |t: Tensor| t.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w));
        match &self.proj_out {
            Projection::Conv(conv) => conv.forward_with(&to_map(tokens)?, None, Some(x)),
            Projection::Linear(lin) => to_map(lin.forward(&tokens)?)? + x,
        }
    }
}
