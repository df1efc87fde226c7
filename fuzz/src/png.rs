//! Init images and masks: the PNG decoding `sd generate --init-image / --mask` does, then
//! `sd-pipeline`'s pixel-to-tensor conversions.
//!
//! sd-pipeline has no public image reader (the CLI's `read_image` is private to the binary), so
//! the decode steps below repeat `sd-cli/src/commands/generate.rs::read_image` (size from the
//! header first, then a decode under `Limits`); keep the two in step. Included by
//! `sd-pipeline/tests/fuzz_regressions.rs`, so it uses `sd_pipeline` only.

use std::io::Cursor;

use sd_pipeline::candle_core::Device;
use sd_pipeline::image::{image_to_tensor, mask_to_tensor, rgb_to_mask};
use sd_pipeline::image_crate::error::{LimitError, LimitErrorKind};
use sd_pipeline::image_crate::{DynamicImage, ImageError, ImageReader, Limits};

/// The CLI's `MAX_INPUT_SIDE`: twice the largest output side.
const MAX_INPUT_SIDE: u32 = 2 * sd_pipeline::request::MAX_SIDE as u32;

/// Output side the decoded image is resized to (small, so a large valid image stays cheap).
const SIDE: usize = 64;

/// Decodes `data` as the CLI reads an init image, then converts it to an image tensor and to a
/// mask tensor (as `read_mask` converts colour masks).
pub fn run(data: &[u8]) -> Result<(), ImageError> {
    let open = || ImageReader::new(Cursor::new(data)).with_guessed_format();
    let (w, h) = open()?.into_dimensions()?;
    if w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
        let kind = LimitErrorKind::DimensionError;
        return Err(ImageError::Limits(LimitError::from_kind(kind)));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    let mut reader = open()?;
    reader.limits(limits);
    let image = reader.decode()?;
    assert_eq!(
        (image.width(), image.height()),
        (w, h),
        "decoded size vs header"
    );
    let pixels = image_to_tensor(&image.to_rgb8(), SIDE, SIDE, &Device::Cpu);
    let pixels = pixels.expect("an RGB image converts");
    assert_eq!(pixels.dims(), [1, 3, SIDE, SIDE]);
    let mask = match image {
        DynamicImage::ImageLuma8(grey) => grey,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => image.to_luma8(),
        other => rgb_to_mask(&other.to_rgb8()),
    };
    let mask = mask_to_tensor(&mask, SIDE, SIDE, &Device::Cpu).expect("a grey mask converts");
    assert_eq!(mask.dims(), [1, 1, SIDE, SIDE]);
    Ok(())
}
