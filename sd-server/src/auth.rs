//! [`Auth`]: the credentials every route asks for when any are set: an API key sent as
//! `Authorization: Bearer KEY` (`--api-key`), or A1111's basic auth (`--api-auth user:pass`,
//! several separated by commas). Without either, the server is open (it binds 127.0.0.1 by
//! default).

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::api_error::ApiError;

/// The credentials a request must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// The bearer token accepted (`--api-key`).
    pub api_key: Option<String>,
    /// The `(user, password)` pairs accepted with basic auth (`--api-auth`).
    pub basic: Vec<(String, String)>,
}

impl Auth {
    /// Reads `--api-auth`'s `user:pass[,user:pass...]`.
    ///
    /// # Errors
    /// A message naming the entry without a colon or with an empty user.
    pub fn parse_basic(text: &str) -> Result<Vec<(String, String)>, String> {
        text.split(',')
            .map(|entry| match entry.split_once(':') {
                Some((user, pass)) if !user.is_empty() => Ok((user.to_string(), pass.to_string())),
                _ => Err(format!(
                    "--api-auth: {entry:?} is not user:password (several are separated by commas)"
                )),
            })
            .collect()
    }

    /// True when no credentials are set: every request passes.
    pub fn is_open(&self) -> bool {
        self.api_key.is_none() && self.basic.is_empty()
    }

    /// Whether an `Authorization` header value carries accepted credentials.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(header) = header else {
            return false;
        };
        let (scheme, value) = header.trim().split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .api_key
                .as_deref()
                .is_some_and(|key| same(key.as_bytes(), value.as_bytes()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value) else {
                return false;
            };
            // Every pair is compared, so the time taken does not tell which user matched.
            return self.basic.iter().fold(false, |found, (user, pass)| {
                let wanted = format!("{user}:{pass}");
                same(wanted.as_bytes(), &decoded) | found
            });
        }
        false
    }
}

/// Equality in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The middleware: 401 with a message (and a basic-auth challenge when basic auth is set)
/// unless the request carries accepted credentials.
pub async fn require(
    State(auth): State<std::sync::Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.accepts(header) {
        return next.run(req).await;
    }
    let wanted = match (&auth.api_key, auth.basic.is_empty()) {
        (Some(_), true) => "an `Authorization: Bearer KEY` header (--api-key)",
        (None, false) => "basic auth (--api-auth user:password)",
        _ => "an `Authorization: Bearer KEY` header (--api-key) or basic auth (--api-auth)",
    };
    let message = if header.is_some() {
        format!("the credentials given are not accepted; this server needs {wanted}")
    } else {
        format!("no credentials; this server needs {wanted}")
    };
    let mut response = ApiError::Unauthorized(message).into_response();
    if !auth.basic.is_empty() {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sd serve\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn keys_and_passwords() {
        let open = Auth::default();
        assert!(open.accepts(None));
        let auth = Auth {
            api_key: Some("s3cret".into()),
            basic: Auth::parse_basic("ann:pw1,bob:pw:2").unwrap(),
        };
        assert_eq!(auth.basic[1], ("bob".to_string(), "pw:2".to_string()));
        assert!(!auth.accepts(None));
        assert!(auth.accepts(Some("Bearer s3cret")));
        assert!(auth.accepts(Some("bearer  s3cret ")));
        assert!(!auth.accepts(Some("Bearer s3cre")));
        assert!(!auth.accepts(Some("s3cret")));
        assert!(auth.accepts(Some(&basic("ann:pw1"))));
        assert!(auth.accepts(Some(&basic("bob:pw:2"))));
        assert!(!auth.accepts(Some(&basic("ann:pw2"))));
        assert!(!auth.accepts(Some("Basic %%%")));
        assert!(Auth::parse_basic("nopass").is_err());
        assert!(Auth::parse_basic(":pw").is_err());
    }
}
