//! Single-precision `ln` and `sin`/`cos` exactly as torch's AVX2 Box–Muller kernel computes them.
//!
//! torch's `NormalFill16<float>` (x86-64 with AVX2, and AVX-512 machines, which torch sends to the
//! same kernel) does not call libm: it evaluates the Cephes `logf` / `sinf` / `cosf` polynomials
//! eight lanes at a time (`avx_mathfun.h`, after Pommier's `sse_mathfun`). To give the same bits we
//! evaluate the same polynomials, lane by lane, with the same roundings. Two details decide the last
//! bit and were read off the compiled kernel in `libtorch_cpu.so` (torch 2.15):
//! - GCC contracted most multiply-adds into fused ones (`-ffp-contract=fast`); each `mul_add`
//!   below stands where the binary has an FMA instruction, each `*` then `+` where it has two.
//! - Constants are the `float` roundings of Cephes' decimal constants; they are written here as
//!   bit patterns so that no decimal-to-binary step can differ.

// ln: Cephes logf, ln(x) = ln(m) + e ln 2 with m in [sqrt(1/2), sqrt(2)).
const SQRT_HALF: f32 = f32::from_bits(0x3f35_04f3); // 0.70710677
/// Polynomial for (ln(1 + x) - x + x^2/2) / x^3 on [sqrt(1/2) - 1, sqrt(2) - 1], highest first.
const LOG_P: [f32; 9] = [
    f32::from_bits(0x3d90_21bb), // 7.0376836e-2
    f32::from_bits(0xbdeb_d1b8), // -1.1514610e-1
    f32::from_bits(0x3def_251a), // 1.1676998e-1
    f32::from_bits(0xbdfe_5d4f), // -1.2420141e-1
    f32::from_bits(0x3e11_e9bf), // 1.4249323e-1
    f32::from_bits(0xbe2a_ae50), // -1.6668057e-1
    f32::from_bits(0x3e4c_ceac), // 2.0000714e-1
    f32::from_bits(0xbe7f_fffc), // -2.4999994e-1
    f32::from_bits(0x3eaa_aaaa), // 3.3333331e-1
];
/// ln 2 split in two (Cody–Waite): LN2_HI has few bits so that e * LN2_HI is exact.
const LN2_LO: f32 = f32::from_bits(0xb95e_8083); // -2.1219444e-4
const LN2_HI: f32 = f32::from_bits(0x3f31_8000); // 0.693359375
const MIN_NORMAL_BITS: u32 = 0x0080_0000;

/// Natural logarithm of a positive normal `x` (NaN for `x <= 0`), bit-identical to `log256_ps`.
pub(crate) fn ln(x: f32) -> f32 {
    let invalid = x <= 0.0;
    // Subnormals are flushed up to the smallest normal before splitting the exponent off.
    let x = x.max(f32::from_bits(MIN_NORMAL_BITS));
    let bits = x.to_bits();
    let mut e = (((bits >> 23) as i32) - 127) as f32 + 1.0;
    // Mantissa with the exponent of 0.5: m in [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    // Move m into [sqrt(1/2), sqrt(2)) - 1: either m - 1, or 2m - 1 with e lowered by one.
    let small = m < SQRT_HALF;
    let tmp = if small { m } else { 0.0 };
    m += -1.0;
    e -= if small { 1.0 } else { 0.0 };
    m += tmp;

    let z = m * m;
    let mut y = LOG_P[0].mul_add(m, LOG_P[1]);
    for &p in &LOG_P[2..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * LN2_LO);
    y = (-z).mul_add(0.5, y);
    let r = e.mul_add(LN2_HI, m + y);
    if invalid {
        f32::NAN
    } else {
        r
    }
}

// sin/cos: Cephes sinf/cosf, reduction by multiples of pi/4 in three parts.
const FOUR_OVER_PI: f32 = f32::from_bits(0x3fa2_f983); // 1.2732395
const MINUS_DP1: f32 = f32::from_bits(0xbf49_0000); // -0.78515625
const MINUS_DP2: f32 = f32::from_bits(0xb97d_a000); // -2.4187565e-4
const MINUS_DP3: f32 = f32::from_bits(0xb322_2169); // -3.774895e-8
/// cos(x) = 1 - x^2/2 + x^4 (c0 x^4 + c1 x^2 + c2) on [-pi/4, pi/4].
const COS_C: [f32; 3] = [
    f32::from_bits(0x37cc_f5ce), // 2.4433157e-5
    f32::from_bits(0xbab6_061a), // -1.3887316e-3
    f32::from_bits(0x3d2a_aaa5), // 4.1666646e-2
];
/// sin(x) = x + x^3 (s0 x^4 + s1 x^2 + s2) on [-pi/4, pi/4].
const SIN_S: [f32; 3] = [
    f32::from_bits(0xb94c_a1f9), // -1.9515296e-4
    f32::from_bits(0x3c08_839e), // 8.332161e-3
    f32::from_bits(0xbe2a_aaa3), // -1.6666655e-1
];
const SIGN: u32 = 0x8000_0000;

/// `(sin x, cos x)`, bit-identical to `sincos256_ps` for |x| < 2^24 / (4/pi).
pub(crate) fn sin_cos(x: f32) -> (f32, f32) {
    let sign_in = x.to_bits() & SIGN;
    let ax = x.abs();
    // Octant j (rounded up to even), truncating like cvttps2dq.
    let j = (((ax * FOUR_OVER_PI) as i32).wrapping_add(1)) & !1;
    let jf = j as f32;
    let sin_sign = sign_in ^ (((j & 4) as u32) << 29);
    let cos_sign = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    let use_cos_poly_for_cos = j & 2 == 0;

    // x - j pi/4 in extended precision, each step fused in the binary.
    let mut r = jf.mul_add(MINUS_DP1, ax);
    r = MINUS_DP2.mul_add(jf, r);
    r = jf.mul_add(MINUS_DP3, r);

    let z = r * r;
    let half_z = z * 0.5;
    let mut c = COS_C[0].mul_add(z, COS_C[1]);
    c = c.mul_add(z, COS_C[2]);
    c *= z;
    c = z.mul_add(c, -half_z);
    c += 1.0;

    let mut s = SIN_S[0].mul_add(z, SIN_S[1]);
    s = s.mul_add(z, SIN_S[2]);
    s *= z;
    s = r.mul_add(s, r);

    // The kernel selects with masks and adds a zero; keep that so signed zeros come out alike.
    let (sin_from_s, sin_from_c) = if use_cos_poly_for_cos {
        (s, 0.0)
    } else {
        (0.0, c)
    };
    let sin = sin_from_s + sin_from_c;
    let cos = (s - sin_from_s) + (c - sin_from_c);
    (
        f32::from_bits(sin.to_bits() ^ sin_sign),
        f32::from_bits(cos.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomials are within a few ulps of the true functions on the Box–Muller domain.
    #[test]
    fn close_to_libm_on_box_muller_inputs() {
        for k in 1..=1 << 16 {
            let u = k as f32 / (1 << 16) as f32;
            let l = ln(u);
            assert!(
                (l - u.ln()).abs() <= 2.0 * f32::EPSILON * u.ln().abs().max(1e-3),
                "ln {u}"
            );
            let theta = f32::from_bits(0x40c9_0fdb) * u;
            let (s, c) = sin_cos(theta);
            assert!((s - theta.sin()).abs() < 3e-7, "sin {theta}");
            assert!((c - theta.cos()).abs() < 3e-7, "cos {theta}");
        }
    }

    #[test]
    fn ln_of_non_positive_is_nan() {
        assert!(ln(0.0).is_nan());
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(1.0), 0.0);
    }
}
