//! The timestep's sinusoidal features and the MLP that turns them into the time embedding.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::config::Activation;
use crate::layers::Linear;

/// Sinusoidal features of one timestep, `[dim]` in f32, as diffusers' `get_timestep_embedding`:
/// with half = dim / 2 and i = 0..half,
///   f_i = exp(-ln(10000) * i / (half - freq_shift)),  e = [sin(t f_i), cos(t f_i)]
/// (cosines first when `flip_sin_to_cos`), zero-padded when `dim` is odd. Computed in f32 in the
/// same order of operations as torch, because `t f_i` reaches ~1000 rad where f64 and f32 differ.
pub fn sinusoidal_features(
    timestep: f64,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f32> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * ((log_period * i as f32) / denom).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut features: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    features.resize(dim, 0.0);
    features
}

/// `time_proj` + `time_embedding` of the UNet: features -> linear_1 -> act -> linear_2.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
    in_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl TimestepEmbedding {
    /// Loads `linear_1` and `linear_2` from `vb` (the UNet's `time_embedding`).
    pub fn new(
        in_dim: usize,
        embed_dim: usize,
        act: Activation,
        flip_sin_to_cos: bool,
        freq_shift: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_dim, embed_dim, vb.pp("linear_1"))?,
            linear_2: Linear::new(embed_dim, embed_dim, vb.pp("linear_2"))?,
            act,
            in_dim,
            flip_sin_to_cos,
            freq_shift,
        })
    }

    /// The time embedding `[batch, embed_dim]` in `dtype` for one timestep shared by the batch.
    pub fn forward(
        &self,
        timestep: f64,
        batch: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let features =
            sinusoidal_features(timestep, self.in_dim, self.flip_sin_to_cos, self.freq_shift);
        let features = Tensor::from_vec(features, (1, self.in_dim), device)?
            .to_dtype(dtype)?
            .broadcast_as((batch, self.in_dim))?
            .contiguous()?;
        let h = self.act.apply(&self.linear_1.forward(&features)?)?;
        self.linear_2.forward(&h)
    }
}
