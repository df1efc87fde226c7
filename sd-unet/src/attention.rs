//! The attention seam: every attention of the UNet goes through [`attention`], which picks a
//! backend by [`AttentionMode`]: sd-kernels' fused kernel (the default; no score matrix is ever
//! stored), or candle compositions over the full or sliced score tensor.
//!
//! Also here: [`Attention`], diffusers' `Attention` module (the q/k/v/out projections around it).

use candle_core::{DType, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use sd_kernels::Precision;

use crate::layers::Linear;

/// The dtype a product runs in for tensors stored in `dtype` (candle's CPU matmul has no bf16).
fn product_dtype(dtype: DType) -> DType {
    if dtype == DType::BF16 {
        DType::F32
    } else {
        dtype
    }
}

/// How the softmax(QK^T/sqrt(d))V product is evaluated. Every mode gives the same numbers (up to
/// float summation order); they trade peak memory for speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionMode {
    /// sd-kernels' fused attention: query tiles against all keys of one head at a time, memory
    /// linear in the sequence length. Runs on f32 CPU tensors; elsewhere it falls back to
    /// [`Full`](Self::Full).
    #[default]
    Fused,
    /// One softmax over the whole `[B*heads, Lq, Lk]` score tensor.
    Full,
    /// Scores for at most `batch_heads` (batch x head) rows and `query` query positions at a
    /// time. Chunk sizes need not divide the dimensions: the last chunk is shorter. A size of 0
    /// means "do not slice this axis".
    Sliced {
        /// Batch x head rows per chunk (0: all).
        batch_heads: usize,
        /// Query positions per chunk (0: all).
        query: usize,
    },
}

/// Multi-head attention over `[B, L, heads*d]` tensors, returning `[B, Lq, heads*d]`:
///   out = softmax(Q K^T / sqrt(d)) (w ⊙ V)
/// where `value_weights` w (`[B, Lk]`, optional) scales each key position's value row — the
/// sd-fused emphasis: out_i = Σ_j softmax(q_i·k_j/√d)_j · w_j · v_j, keys untouched, no
/// renormalisation. The softmax always runs in f32; with `upcast` the scores are also computed
/// in f32 (diffusers' `upcast_attention`), otherwise in the inputs' dtype. `precision` is the
/// fused kernel's: bf16 products (for bf16 models) or f32.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    value_weights: Option<&Tensor>,
    upcast: bool,
    mode: AttentionMode,
    precision: Precision,
) -> Result<Tensor> {
    let (b, lq, inner) = q.dims3()?;
    let d = inner / heads;
    let cpu_f32 = [q, k, v].iter().all(|t| sd_kernels::tensor::is_cpu_f32(t));
    if mode == AttentionMode::Fused && cpu_f32 {
        let w = value_weights.map(|w| w.to_dtype(DType::F32)).transpose()?;
        let scale = 1.0 / (d as f32).sqrt();
        return Ok(sd_kernels::attention(
            q,
            k,
            v,
            heads,
            scale,
            w.as_ref(),
            precision,
        )?);
    }
    let v = match value_weights {
        Some(w) => v.broadcast_mul(&w.to_dtype(v.dtype())?.unsqueeze(2)?)?,
        None => v.clone(),
    };
    let split = |t: &Tensor| -> Result<Tensor> {
        let (b, l, _) = t.dims3()?;
        t.reshape((b, l, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, l, d))
    };
    let (q, k, v) = (split(q)?, split(k)?, split(&v)?);
    let scale = 1.0 / (d as f64).sqrt();
    let out = match mode {
        AttentionMode::Full | AttentionMode::Fused => attend(&q, &k, &v, scale, upcast)?,
        AttentionMode::Sliced { batch_heads, query } => {
            sliced(&q, &k, &v, scale, upcast, batch_heads, query)?
        }
    };
    out.reshape((b, heads, lq, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, lq, inner))
}

/// softmax(q k^T * scale) v for `[N, Lq, d]`, `[N, Lk, d]`, `[N, Lk, d]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, upcast: bool) -> Result<Tensor> {
    let dtype = v.dtype();
    let upcast = upcast || product_dtype(dtype) != dtype;
    // k^T is materialised with the scale folded in: a contiguous right-hand side is gemm's
    // fast path, and scaling before the product keeps f16 scores from overflowing.
    let scores = if upcast && dtype != DType::F32 {
        let k_t = (k.to_dtype(DType::F32)?.t()? * scale)?;
        q.to_dtype(DType::F32)?.matmul(&k_t)?
    } else {
        q.matmul(&(k.t()? * scale)?)?.to_dtype(DType::F32)?
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let pd = product_dtype(dtype);
    probs
        .to_dtype(pd)?
        .matmul(&v.to_dtype(pd)?)?
        .to_dtype(dtype)
}

/// [`attend`] chunk by chunk over rows (batch x heads) and query positions.
fn sliced(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    batch_heads: usize,
    query: usize,
) -> Result<Tensor> {
    let (n, lq, _) = q.dims3()?;
    let row_chunk = if batch_heads == 0 { n } else { batch_heads };
    let query_chunk = if query == 0 { lq } else { query };
    let mut rows = Vec::with_capacity(n.div_ceil(row_chunk));
    for r in (0..n).step_by(row_chunk) {
        let len = row_chunk.min(n - r);
        let (qr, kr, vr) = (
            q.narrow(0, r, len)?,
            k.narrow(0, r, len)?,
            v.narrow(0, r, len)?,
        );
        let mut parts = Vec::with_capacity(lq.div_ceil(query_chunk));
        for s in (0..lq).step_by(query_chunk) {
            let qs = qr.narrow(1, s, query_chunk.min(lq - s))?;
            parts.push(attend(&qs, &kr, &vr, scale, upcast)?);
        }
        rows.push(Tensor::cat(&parts, 1)?);
    }
    Tensor::cat(&rows, 0)
}

/// diffusers' `Attention` module: `to_q`, `to_k`, `to_v` (no bias) and `to_out.0` around
/// [`attention`]. Self-attention when no context is given.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    upcast: bool,
    precision: Precision,
}

impl Attention {
    /// `query_dim` wide queries; keys/values from `context_dim` wide states (= `query_dim` for
    /// self-attention); `heads` heads of `head_dim`.
    pub fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        upcast: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: Linear::no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: Linear::no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: Linear::no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: Linear::new(inner, query_dim, vb.pp("to_out").pp("0"))?,
            heads,
            upcast,
            precision: if vb.dtype() == DType::BF16 {
                Precision::Bf16
            } else {
                Precision::F32
            },
        })
    }

    /// `x` `[B, Lq, query_dim]`; `context` `[B, Lk, context_dim]` for cross-attention, with
    /// optional per-token value weights `[B, Lk]` (ignored for self-attention); `residual` is
    /// added to the output (fused into `to_out`).
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        value_weights: Option<&Tensor>,
        mode: AttentionMode,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let (ctx, weights) = match context {
            Some(c) => (c, value_weights),
            None => (x, None),
        };
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let out = attention(
            &q,
            &k,
            &v,
            self.heads,
            weights,
            self.upcast,
            mode,
            self.precision,
        )?;
        match residual {
            Some(r) => self.to_out.forward_residual(&out, r),
            None => self.to_out.forward(&out),
        }
    }
}
