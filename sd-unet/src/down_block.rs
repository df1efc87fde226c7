//! `CrossAttnDownBlock2D` and `DownBlock2D`: resnets (each followed by a transformer in the
//! cross-attention kind), then an optional 2x downsampling. Every stage's output is kept as a
//! skip connection for the up path.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::AttentionMode;
use crate::resnet::{ResnetBlock2D, ResnetSettings};
use crate::sampling::Downsample2D;
use crate::transformer::{Transformer2DModel, TransformerSettings};

/// One down block; `transformer` settings make it the cross-attention kind.
#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

/// How a down block is shaped.
#[derive(Debug, Clone, Copy)]
pub struct DownBlockShape {
    /// Channels in.
    pub in_channels: usize,
    /// Channels out (of every resnet).
    pub out_channels: usize,
    /// Resnets.
    pub layers: usize,
    /// `Some(padding)` adds a downsampler (every block but the last).
    pub downsample_padding: Option<usize>,
}

impl DownBlock {
    /// Loads `resnets.*`, `attentions.*` and `downsamplers.0` from `vb`.
    pub fn new(
        shape: DownBlockShape,
        resnet: ResnetSettings,
        transformer: Option<TransformerSettings>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(shape.layers);
        let mut attentions = Vec::new();
        for i in 0..shape.layers {
            let cin = if i == 0 {
                shape.in_channels
            } else {
                shape.out_channels
            };
            resnets.push(ResnetBlock2D::new(
                cin,
                shape.out_channels,
                resnet,
                vb.pp("resnets").pp(i),
            )?);
            if let Some(t) = &transformer {
                attentions.push(Transformer2DModel::new(
                    shape.out_channels,
                    t,
                    vb.pp("attentions").pp(i),
                )?);
            }
        }
        let downsampler = match shape.downsample_padding {
            Some(p) => Some(Downsample2D::new(
                shape.out_channels,
                p,
                vb.pp("downsamplers").pp("0"),
            )?),
            None => None,
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Runs the block, pushing each stage's output onto `skips`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        weights: Option<&Tensor>,
        mode: AttentionMode,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, temb)?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context, weights, mode)?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}
