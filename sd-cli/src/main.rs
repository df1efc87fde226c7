#![doc = include_str!("../README.md")]

mod animation;
mod commands;
mod extra_networks;
mod output_path;
mod peak_memory;
mod png_output;
mod temp_path;
mod unet_flops;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Large blocks freed by one denoising step are reused by the next instead of being unmapped
// and faulted in again (see sd-kernels' `alloc`).
#[global_allocator]
static ALLOC: sd_pipeline::sd_kernels::alloc::CachingAllocator =
    sd_pipeline::sd_kernels::alloc::CachingAllocator;

/// Stable Diffusion 1.x / 2.x from the command line.
#[derive(Debug, Parser)]
#[command(name = "sd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per file under `src/commands/`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate images: text-to-image, image-to-image (--init-image) or inpainting (--mask).
    Generate(Box<commands::generate::Args>),
    /// Show how a prompt is tokenized: tokens, ids and emphasis weights per 77-token window.
    Tokenize(commands::tokenize::Args),
    /// Show what a weights file is: SD 1.x / 2.x, format, dtypes, parameters per network.
    Inspect(commands::inspect::Args),
    /// Mix two or three models: A + (B - A) * scale, or A + (B - C) * scale.
    Merge(commands::merge::Args),
    /// Time a text-to-image run phase by phase: load, text encoding, UNet calls, VAE decode.
    Bench(commands::bench::Args),
    /// Walk between seeds and/or prompts: an animated GIF of the frames in between.
    Walk(Box<commands::walk::Args>),
    /// Sweep one or two parameters (cfg, emphasis, seed, steps, scheduler) into a labelled
    /// contact sheet.
    Grid(Box<commands::grid::Args>),
    /// Serve the A1111- and OpenAI-compatible HTTP API and a web page (127.0.0.1 by default).
    Serve(Box<commands::serve::Args>),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        // With `-o -` the PNG is standard output, so the report goes to standard error.
        Command::Generate(args) if args.writes_to_stdout() => {
            commands::generate::run(&args, &mut std::io::stderr().lock())
        }
        Command::Generate(args) => commands::generate::run(&args, &mut std::io::stdout().lock()),
        Command::Tokenize(args) => commands::tokenize::run(&args, &mut std::io::stdout().lock()),
        Command::Inspect(args) => commands::inspect::run(&args, &mut std::io::stdout().lock()),
        Command::Merge(args) => commands::merge::run(&args, &mut std::io::stdout().lock()),
        Command::Bench(args) => commands::bench::run(&args, &mut std::io::stdout().lock()),
        Command::Walk(args) => commands::walk::run(&args, &mut std::io::stdout().lock()),
        Command::Grid(args) => commands::grid::run(&args, &mut std::io::stdout().lock()),
        Command::Serve(args) => commands::serve::run(&args, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain on one line: which argument, then why.
            eprintln!("error: {e:#}");
            if e.is::<commands::generate::Interrupted>() {
                // The shell convention for a command stopped by SIGINT: 128 + 2.
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
