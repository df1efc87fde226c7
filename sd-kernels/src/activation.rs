//! Elementwise activations over whole tensors: GEGLU (the transformer feed-forward gate) and
//! SiLU, vectorised with [`crate::math`].

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::math;
use crate::simd::multiversion;
use crate::tensor::{from_vec, output, with_f32};

multiversion! {
    fn geglu_row(x: &[f32], out: &mut [f32]) {
        let (h, gate) = x.split_at(out.len());
        for ((o, a), g) in out.iter_mut().zip(h).zip(gate) {
            *o = a * math::gelu_erf(*g);
        }
    }
}

multiversion! {
    fn silu_slice(x: &[f32], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = math::silu(*v);
        }
    }
}

/// GEGLU (Shazeer 2020, eq. 6) with exact-erf GELU: for `x` `[..., 2n]` split into halves
/// `[h, gate]`, returns `h * gelu(gate)` `[..., n]`.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let last = dims.last().copied().unwrap_or(0);
    if last == 0 || !last.is_multiple_of(2) {
        return Err(Error::Shape {
            op: "geglu",
            what: format!("last dimension of {dims:?} must be even"),
        });
    }
    let n = last / 2;
    let rows = x.elem_count() / last;
    let mut out = output(rows * n);
    with_f32("geglu", x, |xs| {
        out.par_chunks_mut(n)
            .zip(xs.par_chunks(last))
            .for_each(|(o, r)| geglu_row(r, o));
    })?;
    *dims.last_mut().expect("non-empty") = n;
    from_vec(out, dims)
}

/// SiLU, x * sigmoid(x), elementwise.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let mut out = output(x.elem_count());
    with_f32("silu", x, |xs| {
        out.par_chunks_mut(16384)
            .zip(xs.par_chunks(16384))
            .for_each(|(o, r)| silu_slice(r, o));
    })?;
    from_vec(out, x.dims())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn geglu_and_silu_match_candle() {
        let v: Vec<f32> = (0..2 * 5 * 64)
            .map(|i| ((i * 37) % 200) as f32 / 25.0 - 4.0)
            .collect();
        let x = Tensor::from_vec(v, (2, 5, 64), &Device::Cpu).unwrap();
        let h = x.narrow(D::Minus1, 0, 32).unwrap();
        let g = x.narrow(D::Minus1, 32, 32).unwrap();
        let want = (h * g.gelu_erf().unwrap()).unwrap();
        let got = geglu(&x).unwrap();
        let err = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Values up to 4 x 4: erf's 4e-7 absolute error times 4.
        assert!(err < 4e-6, "geglu max error {err}");
        let want = candle_nn::ops::silu(&x).unwrap();
        let err = (silu(&x).unwrap() - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-6);
        assert!(geglu(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu)
                .unwrap()
                .narrow(1, 0, 3)
                .unwrap()
        )
        .is_err());
    }
}
