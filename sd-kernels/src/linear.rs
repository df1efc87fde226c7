//! A fully connected layer `y = x W^T + b (+ residual)` with W packed once as the right operand
//! of the matrix engine; the activations are packed on the fly.

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::gemm::{matmul_unwritten, Epilogue, MatOperand, PackedMatrix, Precision, Side, Strided};
use crate::tensor::{from_vec, pack_weight, with_f32, with_f32_opt, Unwritten};

/// A linear layer with packed weights `[out, in]` and optional bias `[out]`.
#[derive(Debug)]
pub struct Linear {
    weight: PackedMatrix,
    bias: Option<Vec<f32>>,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    /// Packs `weight` `[out, in]` (any float dtype or device; read once) and `bias`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, precision: Precision) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let packed = pack_weight("linear", weight, (out_dim, in_dim), Side::Right, precision)?;
        let bias = match bias {
            Some(b) if b.dims() != [out_dim] => {
                return Err(Error::Shape {
                    op: "linear",
                    what: format!("bias {:?} for {out_dim} outputs", b.dims()),
                })
            }
            Some(b) => Some(b.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec1()?),
            None => None,
        };
        Ok(Self {
            weight: packed,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Bytes held by the packed weights.
    pub fn weight_bytes(&self) -> usize {
        self.weight.bytes()
    }

    /// `x W^T + b (+ residual)` for `x` `[..., in]` (f32, CPU) -> `[..., out]`.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&self.in_dim) {
            return Err(Error::Shape {
                op: "linear",
                what: format!("input {dims:?} for {} inputs", self.in_dim),
            });
        }
        let rows = x.elem_count() / self.in_dim;
        *dims.last_mut().expect("non-empty") = self.out_dim;
        if let Some(r) = residual {
            if r.dims() != dims.as_slice() {
                return Err(Error::Shape {
                    op: "linear",
                    what: format!("residual {:?} for output {dims:?}", r.dims()),
                });
            }
        }
        let mut out = Unwritten::new(rows * self.out_dim);
        let n = self.out_dim;
        let run = |xs: &[f32], res: Option<&[f32]>, out: &mut [MaybeUninit<f32>]| {
            let epi = Epilogue {
                bias_row: None,
                bias_col: self.bias.as_deref(),
                residual: res,
                residual_ld: n,
            };
            let a = Strided::rows(xs, rows, self.in_dim);
            matmul_unwritten(
                a.into(),
                MatOperand::Packed(&self.weight),
                out,
                n,
                &epi,
                self.weight.precision(),
            );
        };
        with_f32("linear", x, |xs| {
            with_f32_opt("linear", residual, |rs| run(xs, rs, out.slots()))
        })??;
        // SAFETY: the product wrote every row of the output.
        from_vec(unsafe { out.assume_written() }, dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_linear_with_residual() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 77, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (24, 40), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 77, 24), &dev).unwrap();
        let want = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let want = candle_core::Module::forward(&want, &x).unwrap();
        let lin = Linear::new(&w, Some(&b), Precision::F32).unwrap();
        let got = lin.forward(&x, Some(&r)).unwrap();
        let diff = (got - (want + &r).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        assert!(lin.forward(&r, None).is_err());
    }
}
