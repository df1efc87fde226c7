//! What a parsed prompt is made of.

/// A run of prompt text that carries one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The text, with emphasis syntax removed and escapes resolved.
    pub text: String,
    /// Its weight: 1 is neutral, products of nested groups otherwise.
    pub weight: f32,
}

impl Span {
    /// A span of `text` with `weight`.
    pub fn new(text: impl Into<String>, weight: f32) -> Self {
        Self {
            text: text.into(),
            weight,
        }
    }
}

/// One element of a parsed prompt, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Weighted text.
    Text(Span),
    /// `BREAK`: the tokens after it start a new 75-token window.
    Break,
}

impl Chunk {
    /// A text chunk of `text` with `weight`.
    pub fn text(text: impl Into<String>, weight: f32) -> Self {
        Chunk::Text(Span::new(text, weight))
    }

    /// The span, unless this is a break.
    pub fn as_span(&self) -> Option<&Span> {
        match self {
            Chunk::Text(span) => Some(span),
            Chunk::Break => None,
        }
    }
}
