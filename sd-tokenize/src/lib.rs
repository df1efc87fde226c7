#![doc = include_str!("../README.md")]

mod byte_level;
mod clean;
mod error;
mod ftfy;
mod html;
mod tokenizer;
mod vocab;
pub mod windows;

pub use error::{Error, Result};
pub use tokenizer::ClipTokenizer;
pub use windows::{Padding, PromptPiece, Window, COMMA_BACKTRACK, TOKENS_PER_WINDOW, WINDOW_LEN};

/// Start-of-text id in the CLIP vocabulary (`<|startoftext|>`).
pub const BOS: u32 = 49406;
/// End-of-text id in the CLIP vocabulary (`<|endoftext|>`).
pub const EOS: u32 = 49407;

/// The cleanup the original tokenizer applies before BPE (ftfy-style fixes, `html.unescape`
/// twice, whitespace collapsed, lowercased), exposed for tools that show it.
pub fn clean_text(text: &str) -> String {
    clean::clean(text)
}
