//! [`Limits`]: how much one request may ask of the server (`--max-body`, `--max-pixels`,
//! `--max-steps`, `--max-images`), checked before a job is queued.

use crate::api_error::ApiError;

/// The caps on requests, with defaults that suit one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body read, in bytes (default 32 MiB: a few base64 PNGs).
    pub max_body: usize,
    /// The most pixels (width x height) of one image (default 1024 x 1024).
    pub max_pixels: usize,
    /// The most inference steps of one request (default 150, A1111's slider maximum).
    pub max_steps: usize,
    /// The most images one request makes, `batch_size x n_iter` (default 8).
    pub max_images: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 32 << 20,
            max_pixels: 1024 * 1024,
            max_steps: 150,
            max_images: 8,
        }
    }
}

impl Limits {
    /// Checks a request's size, steps and image count against the limits.
    ///
    /// # Errors
    /// [`ApiError::InvalidField`] naming the field over its limit and the server option.
    pub fn check(
        &self,
        (width, height): (usize, usize),
        steps: usize,
        images: usize,
    ) -> Result<(), ApiError> {
        if width.saturating_mul(height) > self.max_pixels {
            return Err(ApiError::field(
                "width",
                format!(
                    "{width}x{height} is {} pixels; this server makes at most {} (--max-pixels)",
                    width.saturating_mul(height),
                    self.max_pixels
                ),
            ));
        }
        if steps > self.max_steps {
            return Err(ApiError::field(
                "steps",
                format!(
                    "{steps} steps; this server runs at most {} (--max-steps)",
                    self.max_steps
                ),
            ));
        }
        if images > self.max_images {
            return Err(ApiError::field(
                "batch_size",
                format!(
                    "batch_size x n_iter is {images} images; this server makes at most {} per \
                     request (--max-images)",
                    self.max_images
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_names_its_field() {
        let limits = Limits {
            max_pixels: 64 * 64,
            max_steps: 10,
            max_images: 2,
            ..Limits::default()
        };
        assert!(limits.check((64, 64), 10, 2).is_ok());
        let field = |size, steps, images| {
            limits
                .check(size, steps, images)
                .unwrap_err()
                .field_name()
                .map(str::to_string)
        };
        assert_eq!(field((64, 72), 1, 1).as_deref(), Some("width"));
        assert_eq!(field((64, 64), 11, 1).as_deref(), Some("steps"));
        assert_eq!(field((64, 64), 1, 3).as_deref(), Some("batch_size"));
        assert_eq!(field((usize::MAX, 2), 1, 1).as_deref(), Some("width"));
    }
}
