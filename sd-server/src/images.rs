//! Images in JSON bodies: base64 PNGs out (with A1111's `parameters` text), base64 images in
//! (`init_images`, `mask`; a `data:image/...;base64,` prefix is allowed), read with a cap on
//! their size so a few hostile header bytes cannot ask for gigabytes.

use base64::Engine;
use sd_pipeline::image_crate::{self, DynamicImage, RgbImage};

use crate::api_error::ApiError;

/// The largest side of an image read from a request.
pub const MAX_INPUT_SIDE: u32 = 2 * sd_pipeline::request::MAX_SIDE as u32;

/// `image` as a base64 PNG carrying `parameters`.
///
/// # Errors
/// [`ApiError::Internal`] if encoding fails (it does not for a generated image).
pub fn png_base64(image: &RgbImage, parameters: &str) -> Result<String, ApiError> {
    let bytes = sd_pipeline::png::encode_png(image, parameters)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes the base64 image `text` of `field`.
///
/// # Errors
/// [`ApiError::InvalidField`] naming `field` for text that is not base64, bytes that are not
/// an image, or an image over [`MAX_INPUT_SIDE`] pixels a side.
pub fn decode_base64(field: &str, text: &str) -> Result<DynamicImage, ApiError> {
    let data = match text.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data,
        _ => text,
    };
    // `base64 FILE` wraps its lines; the line breaks are not part of the data.
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| ApiError::field(field, format!("not base64: {e}")))?;
    let mut reader = image_crate::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::field(field, format!("cannot read the image: {e}")))?;
    let mut limits = image_crate::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| ApiError::field(field, format!("cannot read the image: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut image = RgbImage::new(16, 8);
        image.put_pixel(3, 4, image_crate::Rgb([1, 2, 3]));
        let b64 = png_base64(&image, "x").unwrap();
        assert_eq!(decode_base64("f", &b64).unwrap().to_rgb8(), image);
        let url = format!("data:image/png;base64,{b64}");
        assert_eq!(decode_base64("f", &url).unwrap().to_rgb8(), image);
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
            .collect();
        assert_eq!(decode_base64("f", &wrapped).unwrap().to_rgb8(), image);
        let e = decode_base64("init_images[0]", "!!").unwrap_err();
        assert_eq!(e.field_name(), Some("init_images[0]"));
        let e = decode_base64("mask", "aGVsbG8=").unwrap_err();
        assert!(
            e.to_string().starts_with("mask: cannot read the image"),
            "{e}"
        );
    }
}
