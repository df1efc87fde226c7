//! Weights converted between float formats as they are read: into a fresh buffer, in chunks
//! across the threads, vectorised. Reading a network from a memory-mapped file is a copy (or a
//! conversion) per tensor; done by one thread that copy and the page faults of its fresh
//! buffer were a third of a warm load.

use half::bf16;
use rayon::prelude::*;

/// Values per rayon task (1 MiB of f32).
const CHUNK: usize = 1 << 18;

/// A copy of `src`.
pub fn copy_f32(src: &[f32]) -> Vec<f32> {
    // Zeroed pages from the system (no pass over them here); each is faulted in by the thread
    // that first writes it.
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
    out
}

/// `src` rounded to bf16 (to nearest, ties to even; NaN stays NaN).
pub fn f32_to_bf16(src: &[f32]) -> Vec<bf16> {
    let mut bits = vec![0u16; src.len()];
    bits.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| crate::gemm::to_bf16_slice(s, d));
    let mut bits = std::mem::ManuallyDrop::new(bits);
    // SAFETY: `bf16` is `repr(transparent)` over `u16` (same size, alignment and valid bit
    // patterns), so the allocation is a valid `Vec<bf16>` of the same length and capacity.
    unsafe {
        Vec::from_raw_parts(
            bits.as_mut_ptr().cast::<bf16>(),
            bits.len(),
            bits.capacity(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_the_scalar_ones() {
        // Several chunks and a partial one; rounding ties, a NaN and infinities.
        let mut src: Vec<f32> = (0..CHUNK * 2 + 77)
            .map(|i| (i as f32 * 0.7311).sin() * 1e3)
            .collect();
        src[5] = f32::from_bits(0x3F80_8000); // 1 + 2^-8: a tie, rounds to even (1.0)
        src[6] = f32::NAN;
        src[7] = f32::INFINITY;
        src[8] = f32::NEG_INFINITY;
        assert!(copy_f32(&src)
            .iter()
            .zip(&src)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let got = f32_to_bf16(&src);
        assert_eq!(got.len(), src.len());
        assert_eq!(got[5], bf16::ONE);
        assert!(got[6].is_nan());
        for (g, &x) in got.iter().zip(&src).filter(|(_, x)| !x.is_nan()) {
            assert_eq!(*g, bf16::from_f32(x), "{x}");
        }
    }
}
