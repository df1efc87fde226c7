//! `sd tokenize`: what the text encoder will see for a prompt (tokens, ids, emphasis weights,
//! windows), as a table or as JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sd_pipeline::prompt::prompt_windows;
use sd_pipeline::sd_tokenize::{ClipTokenizer, Padding, Window, TOKENS_PER_WINDOW};

/// Arguments of `sd tokenize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder whose tokenizer to use: DIR/tokenizer/ or DIR itself, holding vocab.json +
    /// merges.txt or tokenizer.json; its pad token picks the padding (SD 2.x pads with 0).
    /// Without it: the bundled CLIP vocabulary, padded with eos (SD 1.x).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Print one JSON object: {"input_ids": [[77 ints], ...], "weights": [[77 floats], ...], ...}.
    #[arg(long)]
    pub json: bool,
    /// The prompt, with emphasis syntax; several arguments are joined with spaces.
    #[arg(required = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// Runs `sd tokenize`, writing to `out`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let tokenizer = load_tokenizer(args.model.as_deref())?;
    let prompt = args.prompt.join(" ");
    let windows = prompt_windows(&tokenizer, &prompt).context("PROMPT")?;
    if args.json {
        write_json(&tokenizer, &windows, out)
    } else {
        write_table(&tokenizer, &windows, out)
    }
}

fn load_tokenizer(model: Option<&Path>) -> Result<ClipTokenizer> {
    let Some(dir) = model else {
        return ClipTokenizer::bundled().context("loading the bundled CLIP vocabulary");
    };
    if !dir.is_dir() {
        bail!("--model {}: not a folder", dir.display());
    }
    let sub = dir.join("tokenizer");
    let folder = if sub.is_dir() { sub } else { dir.to_owned() };
    ClipTokenizer::from_dir(&folder)
        .with_context(|| format!("--model {}: cannot load its tokenizer", dir.display()))
}

/// Prompt tokens in a window: those between bos and the first eos (a prompt cannot produce eos).
fn token_count(window: &Window, eos: u32) -> usize {
    window.ids[1..]
        .iter()
        .position(|&id| id == eos)
        .unwrap_or(window.ids.len() - 1)
}

fn token_text(tokenizer: &ClipTokenizer, id: u32) -> String {
    tokenizer
        .token_text(id)
        .unwrap_or_else(|| format!("<unknown id {id}>"))
}

#[derive(serde::Serialize)]
struct Json<'a> {
    input_ids: Vec<&'a [u32]>,
    weights: Vec<&'a [f32]>,
    tokens: Vec<Vec<String>>,
    token_count: usize,
    window_token_counts: Vec<usize>,
    tokens_per_window: usize,
    padding: &'static str,
}

fn write_json(tokenizer: &ClipTokenizer, windows: &[Window], out: &mut impl Write) -> Result<()> {
    let counts: Vec<usize> = windows
        .iter()
        .map(|w| token_count(w, tokenizer.eos()))
        .collect();
    let json = Json {
        input_ids: windows.iter().map(|w| w.ids.as_slice()).collect(),
        weights: windows.iter().map(|w| w.weights.as_slice()).collect(),
        tokens: windows
            .iter()
            .map(|w| w.ids.iter().map(|&id| token_text(tokenizer, id)).collect())
            .collect(),
        token_count: counts.iter().sum(),
        window_token_counts: counts,
        tokens_per_window: TOKENS_PER_WINDOW,
        padding: match tokenizer.padding() {
            Padding::Eos => "eos",
            Padding::Zero => "zero",
        },
    };
    serde_json::to_writer(&mut *out, &json)?;
    writeln!(out)?;
    Ok(())
}

fn write_table(tokenizer: &ClipTokenizer, windows: &[Window], out: &mut impl Write) -> Result<()> {
    let eos = tokenizer.eos();
    let mut total = 0;
    for (n, window) in windows.iter().enumerate() {
        let count = token_count(window, eos);
        total += count;
        writeln!(
            out,
            "window {} of {}: {count} of {TOKENS_PER_WINDOW} tokens",
            n + 1,
            windows.len()
        )?;
        // bos, the prompt's tokens, eos; the padding after them is summarised on one line.
        let shown = count + 2;
        let texts: Vec<String> = window.ids[..shown]
            .iter()
            .map(|&id| token_text(tokenizer, id))
            .collect();
        let width = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        writeln!(out, "{:>4}  {:<width$}  {:>5}  weight", "#", "token", "id")?;
        for (i, text) in texts.iter().enumerate() {
            let (id, weight) = (window.ids[i], window.weights[i]);
            writeln!(out, "{i:>4}  {text:<width$}  {id:>5}  {weight:?}")?;
        }
        let padding = window.ids.len() - shown;
        if padding > 0 {
            let pad = window.ids[shown];
            writeln!(
                out,
                "{:>4}  padding: {padding} x {} ({pad}), weight 1.0",
                format!("{shown}-{}", window.ids.len() - 1),
                token_text(tokenizer, pad)
            )?;
        }
    }
    let windows_word = if windows.len() == 1 {
        "window"
    } else {
        "windows"
    };
    writeln!(
        out,
        "{total} tokens in {} {windows_word} of {TOKENS_PER_WINDOW}",
        windows.len()
    )?;
    Ok(())
}
