//! The 32-bit Mersenne Twister, as torch's `at::mt19937` runs it.
//!
//! Matsumoto & Nishimura (1998), "Mersenne Twister: a 623-dimensionally equidistributed uniform
//! pseudo-random number generator". torch uses the reference algorithm unchanged; the only torch
//! detail is the seeding: `manual_seed` takes a 64-bit seed and keeps its low 32 bits.

/// Degree of recurrence (words of state).
const N: usize = 624;
/// Middle word offset.
const M: usize = 397;
/// Coefficients of the rational normal form twist matrix.
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// Engine state: 624 words and the position of the next word to temper.
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// Knuth's linear-congruential initialisation (the reference `init_genrand`), on the seed's
    /// low 32 bits: torch truncates `manual_seed(2**32 + 5)` to 5.
    pub(crate) fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        // `next == N` makes the first draw regenerate the whole block, as the reference does.
        Self { state, next: N }
    }

    /// The next 32 random bits.
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        // Tempering.
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// 64 bits from two draws, the first in the high half (torch's `random64`).
    pub(crate) fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// Regenerates all 624 words at once.
    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C++ standard fixes the 10000th output of a default-seeded (5489) mt19937.
    #[test]
    fn ten_thousandth_output_of_seed_5489_is_the_standard_value() {
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn only_the_low_32_bits_of_the_seed_matter() {
        let mut a = Mt19937::new(5);
        let mut b = Mt19937::new((1 << 32) + 5);
        for _ in 0..1000 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }
}
