//! 2-D convolution that also runs for bf16 weights on the CPU.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::error::Result;

/// Feature maps at least this large take the banded im2col path (below it candle's own kernel
/// is as fast and the copies are not worth it).
const IM2COL_MIN_PIXELS: usize = 64 * 64;
/// Elements of one im2col band (256 MB in f32): bounds the extra memory at any image size.
const IM2COL_BAND_ELEMS: usize = 64 << 20;

/// `torch.nn.Conv2d` (weight `[out, in, k, k]`, bias `[out]`).
///
/// candle's CPU convolution has no bf16 kernel, so bf16 runs widen input and weights to f32,
/// convolve with f32 accumulation (as torch's CPU bf16 convolution accumulates) and round the
/// result back to bf16 once.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

impl Conv2d {
    /// Loads `weight` and `bias` under `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            inner: candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)?,
        })
    }

    /// Convolves `[B, C_in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::BF16 {
            if self.is_same_3x3() && x.dim(2)? * x.dim(3)? >= IM2COL_MIN_PIXELS {
                return self.forward_im2col(x, IM2COL_BAND_ELEMS);
            }
            return Ok(self.inner.forward(x)?);
        }
        let widen = |t: &Tensor| t.to_dtype(DType::F32);
        let bias = self.inner.bias().map(widen).transpose()?;
        let wide = candle_nn::Conv2d::new(widen(self.inner.weight())?, bias, *self.inner.config());
        Ok(wide.forward(&widen(x)?)?.to_dtype(DType::BF16)?)
    }

    fn is_same_3x3(&self) -> bool {
        let c = self.inner.config();
        let k = self.inner.weight().dims();
        k.len() == 4
            && k[2] == 3
            && k[3] == 3
            && c.padding == 1
            && c.stride == 1
            && c.dilation == 1
            && c.groups == 1
    }

    /// 3x3, stride 1, padding 1 as one matrix product per band of rows:
    /// out[:, band] = W[C_out, 9 C_in] . cols[9 C_in, rows * W], cols holding the nine shifted
    /// copies of the zero-padded input. On 2 cores this runs about 1.7x faster than candle's
    /// tiled kernel for the VAE's large maps (measured 0.83 s vs 1.45 s, 128 channels at 256x256).
    fn forward_im2col(&self, x: &Tensor, band_elems: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let weight = self.inner.weight();
        let c_out = weight.dim(0)?;
        let wmat = weight.reshape((c_out, c * 9))?;
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let rows_per_band = (band_elems / (9 * c * w)).clamp(1, h);
        let mut items = Vec::with_capacity(b);
        for i in 0..b {
            let image = padded.narrow(0, i, 1)?;
            let mut bands = Vec::new();
            for r0 in (0..h).step_by(rows_per_band) {
                let rows = rows_per_band.min(h - r0);
                let src = image.narrow(2, r0, rows + 2)?;
                let mut shifted = Vec::with_capacity(9);
                for dy in 0..3 {
                    for dx in 0..3 {
                        let view = src.narrow(2, dy, rows)?.narrow(3, dx, w)?;
                        shifted.push(view.reshape((c, 1, rows * w))?);
                    }
                }
                // Row index c_in * 9 + ky * 3 + kx matches the [C_out, C_in, 3, 3] weight layout.
                let cols = Tensor::cat(&shifted, 1)?.reshape((c * 9, rows * w))?;
                bands.push(wmat.matmul(&cols)?.reshape((c_out, rows, w))?);
            }
            items.push(Tensor::cat(&bands, 1)?);
        }
        let out = Tensor::stack(&items, 0)?;
        Ok(match self.inner.bias() {
            Some(bias) => out.broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?,
            None => out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn banded_im2col_equals_candle_conv() {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (5, 3, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.3, 5, &dev).unwrap();
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = Conv2d {
            inner: candle_nn::Conv2d::new(weight, Some(bias), cfg),
        };
        assert!(conv.is_same_3x3());
        let x = Tensor::randn(0f32, 1.0, (2, 3, 13, 7), &dev).unwrap();
        let expected = conv.inner.forward(&x).unwrap();
        // 9 * 3 * 7 = 189 elements per row: bands of 1, 4 and all 13 rows (13 = 3 * 4 + 1).
        for band_elems in [1, 4 * 189, 1 << 20] {
            let got = conv.forward_im2col(&x, band_elems).unwrap();
            let diff = (got - &expected).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() < 1e-5,
                "band_elems {band_elems}"
            );
        }
    }
}
