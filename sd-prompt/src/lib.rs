#![doc = include_str!("../README.md")]

mod chunk;
mod emphasis_a1111;
mod emphasis_attention;
mod error;
mod lora_tags;
mod parse;

pub use chunk::{Chunk, Span};
pub use emphasis_a1111::emphasize_a1111;
pub use emphasis_attention::value_weighted_attention;
pub use error::{Error, Result};
pub use lora_tags::{split_lora_tags, LoraTag};
pub use parse::{parse, ROUND_FACTOR, SQUARE_FACTOR};
