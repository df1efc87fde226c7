//! PNG files as AUTOMATIC1111 writes them: 8-bit RGB with the image's `parameters` text
//! ([`Infotext`](crate::Infotext)) in a text chunk, which civitai, ComfyUI loaders and image
//! browsers read back.

use std::io::Write;

use image::RgbImage;

use crate::error::{Error, Result};

/// Encodes `image` as an 8-bit RGB PNG into `sink`, with a `parameters` text chunk: tEXt when
/// the text is Latin-1 (what A1111 writes for plain prompts), iTXt (UTF-8) otherwise.
///
/// # Errors
/// When `sink` fails to take the bytes ([`Error::Png`]).
pub fn write_png(sink: impl Write, image: &RgbImage, parameters: &str) -> Result<()> {
    let mut encoder = png::Encoder::new(sink, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let keyword = "parameters".to_string();
    if parameters.chars().all(|c| u32::from(c) < 256) {
        encoder.add_text_chunk(keyword, parameters.to_string())?;
    } else {
        encoder.add_itxt_chunk(keyword, parameters.to_string())?;
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(image.as_raw())?;
    writer.finish()?;
    Ok(())
}

/// [`write_png`] into memory: the bytes of the PNG file.
///
/// # Errors
/// As [`write_png`] (only for an image the encoder refuses, such as a 0-pixel side).
pub fn encode_png(image: &RgbImage, parameters: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_png(&mut bytes, image, parameters)?;
    Ok(bytes)
}

/// The `parameters` text of PNG `bytes` (a tEXt, zTXt or iTXt chunk, as A1111 and
/// [`write_png`] write it), or None when it has none: A1111's "PNG Info".
///
/// # Errors
/// When `bytes` is not a readable PNG ([`Error::Png`]).
pub fn read_parameters(bytes: &[u8]) -> Result<Option<String>> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .map_err(|e| Error::Png(e.to_string()))?;
    let info = reader.info();
    if let Some(t) = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
    {
        return Ok(Some(t.text.clone()));
    }
    if let Some(t) = info
        .compressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
    {
        return t
            .get_text()
            .map(Some)
            .map_err(|e| Error::Png(e.to_string()));
    }
    match info.utf8_text.iter().find(|t| t.keyword == "parameters") {
        Some(t) => t
            .get_text()
            .map(Some)
            .map_err(|e| Error::Png(e.to_string())),
        None => Ok(None),
    }
}

impl From<png::EncodingError> for Error {
    fn from(e: png::EncodingError) -> Self {
        Error::Png(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_and_utf8_parameters_round_trip() {
        let mut image = RgbImage::new(3, 2);
        image.put_pixel(2, 1, image::Rgb([10, 200, 30]));
        for text in ["a cat\nSteps: 2", "un chat \u{1F431}\nSteps: 2"] {
            let bytes = encode_png(&image, text).unwrap();
            assert_eq!(read_parameters(&bytes).unwrap().as_deref(), Some(text));
            let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(back, image);
        }
        let plain = encode_png(&image, "x").unwrap();
        let mut untagged = Vec::new();
        image::DynamicImage::ImageRgb8(image.clone())
            .write_to(
                &mut std::io::Cursor::new(&mut untagged),
                image::ImageFormat::Png,
            )
            .unwrap();
        assert_eq!(read_parameters(&untagged).unwrap(), None);
        assert!(read_parameters(&plain[..20]).is_err());
    }
}
