//! Box–Muller transforms: the block-of-16 one torch uses for tensors of 16 or more elements, and
//! the one-at-a-time double-precision one it uses for smaller tensors.
//!
//! Box & Muller (1958): for independent uniforms u1 in (0, 1] and u2 in [0, 1),
//! r = sqrt(-2 ln u1), theta = 2 pi u2 give two independent standard normals r cos theta and
//! r sin theta.

use super::cephes;

/// Which Box–Muller kernel torch runs for blocks of 16 floats: it depends on the CPU torch runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NormalKernel {
    /// x86-64 with AVX2 or AVX-512 (nearly every PC and cloud machine): Cephes polynomial
    /// `ln` / `sincos` with fused multiply-adds. Bit-exact everywhere, it does not use the
    /// platform's libm.
    #[default]
    Avx2,
    /// torch's portable kernel (`ATEN_CPU_CAPABILITY=default`, and CPUs without AVX2 such as
    /// aarch64): libm's `logf` / `cosf` / `sinf`. Bit-exact only where our libm is the one torch
    /// used (glibc on Linux); elsewhere within an ulp or so.
    Libm,
}

/// 2 pi rounded to `f32`, as torch's kernels hold it.
const TWO_PI_F32: f32 = f32::from_bits(0x40c9_0fdb);

/// Turns 16 uniforms in [0, 1) into 16 standard normals, in place: pairs (j, j + 8).
pub(crate) fn fill_16_f32(block: &mut [f32], kernel: NormalKernel) {
    for j in 0..8 {
        // 1 - u maps [0, 1) onto (0, 1], away from ln 0.
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let (n1, n2) = match kernel {
            NormalKernel::Avx2 => {
                let radius = (cephes::ln(u1) * -2.0).sqrt();
                let (sin, cos) = cephes::sin_cos(TWO_PI_F32 * u2);
                (radius * cos, radius * sin)
            }
            NormalKernel::Libm => {
                let radius = (-2.0 * u1.ln()).sqrt();
                // Here theta is formed in double (2.0f * pi<double> * u2) and then rounded.
                let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
                (radius * theta.cos(), radius * theta.sin())
            }
        };
        // torch ends with fma(n, std, mean) = fma(n, 1, 0): the value itself, but -0 becomes +0.
        block[j] = n1 + 0.0;
        block[j + 8] = n2 + 0.0;
    }
}

/// The double-precision block transform torch uses for `float64` tensors of 16 or more elements.
pub(crate) fn fill_16_f64(block: &mut [f64]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        block[j] = radius * theta.cos() + 0.0;
        block[j + 8] = radius * theta.sin() + 0.0;
    }
}

/// One step of torch's scalar `normal_distribution<double>` from two 53-bit uniforms: returns the
/// normal to use now and the one torch caches on the generator for the next scalar draw.
pub(crate) fn pair_f64(u1: f64, u2: f64) -> (f64, f64) {
    // ln(1 - u2) with u2 in [0, 1): finite, and accurate for small u2.
    let radius = (-2.0 * (-u2).ln_1p()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * u1;
    (radius * theta.cos(), radius * theta.sin())
}
