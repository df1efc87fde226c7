//! Prompt text to weighted 77-token windows: emphasis spans from `sd-prompt`, tokenized span by
//! span with `sd-tokenize`, as A1111's `tokenize_line` does.
//!
//! Each span's text is tokenized on its own (so `photo(graph)` is `photo` + `graph`, as in A1111),
//! every token gets its span's weight, `BREAK` becomes [`PromptPiece::Break`], and the tokenizer
//! cuts the result into windows (bos, up to 75 tokens, eos, padding; comma back-off).

use sd_prompt::Chunk;
use sd_tokenize::{ClipTokenizer, PromptPiece, Window};

use crate::error::Result;
use crate::textual_inversion::Embeddings;

/// The weighted tokens of `prompt`, in order, with its breaks; no bos/eos.
///
/// # Errors
/// The prompt's weights overflow `f32` ([`sd_prompt::Error::WeightOutOfRange`]), or the
/// tokenizer fails on a span.
pub fn prompt_pieces(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Vec<PromptPiece>> {
    prompt_pieces_with(tokenizer, &Embeddings::default(), prompt)
}

/// [`prompt_pieces`] with the words of `embeddings` (within one span) as their vectors' slots.
///
/// # Errors
/// As [`prompt_pieces`].
pub fn prompt_pieces_with(
    tokenizer: &ClipTokenizer,
    embeddings: &Embeddings,
    prompt: &str,
) -> Result<Vec<PromptPiece>> {
    let mut pieces = Vec::new();
    for chunk in sd_prompt::parse(prompt)? {
        match chunk {
            Chunk::Text(span) => {
                let ids = tokenizer.tokenize(&span.text)?;
                pieces.extend(embeddings.pieces(&ids, span.weight));
            }
            Chunk::Break => pieces.push(PromptPiece::Break),
        }
    }
    Ok(pieces)
}

/// The windows of `prompt`: ids and per-token weights, each [`sd_tokenize::WINDOW_LEN`] long
/// (bos, eos and padding weigh 1). A prompt without emphasis gives exactly
/// [`ClipTokenizer::encode`]'s windows.
///
/// # Errors
/// As [`prompt_pieces`].
pub fn prompt_windows(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Vec<Window>> {
    prompt_windows_with(tokenizer, &Embeddings::default(), prompt)
}

/// [`prompt_windows`] with textual-inversion embeddings (see [`prompt_pieces_with`]).
///
/// # Errors
/// As [`prompt_pieces`].
pub fn prompt_windows_with(
    tokenizer: &ClipTokenizer,
    embeddings: &Embeddings,
    prompt: &str,
) -> Result<Vec<Window>> {
    Ok(tokenizer.windows(&prompt_pieces_with(tokenizer, embeddings, prompt)?))
}

/// Gives `cond` and `uncond` the same number of windows by appending windows of the empty prompt
/// to the shorter one, as A1111 pads a shorter conditioning with the empty prompt's embedding,
/// so both can be encoded and batched together for classifier-free guidance.
///
/// # Errors
/// The tokenizer fails on the empty prompt (it does not with a CLIP vocabulary).
pub fn pad_to_same_windows(
    tokenizer: &ClipTokenizer,
    cond: &mut Vec<Window>,
    uncond: &mut Vec<Window>,
) -> Result<()> {
    let target = cond.len().max(uncond.len());
    if cond.len() == uncond.len() {
        return Ok(());
    }
    let Some(empty) = tokenizer.encode("")?.into_iter().next() else {
        return Ok(());
    };
    cond.resize(target, empty.clone());
    uncond.resize(target, empty);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sd_tokenize::{BOS, EOS, WINDOW_LEN};
    use std::sync::OnceLock;

    /// Built once: building the BPE model from the bundled vocabulary is the slow part.
    fn tokenizer() -> &'static ClipTokenizer {
        static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(ClipTokenizer::default)
    }

    fn window(tokens: &[(u32, f32)]) -> Window {
        let mut ids = vec![BOS];
        let mut weights = vec![1.0];
        for &(id, w) in tokens {
            ids.push(id);
            weights.push(w);
        }
        ids.resize(WINDOW_LEN, EOS);
        weights.resize(WINDOW_LEN, 1.0);
        Window { ids, weights }
    }

    fn id(tokenizer: &ClipTokenizer, word: &str) -> u32 {
        let ids = tokenizer.tokenize(word).unwrap();
        assert_eq!(ids.len(), 1, "{word} is one token");
        ids[0]
    }

    #[test]
    fn emphasis_weights_follow_their_tokens() {
        let tok = tokenizer();
        let windows = prompt_windows(tok, "a ((masterpiece)) [blurry] (cat:1.3)").unwrap();
        // Ids from open_clip's SimpleTokenizer: a 320, masterpiece 12066, blurry 21977, cat 2368.
        let (a, m, b, c) = (320, 12066, 21977, 2368);
        assert_eq!(
            [a, m, b, c],
            [
                id(tok, "a"),
                id(tok, "masterpiece"),
                id(tok, "blurry"),
                id(tok, "cat")
            ]
        );
        let expected = window(&[
            (a, 1.0),
            (m, (1.1f64 * 1.1) as f32),
            (b, (1.0 / 1.1f64) as f32),
            (c, 1.3),
        ]);
        assert_eq!(windows, vec![expected]);
    }

    #[test]
    fn sd_fused_negative_weight() {
        let tok = tokenizer();
        let windows = prompt_windows(tok, "portrait of female (zombie):-1, digital art").unwrap();
        // open_clip: portrait 5352, of 539, female 3970, zombie 11819, `,` 267, digital 2794, art 794.
        let expected = window(&[
            (5352, 1.0),
            (539, 1.0),
            (3970, 1.0),
            (11819, -1.0),
            (267, 1.0),
            (2794, 1.0),
            (794, 1.0),
        ]);
        assert_eq!(windows, vec![expected]);
    }

    #[test]
    fn break_starts_a_new_window() {
        let tok = tokenizer();
        let windows = prompt_windows(tok, "a cat BREAK (a dog)").unwrap();
        let dog = id(tok, "dog");
        assert_eq!(
            windows,
            vec![
                window(&[(320, 1.0), (2368, 1.0)]),
                window(&[(320, 1.1), (dog, 1.1)]),
            ]
        );
    }

    #[test]
    fn long_weighted_prompts_keep_weights_across_windows() {
        let tok = tokenizer();
        // 80 tokens of `cat`, the last 10 weighted: window 2 holds tokens 76..80, all weighted.
        let prompt = format!("{}({})", "cat ".repeat(70), "cat ".repeat(10));
        let windows = prompt_windows(tok, &prompt).unwrap();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].weights[71], 1.1);
        assert_eq!(windows[0].weights[70], 1.0);
        assert_eq!(windows[1], window(&[(2368, 1.1); 5]));
    }

    #[test]
    fn padding_matches_window_counts_with_the_empty_prompt() {
        let tok = tokenizer();
        let mut cond = prompt_windows(tok, "a BREAK b BREAK c").unwrap();
        let mut uncond = prompt_windows(tok, "blurry").unwrap();
        assert_eq!((cond.len(), uncond.len()), (3, 1));
        pad_to_same_windows(tok, &mut cond, &mut uncond).unwrap();
        assert_eq!(uncond.len(), 3);
        assert_eq!(uncond[1], window(&[]));
        assert_eq!(uncond[2], window(&[]));
        assert_eq!(cond.len(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn prompts_without_emphasis_tokenize_as_the_plain_tokenizer(
            s in "[^()\\[\\]:\\\\]{0,400}"
        ) {
            prop_assume!(!s.contains("BREAK"));
            let tok = tokenizer();
            let windows = prompt_windows(tok, &s).unwrap();
            let plain = tok.encode(&s).unwrap();
            prop_assert_eq!(windows.len(), plain.len());
            for (w, p) in windows.iter().zip(&plain) {
                prop_assert_eq!(&w.ids, &p.ids);
                prop_assert!(w.weights.iter().all(|&x| x == 1.0));
            }
        }

        #[test]
        fn any_prompt_gives_full_windows_or_an_error(s in any::<String>()) {
            let tok = tokenizer();
            if let Ok(windows) = prompt_windows(tok, &s) {
                prop_assert!(!windows.is_empty());
                for w in &windows {
                    prop_assert_eq!(w.ids.len(), WINDOW_LEN);
                    prop_assert_eq!(w.weights.len(), WINDOW_LEN);
                }
            }
        }
    }
}
