//! The whole text encoder: embeddings, encoder layers, final layer norm; clip skip and windows.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::weights::{self, WeightLayout};
use crate::{Attention, ClipTextConfig, Embeddings, EncoderLayer, Error, LayerNorm, Result};

/// transformers' `CLIPTextModel` (no projection head): the SD 1.x / 2.x text encoder.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
    dtype: DType,
}

impl ClipTextModel {
    /// Builds the model from `vb`, in `vb`'s dtype and device.
    ///
    /// Both weight layouts load: `text_model.embeddings...` (transformers 4, every SD repository
    /// on the hub) and `embeddings...` (transformers 5 `save_pretrained`); which one is read from
    /// `vb` (see [`WeightLayout::detect`]).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let vb = match WeightLayout::detect(&vb) {
            WeightLayout::Transformers4 => vb.pp(weights::TRANSFORMERS4_PREFIX),
            WeightLayout::Transformers5 => vb,
        };
        let layers_vb = vb.pp("encoder.layers");
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::new(config, layers_vb.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::new(config, vb.pp("embeddings"))?,
            layers,
            final_layer_norm: LayerNorm::new(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            config: config.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Memory-maps safetensors `paths` (one or several shards), checks that every tensor the
    /// config needs is there with the right shape and a float dtype (errors name the tensor and
    /// the file), and builds the model with weights cast to `dtype` on `device`.
    pub fn from_safetensors<P: AsRef<Path>>(
        config: &ClipTextConfig,
        paths: &[P],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vb = weights::checked_var_builder(config, paths, dtype, device)?;
        Self::new(config, vb)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The compute dtype (the weights' dtype, and the dtype of every output).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `[B, S]` token ids (u32 or i64, S <= 77) -> `last_hidden_state` `[B, S, C]`: the last
    /// layer's output after the final layer norm.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with_clip_skip(input_ids, 1)
    }

    /// Like [`forward`](Self::forward) but stops `clip_skip - 1` layers early, A1111's
    /// convention: 1 is the last layer, 2 the penultimate ("Clip skip: 2"), up to
    /// `num_hidden_layers` (the first layer's output).
    ///
    /// In transformers' terms the result is `final_layer_norm(hidden_states[-clip_skip])`, where
    /// `hidden_states` (`output_hidden_states=True`) starts with the embeddings and then holds
    /// each layer's output; A1111 and diffusers both apply the final layer norm to the skipped
    /// state. Layers after the one used are not run.
    pub fn forward_with_clip_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let num_layers = self.layers.len();
        if clip_skip == 0 || clip_skip > num_layers {
            return Err(Error::ClipSkip {
                clip_skip,
                num_layers,
            });
        }
        let mut xs = self.embeddings.forward(input_ids)?.to_dtype(self.dtype)?;
        let mask = Attention::causal_mask(xs.dim(1)?, xs.device())?;
        for layer in &self.layers[..num_layers + 1 - clip_skip] {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(self.final_layer_norm.forward(&xs)?)
    }

    /// Encodes a long prompt given as k windows of token ids (each `[bos] + 75 + [eos]`, padded
    /// to the same length, usually 77), each window on its own, and concatenates the results
    /// along the sequence axis: `[1, 77 * k, C]`. The windows run as one batch of k, which gives
    /// the same numbers as one at a time (rows of a batch never see each other).
    ///
    /// `clip_skip` is as in [`forward_with_clip_skip`](Self::forward_with_clip_skip). The emphasis
    /// weights of a prompt are applied by the caller on this output.
    pub fn encode_windows<W: AsRef<[u32]>>(
        &self,
        windows: &[W],
        clip_skip: usize,
    ) -> Result<Tensor> {
        let first = windows
            .first()
            .ok_or_else(|| Error::Windows("no windows to encode".to_owned()))?;
        let len = first.as_ref().len();
        let mut ids = Vec::with_capacity(windows.len() * len);
        for (i, window) in windows.iter().enumerate() {
            let window = window.as_ref();
            if window.len() != len {
                return Err(Error::Windows(format!(
                    "window {i} has {} ids, window 0 has {len}; pad every window to one length",
                    window.len()
                )));
            }
            ids.extend_from_slice(window);
        }
        let ids = Tensor::from_vec(ids, (windows.len(), len), self.embeddings.device())?;
        let hidden = self.forward_with_clip_skip(&ids, clip_skip)?;
        Ok(hidden.reshape((1, windows.len() * len, self.config.hidden_size))?)
    }
}
