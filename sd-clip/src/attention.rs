//! Causal multi-head self-attention.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::{ClipTextConfig, Result};

/// `CLIPAttention` with the causal mask of the text tower (Vaswani et al. 2017, eq. 1):
/// softmax(Q K^T / sqrt(d) + M) V, with M = -inf above the diagonal.
///
/// `q_proj`, `k_proj` and `v_proj` are stacked into one `[3C, C]` projection at load, so the three
/// come out of one matrix product.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// Loads `{q,k,v,out}_proj.{weight,bias}` under `vb`.
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.hidden_size;
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for name in ["q_proj", "k_proj", "v_proj"] {
            let vb = vb.pp(name);
            weights.push(vb.get((c, c), "weight")?);
            biases.push(vb.get(c, "bias")?);
        }
        let qkv = Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?));
        Ok(Self {
            qkv,
            out_proj: candle_nn::linear(c, c, vb.pp("out_proj"))?,
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    /// `[B, S, C] -> [B, S, C]`; `mask` is the f32 `[S, S]` additive mask from
    /// [`Attention::causal_mask`].
    pub fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s, c) = xs.dims3()?;
        let dtype = xs.dtype();
        // [B, S, 3C] -> [3, B, H, S, D]: one copy lays out q, k and v head-major.
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, s, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        // Scaling q before the product (not the scores after) is the same number in exact
        // arithmetic and keeps f16 scores away from overflow.
        let q = (qkv.get(0)? * (self.head_dim as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        // Softmax in f32, as transformers does (`softmax(..., dtype=torch.float32)`).
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, c))?;
        Ok(self.out_proj.forward(&out)?)
    }

    /// The additive causal mask `[S, S]` in f32: 0 where key position <= query position, else -inf.
    pub fn causal_mask(seq_len: usize, device: &Device) -> Result<Tensor> {
        let mask: Vec<f32> = (0..seq_len)
            .flat_map(|i| (0..seq_len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(mask, (seq_len, seq_len), device)?)
    }
}
