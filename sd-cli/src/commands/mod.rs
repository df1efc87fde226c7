//! The subcommands of `sd`, one file each (`inspect` in two: models, and LoRA / embedding files).

pub mod bench;
pub mod generate;
pub mod grid;
pub mod inspect;
pub mod inspect_networks;
pub mod merge;
pub mod serve;
pub mod tokenize;
pub mod walk;
