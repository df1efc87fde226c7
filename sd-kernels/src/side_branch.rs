//! Side branches: changes to a layer's output added at run time, `y = layer(x) + Σ branch(x)`,
//! instead of merged into its packed weights. A LoRA kept this way can be switched on, off or
//! to another multiplier between two calls without repacking (or re-rounding half-precision
//! weights), at the cost of the branch's products in every call.
//!
//! Every [`nn::Linear`](crate::nn::Linear) and [`nn::Conv2d`](crate::nn::Conv2d) built from a
//! `VarBuilder` has a [`SideBranches`] slot, empty by default (one lock read per call). Build a
//! network inside [`collect`] to get each layer's slot by its `VarBuilder` path
//! (`down_blocks.0.attentions.0.proj_in`), then [`SideBranches::set`] what each layer adds.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};

use candle_core::{DType, Tensor};

/// What one branch adds to a layer's output.
#[derive(Debug, Clone)]
pub enum SideBranch {
    /// `scale · up(down(x))`: `down` `[rank, in]` or `[rank, in, k, k]` (a convolution with the
    /// layer's stride and padding), `up` `[out, rank]` or `[out, rank, 1, 1]`.
    LowRank {
        /// The down projection.
        down: Tensor,
        /// The up projection.
        up: Tensor,
        /// Multiplier times alpha / rank.
        scale: f64,
    },
    /// `x ΔWᵀ` (or the convolution by ΔW), with ΔW already scaled, shaped as the weight.
    Dense(Tensor),
}

/// One layer's side branches (see the module docs).
#[derive(Debug, Default)]
pub struct SideBranches {
    branches: RwLock<Vec<SideBranch>>,
    /// The layer's weight shape.
    shape: Vec<usize>,
}

impl SideBranches {
    pub(crate) fn new(shape: &[usize]) -> Arc<Self> {
        Arc::new(Self {
            branches: RwLock::new(Vec::new()),
            shape: shape.to_vec(),
        })
    }

    /// The shape of the layer's weight (`[out, in]` or `[out, in, k, k]`).
    pub fn weight_shape(&self) -> &[usize] {
        &self.shape
    }

    /// Replaces the branches (an empty list turns them off).
    pub fn set(&self, branches: Vec<SideBranch>) {
        if let Ok(mut b) = self.branches.write() {
            *b = branches;
        }
    }

    /// Whether any branch is set.
    pub fn is_active(&self) -> bool {
        self.branches.read().is_ok_and(|b| !b.is_empty())
    }

    /// `y` plus every branch of a linear layer applied to `x` (`[..., in]`).
    pub(crate) fn add_linear(&self, x: &Tensor, y: Tensor) -> candle_core::Result<Tensor> {
        let Ok(branches) = self.branches.read() else {
            return Ok(y);
        };
        let mut y = y;
        for branch in branches.iter() {
            let x = x.to_dtype(DType::F32)?;
            let extra = match branch {
                SideBranch::LowRank { down, up, scale } => {
                    let down = down.flatten_from(1)?;
                    let up = up.flatten_from(1)?;
                    let h = x.broadcast_matmul(&down.t()?)?;
                    (h.broadcast_matmul(&up.t()?)? * *scale)?
                }
                SideBranch::Dense(delta) => x.broadcast_matmul(&delta.flatten_from(1)?.t()?)?,
            };
            y = (y.to_dtype(DType::F32)? + extra)?;
        }
        Ok(y)
    }

    /// `y` plus every branch of a convolution (`stride`, `padding`) applied to `x`.
    pub(crate) fn add_conv(
        &self,
        x: &Tensor,
        y: Tensor,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Tensor> {
        let Ok(branches) = self.branches.read() else {
            return Ok(y);
        };
        let mut y = y;
        for branch in branches.iter() {
            let x = x.to_dtype(DType::F32)?;
            let as_conv = |w: &Tensor| -> candle_core::Result<Tensor> {
                match w.dims() {
                    [o, i] => w.reshape((*o, *i, 1, 1)),
                    _ => Ok(w.clone()),
                }
            };
            let extra = match branch {
                SideBranch::LowRank { down, up, scale } => {
                    let h = x.conv2d(&as_conv(down)?, padding, stride, 1, 1)?;
                    (h.conv2d(&as_conv(up)?, 0, 1, 1, 1)? * *scale)?
                }
                SideBranch::Dense(delta) => x.conv2d(&as_conv(delta)?, padding, stride, 1, 1)?,
            };
            y = (y.to_dtype(DType::F32)? + extra)?;
        }
        Ok(y)
    }
}

/// Layer slots by `VarBuilder` path, in the order the layers were built.
pub type Slots = Vec<(String, Arc<SideBranches>)>;

thread_local! {
    static COLLECTING: RefCell<Option<Slots>> = const { RefCell::new(None) };
}

/// Runs `build` and returns, with its result, the side-branch slot of every layer it built on
/// this thread, by `VarBuilder` path.
pub fn collect<R>(build: impl FnOnce() -> R) -> (R, Slots) {
    let previous = COLLECTING.with(|c| c.replace(Some(Vec::new())));
    let out = build();
    let slots = COLLECTING.with(|c| c.replace(previous)).unwrap_or_default();
    (out, slots)
}

/// A slot for the layer at `path` with weight `shape`, registered when [`collect`] runs.
pub(crate) fn slot(path: &str, shape: &[usize]) -> Arc<SideBranches> {
    let slot = SideBranches::new(shape);
    COLLECTING.with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            list.push((path.to_string(), slot.clone()));
        }
    });
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn;
    use candle_core::{Device, Module};
    use candle_nn::{Conv2dConfig, VarBuilder};
    use std::collections::HashMap;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::test_util::rand(shape, seed)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_util::max_abs_diff(a, b)
    }

    #[test]
    fn a_low_rank_branch_equals_the_merged_weight() {
        let (inp, out, rank) = (24, 40, 3);
        let w = randn(&[out, inp], 1);
        let b = randn(&[out], 2);
        let tensors: HashMap<String, Tensor> = [
            ("lin.weight".to_string(), w.clone()),
            ("lin.bias".to_string(), b.clone()),
        ]
        .into_iter()
        .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let (linear, slots) = collect(|| nn::Linear::new(inp, out, vb.pp("lin")).unwrap());
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].0, "lin");
        assert_eq!(slots[0].1.weight_shape(), &[out, inp]);
        let (down, up, scale) = (randn(&[rank, inp], 3), randn(&[out, rank], 4), 0.7);
        let x = randn(&[2, 5, inp], 5);
        let plain = linear.forward(&x).unwrap();
        slots[0].1.set(vec![SideBranch::LowRank {
            down: down.clone(),
            up: up.clone(),
            scale,
        }]);
        let merged_w = (&w + (up.matmul(&down).unwrap() * scale).unwrap()).unwrap();
        let merged = nn::Linear::from_weights(merged_w, Some(b)).unwrap();
        let d = max_diff(&linear.forward(&x).unwrap(), &merged.forward(&x).unwrap());
        assert!(d < 1e-4, "{d}");
        slots[0].1.set(Vec::new());
        assert_eq!(max_diff(&linear.forward(&x).unwrap(), &plain), 0.0);
    }

    #[test]
    fn a_dense_conv_branch_equals_the_merged_weight() {
        let (cin, cout) = (6, 8);
        let w = randn(&[cout, cin, 3, 3], 6);
        let b = randn(&[cout], 7);
        let tensors: HashMap<String, Tensor> = [
            ("conv.weight".to_string(), w.clone()),
            ("conv.bias".to_string(), b.clone()),
        ]
        .into_iter()
        .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let config = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let (conv, slots) =
            collect(|| nn::Conv2d::new(cin, cout, 3, config, vb.pp("conv")).unwrap());
        let delta = (randn(&[cout, cin, 3, 3], 8) * 0.3).unwrap();
        slots[0].1.set(vec![SideBranch::Dense(delta.clone())]);
        let merged = nn::Conv2d::from_weights((&w + &delta).unwrap(), Some(b), config).unwrap();
        let x = randn(&[2, cin, 9, 7], 9);
        let d = max_diff(&conv.forward(&x).unwrap(), &merged.forward(&x).unwrap());
        assert!(d < 1e-4, "{d}");
        // Layers built outside `collect` register nowhere.
        let (_, none) = collect(|| ());
        assert!(none.is_empty());
    }
}
