//! `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs, at the lowest resolution.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::AttentionMode;
use crate::resnet::{ResnetBlock2D, ResnetSettings};
use crate::transformer::{Transformer2DModel, TransformerSettings};

/// The mid block (one transformer, as in every SD model).
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    /// Loads `resnets.{0,1}` and `attentions.0`; the resnets divide their output by
    /// `resnet.output_scale_factor` (the config's `mid_block_scale_factor`).
    pub fn new(
        channels: usize,
        resnet: ResnetSettings,
        transformer: TransformerSettings,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::new(channels, channels, resnet, vb.pp("resnets").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let attentions = vec![Transformer2DModel::new(
            channels,
            &transformer,
            vb.pp("attentions").pp("0"),
        )?];
        Ok(Self {
            resnets,
            attentions,
        })
    }

    /// `resnets[0]`, then each `attentions[i]` followed by `resnets[i + 1]`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        weights: Option<&Tensor>,
        mode: AttentionMode,
    ) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, temb)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(&x, context, weights, mode)?;
            x = resnet.forward(&x, temb)?;
        }
        Ok(x)
    }
}
