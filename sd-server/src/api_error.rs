//! [`ApiError`]: what a request did wrong (or what stopped it), as an HTTP status and a JSON
//! body `{"error": KIND, "detail": MESSAGE, "field": FIELD}` that names the field at fault.
//! No request error stops the server: each is answered and the next request is served.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why one request got no images.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON (400).
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),

    /// A field has the wrong type or a value out of range (422).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field, as the request spells it (`steps`, `init_images[0]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A field names a file by path where a name from a listing is expected (400).
    #[error("{field}: {message}")]
    PathNotAllowed {
        /// The field.
        field: String,
        /// What is wrong, and what to give instead.
        message: String,
    },

    /// No such model, LoRA or route (404).
    #[error("{0}")]
    NotFound(String),

    /// The body is larger than `--max-body` (413).
    #[error("the request body is larger than the {limit} bytes this server accepts (--max-body)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// No or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),

    /// The job queue is full (503): try again later.
    #[error("the job queue is full ({capacity} jobs waiting); try again later")]
    QueueFull {
        /// The queue's length (`--queue`).
        capacity: usize,
    },

    /// The job was stopped by `/sdapi/v1/interrupt` or its client left (409).
    #[error("interrupted at step {step}; no image was made")]
    Interrupted {
        /// The model calls done before it stopped.
        step: usize,
    },

    /// The server is stopping (503).
    #[error("the server is shutting down")]
    ShuttingDown,

    /// The pipeline failed for a reason that is not the request's (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An [`ApiError::InvalidField`].
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::PathNotAllowed { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::QueueFull { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Interrupted { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short name of the kind of error (the body's `error`).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "MalformedJson",
            ApiError::InvalidField { .. } => "InvalidField",
            ApiError::PathNotAllowed { .. } => "PathNotAllowed",
            ApiError::NotFound(_) => "NotFound",
            ApiError::BodyTooLarge { .. } => "BodyTooLarge",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::QueueFull { .. } => "QueueFull",
            ApiError::Interrupted { .. } => "Interrupted",
            ApiError::ShuttingDown => "ShuttingDown",
            ApiError::Internal(_) => "Internal",
        }
    }

    /// The field at fault, when one is.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. } | ApiError::PathNotAllowed { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }

    /// A pipeline error of a request: a field error when the pipeline blames a request field
    /// (renamed from the CLI spelling to A1111's), a cancellation, or an internal error.
    pub fn from_pipeline(error: sd_pipeline::Error) -> Self {
        match error {
            sd_pipeline::Error::InvalidRequest { field, message } => {
                ApiError::field(a1111_field(field), message)
            }
            sd_pipeline::Error::Cancelled { step } => ApiError::Interrupted { step },
            e @ (sd_pipeline::Error::Prompt(_) | sd_pipeline::Error::Lora { .. }) => {
                ApiError::field("prompt", e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The A1111 name of a [`GenerateRequest`](sd_pipeline::GenerateRequest) field the pipeline
/// names in its errors.
fn a1111_field(field: &str) -> &str {
    match field {
        "guidance-scale" => "cfg_scale",
        "batch-size" => "batch_size",
        "clip-skip" => "CLIP_stop_at_last_layers",
        "strength" => "denoising_strength",
        "init-image" => "init_images",
        "karras" => "scheduler",
        "negative_prompt" => "negative_prompt",
        other => other,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.kind(),
            "detail": self.to_string(),
            "field": self.field_name(),
        });
        (self.status(), Json(body)).into_response()
    }
}
