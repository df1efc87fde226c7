//! The weight change `ΔW` of one LoRA / LyCORIS module, by A1111's formulas
//! (`extensions-builtin/Lora`: `network_lora`, `network_hada`, `network_lokr`, `lyco_helpers`).
//!
//! - LoRA / LoCon: `ΔW = up · down · alpha / rank`, with `down` `[rank, in, k, k]` and `up`
//!   `[out, rank, 1, 1]` flattened to matrices; with kohya's `lora_mid` (CP form)
//!   `ΔW[i, j, k, l] = Σ up[i, n] · mid[n, m, k, l] · down[m, j]`.
//! - LoHa: `ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b) · alpha / rank` (`rank` = rows of `w1_b`); with
//!   Tucker cores each factor is `cp(t, a, b)[p, r, k, l] = Σ t[i, j, k, l] · a[i, p] · b[j, r]`.
//! - LoKr: `ΔW = w1 ⊗ w2 · scale`, each factor stored whole or as a product `a · b` (`w2` also as
//!   `cp(t2, a, b)`); `scale = alpha / rank` where a factor is a product (`rank` = rows of
//!   `w2_b`, else of `w1_b`), else 1.
//!
//! Everything is computed in f32 and reshaped to the layer's weight shape.

use candle_core::{DType, Tensor};

use super::keys::Role;

/// The tensors of one module, by kind.
#[derive(Debug, Clone)]
pub enum ModuleWeights {
    /// LoRA (LoCon for convolutions), with kohya's CP middle factor when `mid` is set.
    Lora {
        /// `[rank, in, (k, k)]`.
        down: Tensor,
        /// `[out, rank, (1, 1)]`.
        up: Tensor,
        /// `[rank, rank, k, k]`.
        mid: Option<Tensor>,
    },
    /// LyCORIS LoHa (Hadamard product of two low-rank products).
    LoHa {
        /// `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`.
        w1: (Tensor, Tensor),
        /// The second pair.
        w2: (Tensor, Tensor),
        /// Tucker cores `hada_t1`, `hada_t2` (both or neither).
        tucker: Option<(Tensor, Tensor)>,
    },
    /// LyCORIS LoKr (Kronecker product).
    LoKr {
        /// The left factor.
        w1: Factor,
        /// The right factor.
        w2: Factor,
    },
}

/// A LoKr factor: whole, a product `a · b`, or (right factor only) `cp(t, a, b)`.
#[derive(Debug, Clone)]
pub enum Factor {
    /// Stored whole.
    Full(Tensor),
    /// `a · b`.
    Product(Tensor, Tensor),
    /// `cp(t, a, b)` (Tucker).
    Tucker(Tensor, Tensor, Tensor),
}

/// The kinds of module, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// Plain LoRA on a linear layer or 1x1 convolution.
    Lora,
    /// LoRA on a k×k convolution (LoCon).
    LoCon,
    /// kohya's CP-decomposed LoCon (`lora_mid`).
    LoConCp,
    /// LyCORIS LoHa.
    LoHa,
    /// LyCORIS LoKr.
    LoKr,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Lora => "LoRA",
            Algorithm::LoCon => "LoCon",
            Algorithm::LoConCp => "LoCon (CP, lora_mid)",
            Algorithm::LoHa => "LoHa",
            Algorithm::LoKr => "LoKr",
        })
    }
}

impl ModuleWeights {
    /// Gathers a module from its tensors by role; `Err` says what is missing or extra.
    pub(crate) fn from_roles(
        mut parts: std::collections::BTreeMap<Role, Tensor>,
    ) -> Result<Self, String> {
        let mut take = |role: Role| parts.remove(&role);
        let module = if let (Some(down), Some(up)) = (take(Role::Down), take(Role::Up)) {
            ModuleWeights::Lora {
                down,
                up,
                mid: take(Role::Mid),
            }
        } else if let (Some(a1), Some(b1), Some(a2), Some(b2)) = (
            take(Role::HadaW1A),
            take(Role::HadaW1B),
            take(Role::HadaW2A),
            take(Role::HadaW2B),
        ) {
            let tucker = match (take(Role::HadaT1), take(Role::HadaT2)) {
                (Some(t1), Some(t2)) => Some((t1, t2)),
                (None, None) => None,
                _ => return Err("has one of hada_t1 / hada_t2 without the other".into()),
            };
            ModuleWeights::LoHa {
                w1: (a1, b1),
                w2: (a2, b2),
                tucker,
            }
        } else {
            let w1 = match (take(Role::LokrW1), take(Role::LokrW1A), take(Role::LokrW1B)) {
                (Some(w), None, None) => Some(Factor::Full(w)),
                (None, Some(a), Some(b)) => Some(Factor::Product(a, b)),
                (None, None, None) => None,
                _ => return Err("needs lokr_w1, or lokr_w1_a and lokr_w1_b".into()),
            };
            let w2 = match (
                take(Role::LokrW2),
                take(Role::LokrW2A),
                take(Role::LokrW2B),
                take(Role::LokrT2),
            ) {
                (Some(w), None, None, None) => Some(Factor::Full(w)),
                (None, Some(a), Some(b), None) => Some(Factor::Product(a, b)),
                (None, Some(a), Some(b), Some(t)) => Some(Factor::Tucker(t, a, b)),
                (None, None, None, None) => None,
                _ => return Err("needs lokr_w2, or lokr_w2_a and lokr_w2_b (and lokr_t2)".into()),
            };
            match (w1, w2) {
                (Some(w1), Some(w2)) => ModuleWeights::LoKr { w1, w2 },
                (None, None) => {
                    return Err("has no complete LoRA, LoHa or LoKr set of tensors".into())
                }
                _ => return Err("has only one of the two LoKr factors".into()),
            }
        };
        if let Some(role) = parts.keys().next() {
            return Err(format!(
                "has a {role:?} tensor that does not belong to its kind"
            ));
        }
        Ok(module)
    }

    /// The kind of module.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            ModuleWeights::Lora { mid: Some(_), .. } => Algorithm::LoConCp,
            ModuleWeights::Lora { down, .. } if down.dims().iter().skip(2).any(|&k| k > 1) => {
                Algorithm::LoCon
            }
            ModuleWeights::Lora { .. } => Algorithm::Lora,
            ModuleWeights::LoHa { .. } => Algorithm::LoHa,
            ModuleWeights::LoKr { .. } => Algorithm::LoKr,
        }
    }

    /// The rank `alpha` is divided by (`None`: a LoKr of whole factors, scaled by 1).
    pub fn rank(&self) -> Option<usize> {
        match self {
            ModuleWeights::Lora { down, .. } => Some(down.dims()[0]),
            ModuleWeights::LoHa { w1, .. } => Some(w1.1.dims()[0]),
            ModuleWeights::LoKr { w1, w2 } => match (w1, w2) {
                (_, Factor::Product(_, b) | Factor::Tucker(_, _, b)) => Some(b.dims()[0]),
                (Factor::Product(_, b), _) => Some(b.dims()[0]),
                _ => None,
            },
        }
    }

    /// The tensors' element count (for reports).
    pub fn parameters(&self) -> usize {
        let n = |t: &Tensor| t.elem_count();
        match self {
            ModuleWeights::Lora { down, up, mid } => n(down) + n(up) + mid.as_ref().map_or(0, n),
            ModuleWeights::LoHa { w1, w2, tucker } => {
                n(&w1.0)
                    + n(&w1.1)
                    + n(&w2.0)
                    + n(&w2.1)
                    + tucker.as_ref().map_or(0, |t| n(&t.0) + n(&t.1))
            }
            ModuleWeights::LoKr { w1, w2 } => [w1, w2]
                .into_iter()
                .map(|f| match f {
                    Factor::Full(w) => n(w),
                    Factor::Product(a, b) => n(a) + n(b),
                    Factor::Tucker(t, a, b) => n(t) + n(a) + n(b),
                })
                .sum(),
        }
    }

    /// `ΔW` scaled by `alpha / rank` (not by a multiplier), in f32, shaped `shape`.
    pub fn delta(&self, alpha: Option<f64>, shape: &[usize]) -> candle_core::Result<Tensor> {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let unscaled = match self {
            ModuleWeights::Lora { down, up, mid } => {
                let rank = down.dims()[0];
                let up = f(up)?.reshape((up.dims()[0], ()))?;
                let down = f(down)?.reshape((rank, ()))?;
                match mid {
                    None => up.matmul(&down)?,
                    Some(mid) => cp_lora(&up, &f(mid)?, &down)?,
                }
            }
            ModuleWeights::LoHa { w1, w2, tucker } => {
                let (d1, d2) = match tucker {
                    None => (
                        product(&f(&w1.0)?, &f(&w1.1)?)?,
                        product(&f(&w2.0)?, &f(&w2.1)?)?,
                    ),
                    Some((t1, t2)) => (
                        tucker_cp(&f(t1)?, &f(&w1.0)?, &f(&w1.1)?)?,
                        tucker_cp(&f(t2)?, &f(&w2.0)?, &f(&w2.1)?)?,
                    ),
                };
                d1.reshape(shape)?.mul(&d2.reshape(shape)?)?
            }
            ModuleWeights::LoKr { w1, w2 } => {
                let factor = |fac: &Factor| -> candle_core::Result<Tensor> {
                    match fac {
                        Factor::Full(w) => f(w),
                        Factor::Product(a, b) => product(&f(a)?, &f(b)?),
                        Factor::Tucker(t, a, b) => tucker_cp(&f(t)?, &f(a)?, &f(b)?),
                    }
                };
                kron(&factor(w1)?, &factor(w2)?)?
            }
        };
        if unscaled.elem_count() != shape.iter().product::<usize>() {
            candle_core::bail!(
                "its change has shape {:?} ({} values), the layer's weight {shape:?}",
                unscaled.dims(),
                unscaled.elem_count()
            );
        }
        let scale = match (alpha, self.rank()) {
            (Some(alpha), Some(rank)) => alpha / rank as f64,
            _ => 1.0,
        };
        unscaled.reshape(shape)?.affine(scale, 0.0)
    }
}

/// `a · b` with `b` flattened after its first dimension.
fn product(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.reshape((a.dims()[0], ()))?
        .matmul(&b.reshape((b.dims()[0], ()))?)
}

/// `Σ up[i, n] · mid[n, m, k, l] · down[m, j]` → `[out, in, kh, kw]`.
fn cp_lora(up: &Tensor, mid: &Tensor, down: &Tensor) -> candle_core::Result<Tensor> {
    let (rank_up, rank_down, kh, kw) = mid.dims4()?;
    // mid as kh·kw matrices [n, m]: up · mid_kl · down for every (k, l).
    let mid = mid
        .permute((2, 3, 0, 1))?
        .reshape((kh * kw, rank_up, rank_down))?;
    let out = up
        .unsqueeze(0)?
        .broadcast_matmul(&mid)?
        .broadcast_matmul(&down.unsqueeze(0)?)?; // [kk, out, in]
    let (_, o, i) = out.dims3()?;
    out.permute((1, 2, 0))?.reshape((o, i, kh, kw))
}

/// LyCORIS' `cp(t, a, b)[p, r, k, l] = Σ t[i, j, k, l] · a[i, p] · b[j, r]` → `[p, r, k, l]`.
fn tucker_cp(t: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (ri, rj, kh, kw) = t.dims4()?;
    let t = t.permute((2, 3, 0, 1))?.reshape((kh * kw, ri, rj))?;
    let out = a
        .t()?
        .unsqueeze(0)?
        .broadcast_matmul(&t)?
        .broadcast_matmul(&b.unsqueeze(0)?)?; // [kk, p, r]
    let (_, p, r) = out.dims3()?;
    out.permute((1, 2, 0))?.reshape((p, r, kh, kw))
}

/// torch's `kron(w1, w2)` for a matrix `w1` and a 2-D or 4-D `w2` (as A1111: `w1` gains two
/// unit dimensions for a 4-D `w2`).
fn kron(w1: &Tensor, w2: &Tensor) -> candle_core::Result<Tensor> {
    let (o1, i1) = w1.dims2()?;
    let dims = w2.dims();
    let (o2, i2) = (dims[0], dims[1]);
    let rest: Vec<usize> = dims[2..].to_vec();
    let rest_n: usize = rest.iter().product();
    let a = w1.reshape((o1, 1, i1, 1, 1))?;
    let b = w2.reshape((1, o2, 1, i2, rest_n))?;
    let mut shape = vec![o1 * o2, i1 * i2];
    shape.extend(rest);
    a.broadcast_mul(&b)?.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    fn seq(shape: &[usize], offset: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 + offset) * 0.37).sin()).collect();
        t(&v, shape)
    }

    fn values(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn kron_matches_the_definition() {
        let w1 = seq(&[2, 3], 0.0);
        let w2 = seq(&[4, 5, 3, 3], 1.0);
        let k = kron(&w1, &w2).unwrap();
        assert_eq!(k.dims(), &[8, 15, 3, 3]);
        let (a, b) = (w1.to_vec2::<f32>().unwrap(), values(&w2));
        let got = values(&k);
        for (r, c, y, x) in [(0, 0, 0, 0), (5, 7, 1, 2), (7, 14, 2, 2), (3, 11, 0, 1)] {
            let want = a[r / 4][c / 5] * b[(((r % 4) * 5 + c % 5) * 3 + y) * 3 + x];
            assert_eq!(got[((r * 15 + c) * 3 + y) * 3 + x], want);
        }
    }

    #[test]
    fn cp_forms_match_their_sums() {
        let (out, inp, r) = (3, 2, 2);
        let up = seq(&[out, r], 0.0);
        let mid = seq(&[r, r, 3, 3], 2.0);
        let down = seq(&[r, inp], 5.0);
        let got = values(&cp_lora(&up, &mid, &down).unwrap());
        let (u, m, d) = (values(&up), values(&mid), values(&down));
        for (i, j, k, l) in [(0, 0, 0, 0), (2, 1, 1, 2), (1, 0, 2, 1)] {
            let mut want = 0.0;
            for n in 0..r {
                for mm in 0..r {
                    want += u[i * r + n] * m[((n * r + mm) * 3 + k) * 3 + l] * d[mm * inp + j];
                }
            }
            assert!((got[((i * inp + j) * 3 + k) * 3 + l] - want).abs() < 1e-5);
        }
        // cp(t, a, b) with a: [i, p], b: [j, r].
        let a = seq(&[r, out], 3.0);
        let b = seq(&[r, inp], 4.0);
        let tt = seq(&[r, r, 3, 3], 6.0);
        let got = values(&tucker_cp(&tt, &a, &b).unwrap());
        let (av, bv, tv) = (values(&a), values(&b), values(&tt));
        for (p, q, k, l) in [(0, 0, 0, 0), (2, 1, 2, 2), (1, 1, 0, 2)] {
            let mut want = 0.0;
            for i in 0..r {
                for j in 0..r {
                    want += tv[((i * r + j) * 3 + k) * 3 + l] * av[i * out + p] * bv[j * inp + q];
                }
            }
            assert!((got[((p * inp + q) * 3 + k) * 3 + l] - want).abs() < 1e-5);
        }
    }

    #[test]
    fn lora_scale_is_alpha_over_rank() {
        let m = ModuleWeights::Lora {
            down: t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]),
            up: t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]),
            mid: None,
        };
        let d = m.delta(Some(1.0), &[2, 2]).unwrap();
        assert_eq!(values(&d), vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(
            values(&m.delta(None, &[2, 2]).unwrap()),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let err = m.delta(None, &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("[3, 2]"), "{err}");
    }
}
