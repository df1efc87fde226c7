//! The one error type of this crate.

/// Everything that can go wrong in `sd-prompt`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The grammar rejected the prompt. The grammar accepts every string, so seeing this is a bug
    /// in this crate; it is still an error rather than a panic.
    #[error("prompt syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the offending character.
        line: usize,
        /// 1-based column (in characters) of the offending character.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// Nested weights multiplied to something an `f32` cannot hold (or to NaN).
    #[error("the weight of {text:?} multiplies out to {weight:.3e}, which is not a finite f32")]
    WeightOutOfRange {
        /// The text that got the weight.
        text: String,
        /// The product of its weights, computed in f64.
        weight: f64,
    },
    /// A `<lora:…>` tag that cannot be read.
    #[error("prompt tag {tag}: {message}")]
    LoraTag {
        /// The tag as written.
        tag: String,
        /// What is wrong with it.
        message: String,
    },
    /// A slice handed to a weighting function has the wrong length.
    #[error("{what} has {got} values, expected {expected}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// The length its shape calls for.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A dimension given to a weighting function is zero.
    #[error("{what} must not be zero")]
    ZeroDim {
        /// Which dimension.
        what: &'static str,
    },
    /// A1111's mean restoration divides by the mean of the weighted tensor, which is zero here
    /// (for example when every weight is 0).
    #[error("the weighted tensor has mean zero, so its original mean cannot be restored")]
    ZeroMean,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
