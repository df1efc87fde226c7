//! torch-compatible CPU random numbers (work in progress).

/// A random generator that reproduces `torch.Generator("cpu").manual_seed(seed)`.
#[derive(Debug, Clone)]
pub struct TorchRng {
    seed: u64,
}

impl TorchRng {
    /// A generator seeded like `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed this generator was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}
