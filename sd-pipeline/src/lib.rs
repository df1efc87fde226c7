#![doc = include_str!("../README.md")]

pub mod checkpoint;
pub mod error;
pub mod prompt;
pub mod rng;

pub use error::{Error, Result};
pub use rng::{randn_per_sample, NormalKernel, TorchRng};

// The leaf crates whose types appear in this crate's API, for users of the facade.
pub use sd_prompt;
pub use sd_tokenize;
