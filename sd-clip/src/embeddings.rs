//! Token and position embeddings, with the input-id checks.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::{ClipTextConfig, Error, Result};

/// `CLIPTextEmbeddings`: `token_embedding[id] + position_embedding[position]`, positions 0..S.
#[derive(Debug, Clone)]
pub struct Embeddings {
    token_embedding: Tensor,
    position_embedding: Tensor,
}

impl Embeddings {
    /// Loads `token_embedding.weight` `[vocab, C]` and `position_embedding.weight`
    /// `[max_positions, C]` under `vb`.
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.hidden_size;
        Ok(Self {
            token_embedding: vb.get((config.vocab_size, c), "token_embedding.weight")?,
            position_embedding: vb.get(
                (config.max_position_embeddings, c),
                "position_embedding.weight",
            )?,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.token_embedding.device()
    }

    /// Number of token embeddings.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.dim(0).unwrap_or(0)
    }

    /// Number of positions.
    pub fn max_position_embeddings(&self) -> usize {
        self.position_embedding.dim(0).unwrap_or(0)
    }

    /// `[B, S]` ids (u32 or i64) -> `[B, S, C]`; ids outside the vocabulary or sequences longer
    /// than the position table are errors, checked before any lookup.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        let (b, s) = ids.dims2()?;
        let tokens = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, ()))?;
        let positions = self.position_embedding.narrow(0, 0, s)?;
        Ok(tokens.broadcast_add(&positions)?)
    }

    /// Validates shape, dtype and range; returns the ids as u32 on the weights' device.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let shape_error = || Error::InputIds {
            dtype: input_ids.dtype(),
            shape: input_ids.dims().to_vec(),
        };
        let (b, s) = input_ids.dims2().map_err(|_| shape_error())?;
        let max_positions = self.max_position_embeddings();
        if s == 0 || s > max_positions {
            return Err(Error::SequenceLength {
                seq_len: s,
                max_position_embeddings: max_positions,
            });
        }
        let values: Vec<i64> = match input_ids.dtype() {
            DType::U32 => input_ids
                .flatten_all()?
                .to_vec1::<u32>()?
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::I64 => input_ids.flatten_all()?.to_vec1::<i64>()?,
            _ => return Err(shape_error()),
        };
        let vocab_size = self.vocab_size();
        let mut ids = Vec::with_capacity(values.len());
        for (i, id) in values.into_iter().enumerate() {
            match u32::try_from(id) {
                Ok(id) if (id as usize) < vocab_size => ids.push(id),
                _ => {
                    return Err(Error::TokenOutOfRange {
                        id,
                        batch: i / s,
                        position: i % s,
                        vocab_size,
                    })
                }
            }
        }
        Ok(Tensor::from_vec(
            ids,
            (b, s),
            self.token_embedding.device(),
        )?)
    }
}
