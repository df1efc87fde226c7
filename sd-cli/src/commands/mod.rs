//! The subcommands of `sd`, one file each.

pub mod bench;
pub mod generate;
pub mod inspect;
pub mod merge;
pub mod tokenize;
