#![doc = include_str!("../README.md")]

pub mod activation;
pub mod alloc;
pub mod attention;
pub mod cast;
pub mod conv;
pub mod cpu;
mod error;
pub mod gemm;
pub mod input_map;
pub mod layout;
pub mod linear;
pub mod math;
pub mod nn;
pub mod norm;
pub mod side_branch;
mod simd;
pub mod tensor;
#[cfg(test)]
mod test_util;
mod winograd;

pub use attention::attention;
pub use conv::{Conv2d, ConvAlgorithm, ConvGeometry};
pub use cpu::Isa;
pub use error::{Error, Result};
pub use gemm::{matmul, Epilogue, MatOperand, PackedMatrix, Precision, Side, Strided};
pub use input_map::{ChannelAffine, InputMap};
pub use linear::Linear;
