//! The crate's error type.

/// What can go wrong when a kernel is called through tensors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's shape does not fit the operation.
    #[error("{op}: {what}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected and what came.
        what: String,
    },
    /// The fast path handles only f32 tensors on the CPU.
    #[error("{op}: the fast path needs f32 tensors on the CPU, got {dtype:?} on {device}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The tensor's dtype.
        dtype: candle_core::DType,
        /// The tensor's device, as text.
        device: String,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
