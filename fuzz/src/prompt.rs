//! Prompt emphasis parser: `sd_prompt::parse` on any text.
//!
//! Included by `sd-prompt/tests/fuzz_regressions.rs`, so it uses `sd_prompt` only.

/// Parses `data` (lossily as UTF-8) and checks what `parse` documents: the grammar accepts
/// every string (a syntax error is a bug), weights of an `Ok` are finite f32s, and text without
/// emphasis syntax comes back as one span of weight 1 holding exactly the input.
pub fn run(data: &[u8]) -> sd_prompt::Result<()> {
    let prompt = String::from_utf8_lossy(data);
    let chunks = match sd_prompt::parse(&prompt) {
        Ok(chunks) => chunks,
        Err(e @ sd_prompt::Error::Syntax { .. }) => {
            panic!("the grammar rejected {prompt:?}: {e}")
        }
        Err(e) => return Err(e),
    };
    for chunk in &chunks {
        if let Some(span) = chunk.as_span() {
            assert!(
                span.weight.is_finite(),
                "{prompt:?}: span {:?} has weight {}",
                span.text,
                span.weight
            );
        }
    }
    let plain = !prompt.contains(['(', ')', '[', ']', '\\', ':']) && !prompt.contains("BREAK");
    if plain {
        assert_eq!(
            chunks,
            [sd_prompt::Chunk::text(&*prompt, 1.0)],
            "a prompt without emphasis syntax is one span of weight 1"
        );
    }
    Ok(())
}
