//! The feed-forward half of an encoder layer.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::{Activation, ClipTextConfig, Result};

/// `CLIPMLP`: `fc2(act(fc1(x)))`, C -> intermediate_size -> C.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    /// Loads `fc1` and `fc2` (weight and bias) under `vb`.
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (c, inner) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            fc1: candle_nn::linear(c, inner, vb.pp("fc1"))?,
            fc2: candle_nn::linear(inner, c, vb.pp("fc2"))?,
            activation: config.hidden_act,
        })
    }

    /// `[B, S, C] -> [B, S, C]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = self.activation.forward(&self.fc1.forward(xs)?)?;
        Ok(self.fc2.forward(&hidden)?)
    }
}
