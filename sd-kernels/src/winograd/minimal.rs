//! Winograd's minimal filterings F(m, 3) as their three 1-D maps; a 2-D tile applies each map
//! along both axes (F(m x m, 3x3) = the nested F(m, 3), Lavin & Gray 2016, eq. 8).
//!
//! Both use the interpolation points 0, ±1 (and ±2 for m = 4), whose matrices are the
//! textbook ones:
//!
//! ```text
//! F(2, 3):  Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//!           G  = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//!           Aᵀ = [1 1 1 0; 0 1 -1 -1]
//!
//! F(4, 3):  Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
//!                 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//!           G  = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1]
//!           Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//! ```
//!
//! Arrays are sized for the largest variant (T ≤ 6, M ≤ 4); a variant reads and writes only
//! its first `T` (or `M`) entries.

/// Largest transformed tile side over the variants.
pub(crate) const T_MAX: usize = 6;
/// Largest output tile side over the variants.
pub(crate) const M_MAX: usize = 4;

/// One F(m, 3): `m` outputs of a 3-tap filter from `m + 2` inputs with `m + 2` products.
pub(crate) trait Minimal: Sync {
    /// Output tile side m.
    const M: usize;
    /// Input (and transformed) tile side m + 2.
    const T: usize;
    /// G g: a 3-tap filter line to `T` values.
    fn filter(g: [f32; 3]) -> [f32; T_MAX];
    /// Bᵀ d: `T` inputs to `T` transformed values.
    fn input(d: [f32; T_MAX]) -> [f32; T_MAX];
    /// Aᵀ m: `T` products to `M` outputs.
    fn output(m: [f32; T_MAX]) -> [f32; M_MAX];
}

/// F(2, 3): 4 products for 2 outputs (2.25x fewer multiplies in 2-D), small rounding error.
pub(crate) struct F2;

/// F(4, 3): 6 products for 4 outputs (4x fewer multiplies in 2-D); its larger coefficients
/// round about ten times more than F(2, 3), still near f32 precision.
pub(crate) struct F4;

impl Minimal for F2 {
    const M: usize = 2;
    const T: usize = 4;

    #[inline(always)]
    fn filter([g0, g1, g2]: [f32; 3]) -> [f32; T_MAX] {
        [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2, 0.0, 0.0]
    }

    #[inline(always)]
    fn input(d: [f32; T_MAX]) -> [f32; T_MAX] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3], 0.0, 0.0]
    }

    #[inline(always)]
    fn output(m: [f32; T_MAX]) -> [f32; M_MAX] {
        [m[0] + m[1] + m[2], m[1] - m[2] - m[3], 0.0, 0.0]
    }
}

impl Minimal for F4 {
    const M: usize = 4;
    const T: usize = 6;

    #[inline(always)]
    fn filter([g0, g1, g2]: [f32; 3]) -> [f32; T_MAX] {
        let even = g0 + g2;
        [
            0.25 * g0,
            -(even + g1) / 6.0,
            -(even - g1) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ]
    }

    #[inline(always)]
    fn input(d: [f32; T_MAX]) -> [f32; T_MAX] {
        // Shared halves of the symmetric rows (1, 2) and (3, 4).
        let (a, b) = (d[4] - 4.0 * d[2], d[3] - 4.0 * d[1]);
        let (c, e) = (d[4] - d[2], 2.0 * (d[3] - d[1]));
        [
            4.0 * d[0] - 5.0 * d[2] + d[4],
            a + b,
            a - b,
            c + e,
            c - e,
            4.0 * d[1] - 5.0 * d[3] + d[5],
        ]
    }

    #[inline(always)]
    fn output(m: [f32; T_MAX]) -> [f32; M_MAX] {
        let (s1, d1) = (m[1] + m[2], m[1] - m[2]);
        let (s3, d3) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] + s1 + s3,
            d1 + 2.0 * d3,
            s1 + 4.0 * s3,
            d1 + 8.0 * d3 + m[5],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 1-D "valid" correlation of `d` with `g`: `y[i] = sum_k d[i + k] g[k]`.
    fn direct<const M: usize>(d: &[f32], g: [f32; 3]) -> [f32; M] {
        std::array::from_fn(|i| (0..3).map(|k| d[i + k] * g[k]).sum())
    }

    fn check<W: Minimal>() {
        let g = [0.7, -1.3, 0.4];
        let d: [f32; T_MAX] = [1.5, -0.25, 2.0, 0.75, -1.0, 0.5];
        let mut d_t = [0.0; T_MAX];
        d_t[..W::T].copy_from_slice(&d[..W::T]);
        let (u, v) = (W::filter(g), W::input(d_t));
        let y = W::output(std::array::from_fn(|e| u[e] * v[e]));
        let want = direct::<M_MAX>(&[&d[..W::T], &[0.0; 4][..]].concat(), g);
        for i in 0..W::M {
            assert!(
                (y[i] - want[i]).abs() < 1e-5,
                "F({}, 3) output {i}: {} vs {}",
                W::M,
                y[i],
                want[i]
            );
        }
    }

    #[test]
    fn both_variants_equal_the_direct_filter_in_one_dimension() {
        check::<F2>();
        check::<F4>();
    }
}
