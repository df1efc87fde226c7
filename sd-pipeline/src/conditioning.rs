//! Prompts to the UNet's context: windows, text encoding, emphasis, and the CFG batch layout.
//!
//! The context of a guided run is `[uncond x B; cond x B]` along the batch, as diffusers
//! concatenates `negative_prompt_embeds` before `prompt_embeds`; an unguided run has `cond x B`.
//! Cond and uncond get the same number of 77-token windows (the shorter padded with empty-prompt
//! windows), so they stack.

use candle_core::Tensor;
use sd_tokenize::{ClipTokenizer, Window};

use crate::components::TextEncoder;
use crate::error::{Error, Result};
use crate::prompt::{pad_to_same_windows, prompt_windows_with};
use crate::request::Emphasis;
use crate::textual_inversion::Embeddings;

/// What the UNet is conditioned on for a whole run.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `[B, L, C]` (unguided) or `[2B, L, C]` (guided: uncond rows first).
    pub context: Tensor,
    /// Per-token cross-attention value weights `[rows, L]`, for [`Emphasis::Attention`] with
    /// any weight other than 1.
    pub token_weights: Option<Tensor>,
}

/// Tokenizes and encodes `prompt` (and `negative_prompt` when `guided`) for a batch of
/// `batch_size` images; the words of `embeddings` stand for their vectors.
#[allow(clippy::too_many_arguments)]
pub fn encode_prompts(
    tokenizer: &ClipTokenizer,
    embeddings: &Embeddings,
    text_encoder: &dyn TextEncoder,
    prompt: &str,
    negative_prompt: Option<&str>,
    batch_size: usize,
    clip_skip: usize,
    emphasis: Emphasis,
) -> Result<Conditioning> {
    let mut cond = prompt_windows_with(tokenizer, embeddings, prompt)?;
    let mut uncond = match negative_prompt {
        // Its errors name the negative prompt (`--negative-prompt`), not the prompt.
        Some(negative) => {
            prompt_windows_with(tokenizer, embeddings, negative).map_err(|e| match e {
                Error::Prompt(e) => Error::request("negative-prompt", e.to_string()),
                other => other,
            })?
        }
        None => Vec::new(),
    };
    if negative_prompt.is_some() {
        pad_to_same_windows(tokenizer, &mut cond, &mut uncond)?;
    }
    let mut prompts = Vec::with_capacity(2);
    if negative_prompt.is_some() {
        prompts.push(uncond);
    }
    prompts.push(cond);

    let weighted = prompts
        .iter()
        .flatten()
        .any(|w| w.weights.iter().any(|&x| x != 1.0));
    let attention_weights = emphasis == Emphasis::Attention && weighted;
    let mut contexts = Vec::with_capacity(prompts.len() * batch_size);
    let mut weights = Vec::with_capacity(prompts.len() * batch_size);
    for windows in &prompts {
        let ids: Vec<Vec<u32>> = windows.iter().map(|w| w.ids.clone()).collect();
        let mut z = text_encoder.encode(&ids, clip_skip)?;
        if emphasis == Emphasis::A1111 {
            z = emphasize_windows(&z, windows)?;
        }
        contexts.extend(std::iter::repeat_n(z.clone(), batch_size));
        if attention_weights {
            let w: Vec<f32> = windows.iter().flat_map(|w| w.weights.clone()).collect();
            let w = Tensor::from_vec(w, (1, z.dim(1)?), z.device())?;
            weights.extend(std::iter::repeat_n(w, batch_size));
        }
    }
    Ok(Conditioning {
        context: Tensor::cat(&contexts, 0)?,
        token_weights: if attention_weights {
            Some(Tensor::cat(&weights, 0)?)
        } else {
            None
        },
    })
}

/// A1111 emphasis on `z` `[1, 77 k, C]`, window by window (each window's mean restored on its
/// own, as A1111's `process_tokens` does per chunk). Windows whose weights are all 1 are left
/// as they are.
fn emphasize_windows(z: &Tensor, windows: &[Window]) -> Result<Tensor> {
    if windows.iter().all(|w| w.weights.iter().all(|&x| x == 1.0)) {
        return Ok(z.clone());
    }
    let (_, len, channels) = z.dims3()?;
    let per_window = len / windows.len();
    let mut parts = Vec::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate() {
        let part = z.narrow(1, i * per_window, per_window)?;
        if window.weights.iter().all(|&x| x == 1.0) {
            parts.push(part);
            continue;
        }
        let values = part.flatten_all()?.to_vec1::<f32>()?;
        let scaled = sd_prompt::emphasize_a1111(&values, &window.weights, channels)?;
        parts.push(Tensor::from_vec(
            scaled,
            (1, per_window, channels),
            z.device(),
        )?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}
