//! `CrossAttnUpBlock2D` and `UpBlock2D`: resnets over the input concatenated with a skip
//! connection (each followed by a transformer in the cross-attention kind), then an optional
//! upsampling to the next skip connection's size.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::AttentionMode;
use crate::resnet::{ResnetBlock2D, ResnetSettings};
use crate::sampling::Upsample2D;
use crate::transformer::{Transformer2DModel, TransformerSettings};

/// How an up block is shaped (diffusers' `get_up_block` arguments).
#[derive(Debug, Clone, Copy)]
pub struct UpBlockShape {
    /// Channels of the matching down block's input (width of this block's last skip).
    pub in_channels: usize,
    /// Channels coming from the previous up block (or the mid block).
    pub prev_output_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Resnets (`layers_per_block + 1`).
    pub layers: usize,
    /// Adds an upsampler (every block but the last).
    pub add_upsample: bool,
}

/// One up block; `transformer` settings make it the cross-attention kind.
#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Loads `resnets.*`, `attentions.*` and `upsamplers.0` from `vb`.
    pub fn new(
        shape: UpBlockShape,
        resnet: ResnetSettings,
        transformer: Option<TransformerSettings>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(shape.layers);
        let mut attentions = Vec::new();
        for i in 0..shape.layers {
            let skip = if i + 1 == shape.layers {
                shape.in_channels
            } else {
                shape.out_channels
            };
            let cin = if i == 0 {
                shape.prev_output_channels
            } else {
                shape.out_channels
            };
            resnets.push(ResnetBlock2D::new(
                cin + skip,
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
        let upsampler = if shape.add_upsample {
            Some(Upsample2D::new(
                shape.out_channels,
                vb.pp("upsamplers").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Number of skip connections this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// Runs the block, consuming skips from the end of `skips` (last pushed first).
    /// `upsample_size` forces the upsampler's output size (odd latent sizes).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        context: &Tensor,
        weights: Option<&Tensor>,
        mode: AttentionMode,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                candle_core::Error::Msg("up block ran out of skip connections".into())
            })?;
            x = resnet.forward(&Tensor::cat(&[&x, &skip], 1)?, temb)?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context, weights, mode)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, upsample_size),
            None => Ok(x),
        }
    }
}
