//! Model layers on top of the kernels, loaded from a `candle_nn::VarBuilder` in diffusers
//! naming: [`Linear`], [`Conv2d`], [`GroupNorm`], [`LayerNorm`]. On the CPU with f32 or bf16
//! weights they pack the weights once and run the fast kernels (activations in f32; bf16
//! weights give bf16 products with f32 sums); anywhere else (f16, CUDA) they run candle's ops,
//! so a model written with them works on every device.
//!
//! [`compute_dtype`] says which dtype the activations of a model built this way are in.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::ConvGeometry;
use crate::gemm::Precision;
use crate::side_branch::{self, SideBranches};
use crate::{activation, norm};

/// The precision of the fast path for weights stored in `dtype` on `device`, if it has one.
pub fn fast_precision(dtype: DType, device: &Device) -> Option<Precision> {
    match (device.is_cpu(), dtype) {
        (true, DType::F32) => Some(Precision::F32),
        (true, DType::BF16) => Some(Precision::Bf16),
        _ => None,
    }
}

/// The dtype activations flow in for a model whose weights are `dtype` on `device`: f32 where
/// the fast path runs (bf16 weights included), else the weights' dtype.
pub fn compute_dtype(dtype: DType, device: &Device) -> DType {
    match fast_precision(dtype, device) {
        Some(_) => DType::F32,
        None => dtype,
    }
}

fn f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec1()
}

#[derive(Debug, Clone)]
enum LinearImpl {
    Fast(Arc<crate::Linear>),
    Candle(candle_nn::Linear),
}

/// `x W^T + b` (diffusers / torch `Linear`: `weight` `[out, in]`, `bias` `[out]`), plus any
/// [side branches](crate::side_branch).
#[derive(Debug, Clone)]
pub struct Linear(LinearImpl, Arc<SideBranches>);

impl Linear {
    /// Loads `weight` and `bias`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let w = vb.get((out_dim, in_dim), "weight")?;
        let b = vb.get(out_dim, "bias")?;
        Self::with_slot(
            w,
            Some(b),
            side_branch::slot(&vb.prefix(), &[out_dim, in_dim]),
        )
    }

    /// Loads `weight` only.
    pub fn no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let slot = side_branch::slot(&vb.prefix(), &[out_dim, in_dim]);
        Self::with_slot(vb.get((out_dim, in_dim), "weight")?, None, slot)
    }

    /// Wraps tensors already loaded (packed now when the fast path applies).
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let slot = SideBranches::new(weight.dims());
        Self::with_slot(weight, bias, slot)
    }

    fn with_slot(
        weight: Tensor,
        bias: Option<Tensor>,
        slot: Arc<SideBranches>,
    ) -> candle_core::Result<Self> {
        let layer = match fast_precision(weight.dtype(), weight.device()) {
            Some(p) => LinearImpl::Fast(Arc::new(crate::Linear::new(&weight, bias.as_ref(), p)?)),
            None => LinearImpl::Candle(candle_nn::Linear::new(weight, bias)),
        };
        Ok(Self(layer, slot))
    }

    /// `x W^T + b + residual` (the residual add fused into the product on the fast path).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.0 {
            LinearImpl::Fast(l) => l.forward(&to_f32(x)?, Some(&to_f32(residual)?))?,
            LinearImpl::Candle(l) => (l.forward(x)? + residual)?,
        };
        self.branches(x, y)
    }

    /// `y` with the side branches added, when there are any.
    fn branches(&self, x: &Tensor, y: Tensor) -> candle_core::Result<Tensor> {
        if !self.1.is_active() {
            return Ok(y);
        }
        let dtype = y.dtype();
        self.1.add_linear(x, y)?.to_dtype(dtype)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.0 {
            LinearImpl::Fast(l) => l.forward(&to_f32(x)?, None)?,
            LinearImpl::Candle(l) => l.forward(x)?,
        };
        self.branches(x, y)
    }
}

fn to_f32(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::F32 {
        Ok(x.clone())
    } else {
        x.to_dtype(DType::F32)
    }
}

#[derive(Debug, Clone)]
enum ConvImpl {
    Fast(Arc<crate::Conv2d>),
    Candle(candle_nn::Conv2d),
}

/// A 2-D convolution (`weight` `[out, in, k, k]`, `bias` `[out]`, square stride and padding),
/// plus any [side branches](crate::side_branch).
#[derive(Debug, Clone)]
pub struct Conv2d(ConvImpl, Arc<SideBranches>, Conv2dConfig);

impl Conv2d {
    /// Loads `weight` and `bias` (groups and dilation must be 1).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let shape = [out_channels, in_channels, kernel, kernel];
        let w = vb.get(shape.as_slice(), "weight")?;
        let b = vb.get(out_channels, "bias")?;
        Self::with_slot(w, Some(b), config, side_branch::slot(&vb.prefix(), &shape))
    }

    /// Loads `weight` only: a convolution without a bias (`bias=False` in torch).
    pub fn no_bias(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let shape = [out_channels, in_channels, kernel, kernel];
        let w = vb.get(shape.as_slice(), "weight")?;
        Self::with_slot(w, None, config, side_branch::slot(&vb.prefix(), &shape))
    }

    /// Wraps tensors already loaded (packed now when the fast path applies).
    pub fn from_weights(
        weight: Tensor,
        bias: Option<Tensor>,
        config: Conv2dConfig,
    ) -> candle_core::Result<Self> {
        let slot = SideBranches::new(weight.dims());
        Self::with_slot(weight, bias, config, slot)
    }

    fn with_slot(
        weight: Tensor,
        bias: Option<Tensor>,
        config: Conv2dConfig,
        slot: Arc<SideBranches>,
    ) -> candle_core::Result<Self> {
        let plain = config.groups == 1 && config.dilation == 1;
        Ok(Self(
            match fast_precision(weight.dtype(), weight.device()) {
                Some(p) if plain => {
                    let geometry = ConvGeometry {
                        stride: config.stride,
                        padding: config.padding,
                    };
                    ConvImpl::Fast(Arc::new(crate::Conv2d::new(
                        &weight,
                        bias.as_ref(),
                        geometry,
                        p,
                    )?))
                }
                _ => ConvImpl::Candle(candle_nn::Conv2d::new(weight, bias, config)),
            },
            slot,
            config,
        ))
    }

    /// `conv(x) + bias + channel_bias[b, c] + residual`: `channel_bias` `[B, Cout]` (e.g. a
    /// projected time embedding) and `residual` (output-shaped) are optional, and fused into
    /// the product on the fast path.
    pub fn forward_with(
        &self,
        x: &Tensor,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let y = match &self.0 {
            ConvImpl::Fast(c) => {
                let cb = channel_bias.map(to_f32).transpose()?;
                let r = residual.map(to_f32).transpose()?;
                c.forward_ex(&to_f32(x)?, cb.as_ref(), r.as_ref())?
            }
            ConvImpl::Candle(c) => {
                let mut y = c.forward(x)?;
                if let Some(cb) = channel_bias {
                    y = y.broadcast_add(&cb.unsqueeze(2)?.unsqueeze(3)?)?;
                }
                match residual {
                    Some(r) => (y + r)?,
                    None => y,
                }
            }
        };
        if !self.1.is_active() {
            return Ok(y);
        }
        let dtype = y.dtype();
        self.1
            .add_conv(x, y, self.2.stride, self.2.padding)?
            .to_dtype(dtype)
    }
}

impl Conv2d {
    /// [`forward_with`](Self::forward_with) of `silu?(norm(x))`: a resnet's
    /// `conv(SiLU(GroupNorm(x)))`. On the fast path the normalised tensor is never stored:
    /// the statistics are read first, then the convolution maps its input as it reads it.
    pub fn forward_normalized(
        &self,
        norm: &GroupNorm,
        silu: bool,
        x: &Tensor,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if let Some(conv) = self.fusable(x) {
            if norm.fast {
                let x = to_f32(x)?;
                let eps = norm.eps as f32;
                let map =
                    norm::group_norm_map(&x, norm.groups, &norm.gamma, &norm.beta, eps, silu)?;
                return self.forward_fused(conv, &x, &map, channel_bias, residual);
            }
        }
        self.forward_with(&norm.forward_act(x, silu)?, channel_bias, residual)
    }

    /// `self(upsample(x))` with nearest-neighbour 2x upsampling (an up-block's `Upsample2D`).
    /// On the fast path the upsampled tensor is never stored.
    pub fn forward_upsampled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(conv) = self.fusable(x) {
            let map = crate::InputMap {
                upsample: true,
                ..crate::InputMap::identity()
            };
            return self.forward_fused(conv, &to_f32(x)?, &map, None, None);
        }
        let (_, _, h, w) = x.dims4()?;
        self.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }

    /// `self(map) + residual` for the `h x w` map whose pixels are the rows of `tokens`
    /// `[B, h*w, C]` (a transformer's `proj_out`). On the fast path a 1x1 convolution reads
    /// the tokens as they are: the map is never stored.
    pub fn forward_tokens(
        &self,
        tokens: &Tensor,
        (h, w): (usize, usize),
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if let Some(conv) = self.fusable(tokens) {
            if conv.is_pointwise() {
                let r = residual.map(to_f32).transpose()?;
                return Ok(conv.forward_tokens(&to_f32(tokens)?, (h, w), r.as_ref())?);
            }
        }
        self.forward_with(&map_of_tokens(tokens, (h, w))?, None, residual)
    }

    /// The fast convolution, when a map can be fused into it: CPU input, and no side branch
    /// (which would need the mapped input itself).
    fn fusable(&self, x: &Tensor) -> Option<&crate::Conv2d> {
        match &self.0 {
            ConvImpl::Fast(c) if x.device().is_cpu() && !self.1.is_active() => Some(c),
            _ => None,
        }
    }

    fn forward_fused(
        &self,
        conv: &crate::Conv2d,
        x: &Tensor,
        map: &crate::InputMap,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let cb = channel_bias.map(to_f32).transpose()?;
        let r = residual.map(to_f32).transpose()?;
        Ok(conv.forward_mapped(x, map, cb.as_ref(), r.as_ref())?)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, None, None)
    }
}

/// `[B, C, H, W]` -> `[B, H*W, C]` (a feature map's pixels as tokens): a banded transpose on
/// the CPU for f32, candle's strided copy elsewhere.
pub fn tokens_of_map(x: &Tensor) -> candle_core::Result<Tensor> {
    if crate::tensor::is_cpu_f32(x) {
        return Ok(crate::layout::tokens_of_map(x)?);
    }
    x.flatten_from(2)?.transpose(1, 2)?.contiguous()
}

/// `[B, H*W, C]` -> `[B, C, H, W]` (tokens back to a feature map): a banded transpose on the
/// CPU for f32, candle's strided copy elsewhere.
pub fn map_of_tokens(tokens: &Tensor, (h, w): (usize, usize)) -> candle_core::Result<Tensor> {
    if crate::tensor::is_cpu_f32(tokens) {
        return Ok(crate::layout::map_of_tokens(tokens, (h, w))?);
    }
    let (b, _, c) = tokens.dims3()?;
    tokens.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))
}

/// Group normalisation with f32 statistics (`weight`, `bias` `[C]`), optionally fused with SiLU.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    gamma: Arc<Vec<f32>>,
    beta: Arc<Vec<f32>>,
    groups: usize,
    eps: f64,
    fast: bool,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of `channels` values.
    pub fn new(
        groups: usize,
        channels: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        let fast = fast_precision(weight.dtype(), weight.device()).is_some();
        Ok(Self {
            gamma: Arc::new(f32_vec(&weight)?),
            beta: Arc::new(f32_vec(&bias)?),
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            groups,
            eps,
            fast,
        })
    }

    /// Normalises `[B, C, ...]`, then applies SiLU when `silu`. The result has `x`'s dtype.
    pub fn forward_act(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        if self.fast && x.device().is_cpu() {
            let y = norm::group_norm(
                &to_f32(x)?,
                self.groups,
                &self.gamma,
                &self.beta,
                self.eps as f32,
                silu,
            )?;
            return if x.dtype() == DType::F32 {
                Ok(y)
            } else {
                y.to_dtype(x.dtype())
            };
        }
        // Statistics and affine step in f32 (half-precision sums of squares overflow).
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let x32 = to_f32(x)?.reshape((b, self.groups, ()))?;
        let mean = x32.mean_keepdim(2)?;
        let centred = x32.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut affine = vec![1; dims.len()];
        affine[1] = c;
        let mut y = normed
            .reshape(dims.as_slice())?
            .broadcast_mul(&self.weight.reshape(affine.as_slice())?)?
            .broadcast_add(&self.bias.reshape(affine.as_slice())?)?;
        if silu {
            y = candle_nn::ops::silu(&y)?;
        }
        y.to_dtype(x.dtype())
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_act(x, false)
    }
}

/// Layer normalisation over the last axis with f32 statistics (`weight`, `bias` `[C]`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    gamma: Arc<Vec<f32>>,
    beta: Arc<Vec<f32>>,
    eps: f64,
    fast: bool,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of `size` values.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get(size, "weight")?;
        let bias = vb.get(size, "bias")?;
        let fast = fast_precision(weight.dtype(), weight.device()).is_some();
        Ok(Self {
            gamma: Arc::new(f32_vec(&weight)?),
            beta: Arc::new(f32_vec(&bias)?),
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            eps,
            fast,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.fast && x.device().is_cpu() {
            let y = norm::layer_norm(&to_f32(x)?, &self.gamma, &self.beta, self.eps as f32)?;
            return if x.dtype() == DType::F32 {
                Ok(y)
            } else {
                y.to_dtype(x.dtype())
            };
        }
        let dtype = x.dtype();
        let x = to_f32(x)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(candle_core::D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?
            .to_dtype(dtype)
    }
}

/// GEGLU `h * gelu_erf(gate)` over the halves of the last axis, on any device.
pub fn geglu(x: &Tensor) -> candle_core::Result<Tensor> {
    if crate::tensor::is_cpu_f32(x) {
        return Ok(activation::geglu(x)?);
    }
    let inner = x.dim(candle_core::D::Minus1)? / 2;
    let h = x.narrow(candle_core::D::Minus1, 0, inner)?;
    let gate = x.narrow(candle_core::D::Minus1, inner, inner)?.gelu_erf()?;
    h * gate
}

/// SiLU on any device (one vectorised pass for f32 CPU tensors).
pub fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    if crate::tensor::is_cpu_f32(x) {
        return Ok(activation::silu(x)?);
    }
    candle_nn::ops::silu(x)
}
