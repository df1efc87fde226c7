//! [`ApiJson`], the JSON body extractor: malformed JSON is a 400, a body over `--max-body` a
//! 413, and a value of the wrong type a 422 naming its field (`steps: invalid type: string
//! "x", expected usize`). Unknown fields are ignored, as A1111 does; any content type is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::api_error::ApiError;
use crate::limits::Limits;

/// A request body read as JSON into `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Parses `bytes` into `T`, blaming the field at fault.
///
/// # Errors
/// [`ApiError::MalformedJson`] for text that is not JSON, [`ApiError::InvalidField`] (with the
/// field's path, or `body` for the whole) for JSON of the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                // serde_json's " at line 1 column 12" helps nobody once the field is named.
                let message = inner.to_string();
                let message = match message.rfind(" at line ") {
                    Some(cut) => message[..cut].to_string(),
                    None => message,
                };
                ApiError::field(field, message)
            }
            Category::Io | Category::Syntax | Category::Eof => {
                ApiError::MalformedJson(inner.to_string())
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    Limits: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limits = <Limits as axum::extract::FromRef<S>>::from_ref(state);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge {
                    limit: limits.max_body,
                }
            } else {
                ApiError::MalformedJson(format!("cannot read the body: {e}"))
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[allow(dead_code)]
        steps: Option<usize>,
        #[allow(dead_code)]
        inner: Option<Vec<u8>>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Sample>(br#"{"steps": "ten"}"#).unwrap_err();
        assert_eq!(e.field_name(), Some("steps"));
        assert_eq!(
            e.to_string(),
            "steps: invalid type: string \"ten\", expected usize"
        );
        let e = parse::<Sample>(br#"{"inner": [1, 300]}"#).unwrap_err();
        assert_eq!(e.field_name(), Some("inner[1]"));
        let e = parse::<Sample>(b"[1]").unwrap_err();
        assert_eq!(e.field_name(), Some("body"));
        assert!(matches!(
            parse::<Sample>(b"{\"steps\": 1").unwrap_err(),
            ApiError::MalformedJson(_)
        ));
        assert!(matches!(
            parse::<Sample>(b"{} x").unwrap_err(),
            ApiError::MalformedJson(_)
        ));
        // Unknown fields are ignored.
        assert!(parse::<Sample>(br#"{"steps": 3, "styles": []}"#).is_ok());
    }
}
