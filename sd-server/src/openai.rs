//! OpenAI's image API, `POST /v1/images/generations`: `prompt`, `n`, `size` ("WxH"),
//! `response_format` ("b64_json" only: this server keeps no files to link to). `model`,
//! `quality`, `style` and `user` are accepted and ignored; `negative_prompt`, `steps`,
//! `cfg_scale` and `seed` are read as extensions. The rest of the run is A1111's txt2img
//! with its defaults. Errors come in OpenAI's `{"error": {"message", "type", "param", "code"}}`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::a1111::GenerationRequest;
use crate::api_error::ApiError;

/// The body of `POST /v1/images/generations`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageGenerationRequest {
    /// The prompt (required).
    pub prompt: Option<String>,
    /// Images to make (default 1).
    pub n: Option<usize>,
    /// "WIDTHxHEIGHT" (default "512x512").
    pub size: Option<String>,
    /// "b64_json" (the default here; "url" is refused).
    pub response_format: Option<String>,
    /// Extension: the negative prompt.
    pub negative_prompt: Option<String>,
    /// Extension: inference steps (default 50).
    pub steps: Option<usize>,
    /// Extension: guidance scale (default 7).
    pub cfg_scale: Option<f64>,
    /// Extension: the seed (default random).
    pub seed: Option<i64>,
}

impl ImageGenerationRequest {
    /// The same request in A1111's terms.
    ///
    /// # Errors
    /// [`ApiError::InvalidField`] for a missing prompt, a malformed size, or a response format
    /// other than `b64_json`.
    pub fn to_a1111(&self) -> Result<GenerationRequest, ApiError> {
        let prompt = self
            .prompt
            .clone()
            .ok_or_else(|| ApiError::field("prompt", "missing; say what to draw"))?;
        match self.response_format.as_deref() {
            None | Some("b64_json") => {}
            Some(other) => {
                return Err(ApiError::field(
                    "response_format",
                    format!("{other:?}: only \"b64_json\" is served (this server keeps no files)"),
                ))
            }
        }
        let (width, height) = match &self.size {
            None => (512, 512),
            Some(size) => size
                .split_once('x')
                .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
                .ok_or_else(|| {
                    ApiError::field(
                        "size",
                        format!("{size:?} is not WIDTHxHEIGHT, e.g. 512x512"),
                    )
                })?,
        };
        Ok(GenerationRequest {
            prompt: Some(prompt),
            negative_prompt: self.negative_prompt.clone(),
            seed: self.seed,
            batch_size: Some(self.n.unwrap_or(1)),
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            width: Some(width),
            height: Some(height),
            ..GenerationRequest::default()
        })
    }
}

/// One image of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageData {
    /// The PNG, base64, with its A1111 `parameters` text.
    pub b64_json: String,
    /// The prompt as run.
    pub revised_prompt: String,
}

/// The answer of `POST /v1/images/generations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagesResponse {
    /// Unix time of the answer.
    pub created: u64,
    /// The images.
    pub data: Vec<ImageData>,
}

/// An [`ApiError`] in OpenAI's error shape (same status).
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = match e.status().as_u16() {
            401 => "authentication_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = serde_json::json!({
            "error": {
                "message": e.to_string(),
                "type": kind,
                "param": e.field_name(),
                "code": e.kind(),
            }
        });
        (e.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_a1111() {
        let r = ImageGenerationRequest {
            prompt: Some("cat".into()),
            n: Some(2),
            size: Some("64x32".into()),
            ..Default::default()
        };
        let a = r.to_a1111().unwrap();
        assert_eq!(
            (a.width, a.height, a.batch_size),
            (Some(64), Some(32), Some(2))
        );
        let field =
            |r: ImageGenerationRequest| r.to_a1111().unwrap_err().field_name().map(String::from);
        assert_eq!(
            field(ImageGenerationRequest::default()).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            field(ImageGenerationRequest {
                size: Some("big".into()),
                ..r.clone()
            })
            .as_deref(),
            Some("size")
        );
        assert_eq!(
            field(ImageGenerationRequest {
                response_format: Some("url".into()),
                ..r
            })
            .as_deref(),
            Some("response_format")
        );
    }
}
