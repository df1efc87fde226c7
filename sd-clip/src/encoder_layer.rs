//! One pre-norm transformer block.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::{Attention, ClipTextConfig, LayerNorm, Mlp, Result};

/// `CLIPEncoderLayer`: x + attn(ln1(x)), then x + mlp(ln2(x)) (pre-norm residual blocks).
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    /// Loads `layer_norm1`, `self_attn`, `layer_norm2` and `mlp` under `vb`.
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (c, eps) = (config.hidden_size, config.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::new(c, eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(config, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(c, eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::new(config, vb.pp("mlp"))?,
        })
    }

    /// `[B, S, C] -> [B, S, C]` under the additive attention `mask`.
    pub fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}
