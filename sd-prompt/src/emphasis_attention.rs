//! sd-fused's emphasis: per-token weights on the value vectors inside cross-attention.
//!
//! ```text
//! out_i = sum_j softmax_j(q_i · k_j / sqrt(d)) · w_j · v_j
//! ```
//!
//! The keys are untouched, so where a query looks does not change; what a text token contributes
//! once looked at is scaled by its weight. Nothing is renormalised: w_j = 0 removes token j's
//! contribution while it keeps its share of the softmax, and w_j < 0 pushes away from it.
//!
//! This is the plain reference, on slices, for tests and for reading; the UNet does the same
//! inside its fused attention.

use crate::error::{Error, Result};

/// Scaled dot-product attention of one head with value weights.
///
/// Shapes, row-major: `q` `[n_q × d]`, `k` `[n_k × d]`, `v` `[n_k × d_v]`, `weights` `[n_k]`,
/// where `d = head_dim`, `n_k = weights.len()`, and `n_q`, `d_v` follow from the lengths.
/// Returns `[n_q × d_v]`. Sums run in f64; the softmax subtracts the row maximum first.
///
/// # Errors
/// [`Error::ZeroDim`] for `head_dim == 0` or no keys, [`Error::Shape`] when a length does not
/// fit the shapes above.
pub fn value_weighted_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    weights: &[f32],
    head_dim: usize,
) -> Result<Vec<f32>> {
    let (d, n_k) = (head_dim, weights.len());
    if d == 0 {
        return Err(Error::ZeroDim { what: "head_dim" });
    }
    if n_k == 0 {
        return Err(Error::ZeroDim {
            what: "number of keys (weights.len())",
        });
    }
    let shape = |what, expected: usize, got: usize| Error::Shape {
        what,
        expected,
        got,
    };
    if k.len() != n_k * d {
        return Err(shape("k", n_k * d, k.len()));
    }
    if !q.len().is_multiple_of(d) {
        return Err(shape("q", q.len().div_ceil(d) * d, q.len()));
    }
    if !v.len().is_multiple_of(n_k) {
        return Err(shape("v", v.len().div_ceil(n_k) * n_k, v.len()));
    }
    let d_v = v.len() / n_k;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::with_capacity(q.len() / d * d_v);
    let mut scores = vec![0.0f64; n_k];
    for q_i in q.chunks_exact(d) {
        for (s, k_j) in scores.iter_mut().zip(k.chunks_exact(d)) {
            *s = dot(q_i, k_j) * scale;
        }
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for s in &mut scores {
            *s = (*s - max).exp();
            total += *s;
        }
        let mut row = vec![0.0f64; d_v];
        for ((s, &w), v_j) in scores.iter().zip(weights).zip(v.chunks_exact(d_v)) {
            let p = s / total * f64::from(w);
            for (r, &x) in row.iter_mut().zip(v_j) {
                *r += p * f64::from(x);
            }
        }
        out.extend(row.into_iter().map(|x| x as f32));
    }
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LN2: f32 = std::f32::consts::LN_2;

    #[test]
    fn weights_scale_values_after_the_softmax() {
        // d = 4, so q·k/2. q = [2 ln2, 0, 0, 0], k_0 = e_0, k_1 = e_1: scores [ln2, 0],
        // softmax [2/3, 1/3]. v = [[3, 0], [6, 3]], w = [2, 0.5]:
        // out = 2/3 · 2 · [3, 0] + 1/3 · 0.5 · [6, 3] = [4, 0] + [1, 0.5] = [5, 0.5].
        let q = [2.0 * LN2, 0.0, 0.0, 0.0];
        let k = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let v = [3.0, 0.0, 6.0, 3.0];
        let out = value_weighted_attention(&q, &k, &v, &[2.0, 0.5], 4).unwrap();
        assert!(
            (out[0] - 5.0).abs() < 1e-5 && (out[1] - 0.5).abs() < 1e-5,
            "{out:?}"
        );
        // Unit weights: plain attention, 2/3 · [3, 0] + 1/3 · [6, 3] = [4, 1].
        let out = value_weighted_attention(&q, &k, &v, &[1.0, 1.0], 4).unwrap();
        assert!(
            (out[0] - 4.0).abs() < 1e-5 && (out[1] - 1.0).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn zero_weight_keeps_its_softmax_share_and_negative_subtracts() {
        // Same q, k, v as above, two queries: the second has q = 0, so softmax [1/2, 1/2].
        let q = [2.0 * LN2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let k = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let v = [3.0, 0.0, 6.0, 3.0];
        // w = [0, 1]: no renormalisation, so query 0 gets 1/3 · [6, 3] = [2, 1] (not [6, 3]),
        // query 1 gets 1/2 · [6, 3] = [3, 1.5].
        let out = value_weighted_attention(&q, &k, &v, &[0.0, 1.0], 4).unwrap();
        let expected = [2.0, 1.0, 3.0, 1.5];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?}");
        }
        // w = [1, -1] (`(zombie):-1` on token 1): query 1 gets 1/2 · [3, 0] - 1/2 · [6, 3].
        let out = value_weighted_attention(&q, &k, &v, &[1.0, -1.0], 4).unwrap();
        assert!(
            (out[2] + 1.5).abs() < 1e-5 && (out[3] + 1.5).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn large_scores_do_not_overflow() {
        // Scores 1000 and 0 (d = 1): softmax is [1, 0] up to e^-1000.
        let out =
            value_weighted_attention(&[1000.0], &[1.0, 0.0], &[7.0, 9.0], &[1.5, 1.0], 1).unwrap();
        assert!((out[0] - 10.5).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let k = [0.0; 4];
        assert_eq!(
            value_weighted_attention(&[0.0; 3], &k, &[0.0; 2], &[1.0; 2], 2),
            Err(Error::Shape {
                what: "q",
                expected: 4,
                got: 3
            })
        );
        assert!(matches!(
            value_weighted_attention(&[0.0; 2], &[0.0; 3], &[0.0; 2], &[1.0; 2], 2),
            Err(Error::Shape { what: "k", .. })
        ));
        assert!(matches!(
            value_weighted_attention(&[0.0; 2], &k, &[0.0; 3], &[1.0; 2], 2),
            Err(Error::Shape { what: "v", .. })
        ));
        assert!(matches!(
            value_weighted_attention(&[], &[], &[], &[], 2),
            Err(Error::ZeroDim { .. })
        ));
        assert!(matches!(
            value_weighted_attention(&[], &k, &[], &[1.0; 2], 0),
            Err(Error::ZeroDim { what: "head_dim" })
        ));
    }
}
