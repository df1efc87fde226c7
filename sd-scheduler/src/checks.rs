//! Argument checks shared by every `step` / `add_noise`, and the one tensor combination they use.

use candle_core::Tensor;

use crate::{Error, Result};

/// `index < len`, else [`Error::IndexOutOfRange`].
pub(crate) fn check_index(index: usize, len: usize) -> Result<()> {
    if index < len {
        Ok(())
    } else {
        Err(Error::IndexOutOfRange { index, len })
    }
}

/// `tensor` has the shape of `sample`, else [`Error::ShapeMismatch`] naming `what`.
pub(crate) fn check_shape(what: &'static str, tensor: &Tensor, sample: &Tensor) -> Result<()> {
    if tensor.dims() == sample.dims() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected: sample.dims().to_vec(),
            got: tensor.dims().to_vec(),
        })
    }
}

/// Everything `step` must check before touching its state.
pub(crate) fn check_step(
    index: usize,
    len: usize,
    model_output: &Tensor,
    sample: &Tensor,
    noise: Option<&Tensor>,
    noise_needed: bool,
) -> Result<()> {
    check_index(index, len)?;
    check_shape("model_output", model_output, sample)?;
    match noise {
        Some(noise) => check_shape("noise", noise, sample),
        None if noise_needed => Err(Error::MissingNoise { index }),
        None => Ok(()),
    }
}

/// a * x + b * y, each product rounded in the tensors' dtype as torch does.
pub(crate) fn lin(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}
