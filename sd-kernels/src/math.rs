//! Vectorisable f32 transcendental functions for the elementwise kernels: plain arithmetic and
//! bit operations that the compiler turns into SIMD inside `#[target_feature]` loops (libm's
//! `expf` / `erff` are scalar calls). Polynomials use `mul_add`, one fused instruction in the
//! AVX2 / AVX-512 copies of those loops (a multiply and an add otherwise: the compiler may not
//! fuse them itself); only the portable fallback pays a library call for it.

/// e^x, within 2 ulp of `f32::exp` on [-87, 88]; 0 below, +inf above.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.5, 88.5);
    // n = round(x / ln 2) via the 1.5 * 2^23 trick (vectorises, unlike `round`).
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = x * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    // e^r on [-ln2/2, ln2/2]: degree-6 Taylor-like minimax polynomial (Cephes expf).
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 5e-1);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // 2^n from the integer n sitting in the low mantissa bits of `shifted` (integer ops only:
    // a float-to-int `as` cast would not vectorise); split in two so n = 128 still works.
    let n = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let (n1, n2) = (n >> 1, n - (n >> 1));
    let scale1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let scale2 = f32::from_bits(((n2 + 127) as u32) << 23);
    e_r * scale1 * scale2
}

/// 2^t for t <= 0 (t below -126 gives 2^-126 ~ 1.2e-38, i.e. nothing next to 1), within
/// 3e-7 relative: the softmax numerator, cheaper than [`exp`] (no overflow side, one scale).
#[inline(always)]
pub fn exp2_nonpositive(t: f32) -> f32 {
    let t = t.max(-126.0);
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = t + SHIFTER;
    let n = shifted - SHIFTER;
    let f = t - n; // in [-0.5, 0.5]
                   // 2^f = e^(f ln 2): Taylor polynomial to degree 6 (remainder < 1.2e-7 on |f| <= 0.5).
    let p = 1.540_353_e-4_f32;
    let p = p.mul_add(f, 1.333_355_8e-3);
    let p = p.mul_add(f, 9.618_129e-3);
    let p = p.mul_add(f, 5.550_411e-2);
    let p = p.mul_add(f, 2.402_265e-1);
    let p = p.mul_add(f, 6.931_472e-1);
    let p = p.mul_add(f, 1.0);
    // n (an integer in [-126, 0]) is in the low mantissa bits of `shifted`: integer ops only.
    let n = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// The logistic function 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// x * sigmoid(x) (SiLU / swish).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// erf(x) within 4e-7 absolute (Abramowitz & Stegun 7.1.26: 1.5e-7, plus f32 rounding).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - y * exp(-a * a);
    r.copysign(x)
}

/// GELU with the exact erf form: x/2 (1 + erf(x / sqrt 2)).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert_eq!(exp(-200.0), 0.0f32.max(exp(-200.0)));
        assert!(exp(-200.0) < 1e-37);
        assert!(exp(100.0) > 1e38);
    }

    #[test]
    fn exp2_nonpositive_matches_libm() {
        let mut t = -130.0f32;
        while t <= 0.0 {
            let (got, want) = (exp2_nonpositive(t), (t.max(-126.0) as f64).exp2());
            assert!(
                ((got as f64 - want) / want).abs() < 3e-7,
                "2^{t}: {got} vs {want}"
            );
            t += 0.00731;
        }
        assert_eq!(exp2_nonpositive(0.0), 1.0);
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        let mut x = -6.0f64;
        while x < 6.0 {
            // erf(x) by its series / continued fraction would be long; use the known
            // relation with the complementary error function via f64 libm-free integration.
            let want = erf_f64(x);
            let got = erf(x as f32) as f64;
            assert!((got - want).abs() < 4e-7, "erf({x}) = {got}, want {want}");
            let g = gelu_erf(x as f32) as f64;
            let gw = 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2));
            assert!((g - gw).abs() < 4e-7 * x.abs().max(1.0), "gelu({x})");
            x += 0.01;
        }
    }

    /// erf by Simpson integration of 2/sqrt(pi) e^{-t^2} (accurate to ~1e-12 here).
    fn erf_f64(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }
}
