//! The subcommands of `sd`, one file each.

pub mod tokenize;
