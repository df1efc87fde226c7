//! The portable micro-kernel (4 x 16 f32, plain Rust the compiler may vectorise): correct on
//! every CPU, the reference the SIMD kernels are tested against.

use super::kernel::{store_scalar, Kernel, Tile};

const MR: usize = 4;
const NR: usize = 16;

/// f32 in portable Rust.
pub(crate) struct F32x4x16;

impl Kernel for F32x4x16 {
    type Elem = f32;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP: usize = 1;
    const KC: usize = 256;
    const MC: usize = 4 * 32;
    const NC: usize = 16 * 64;

    unsafe fn run(groups: usize, a: *const f32, a_rs: usize, b: *const f32, tile: &Tile) {
        debug_assert_eq!(a_rs, 0, "the portable kernel reads packed A only");
        let mut acc = [0f32; MR * NR];
        // SAFETY: the caller guarantees the panel lengths.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, groups * MR),
                std::slice::from_raw_parts(b, groups * NR),
            )
        };
        for (ag, bg) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for (r, &ar) in ag.iter().enumerate() {
                for (c, &bc) in acc[r * NR..(r + 1) * NR].iter_mut().zip(bg) {
                    *c += ar * bc;
                }
            }
        }
        // SAFETY: the caller guarantees the tile.
        unsafe { store_scalar(&acc, NR, tile) }
    }
}
