//! CLIP tokenizer: `ClipTokenizer::encode` (cleanup, pre-tokenizer, BPE, 77-token windows) on
//! any text.
//!
//! Included by `sd-tokenize/tests/fuzz_regressions.rs`, so it uses `sd_tokenize` only.

use std::sync::OnceLock;

use sd_tokenize::{ClipTokenizer, PromptPiece, WINDOW_LEN};

/// The bundled tokenizer, built once per process (its BPE cache is shared across inputs, as in
/// a long-running `sd` that tokenizes many prompts).
fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(ClipTokenizer::default)
}

/// Encodes `data` (lossily as UTF-8), then the same tokens with a `BREAK` at each newline of the
/// input, and checks every window's framing: 77 ids and weights, bos first, ids in the vocabulary.
pub fn run(data: &[u8]) -> sd_tokenize::Result<()> {
    let tok = tokenizer();
    let text = String::from_utf8_lossy(data);
    let windows = tok.encode(&text)?;
    let mut pieces = Vec::new();
    for line in text.split('\n') {
        if !pieces.is_empty() {
            pieces.push(PromptPiece::Break);
        }
        let ids = tok.tokenize(line)?;
        pieces.extend(
            ids.into_iter()
                .map(|id| PromptPiece::Token { id, weight: 1.5 }),
        );
    }
    let with_breaks = tok.windows(&pieces);
    for window in windows.iter().chain(&with_breaks) {
        assert_eq!(window.ids.len(), WINDOW_LEN, "{text:?}");
        assert_eq!(window.weights.len(), WINDOW_LEN, "{text:?}");
        assert_eq!(window.ids[0], tok.bos(), "{text:?}");
        let vocab = tok.vocab_size() as u32;
        assert!(
            window.ids.iter().all(|id| *id < vocab),
            "{text:?}: {:?}",
            window.ids
        );
    }
    assert!(!windows.is_empty() && !with_breaks.is_empty(), "{text:?}");
    Ok(())
}
