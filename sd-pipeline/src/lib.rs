#![doc = include_str!("../README.md")]

pub mod error;
pub mod rng;

pub use error::{Error, Result};
pub use rng::TorchRng;
