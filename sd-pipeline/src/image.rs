//! Pixels to tensors and back, with diffusers' `VaeImageProcessor` arithmetic.
//!
//! - An input image becomes `x / 255 * 2 - 1` in f32 (`pil_to_numpy`, then `normalize`).
//! - A mask becomes `x / 255`, binarized at 0.5 (the mask processor's `do_binarize`).
//! - A decoded image `x` becomes `round((x / 2 + 0.5).clamp(0, 1) * 255)`, rounding half to even
//!   as numpy does (`numpy_to_pil`).
//!
//! Images whose size differs from the one asked for are resized with a Lanczos3 filter; PIL's
//! Lanczos differs from it in the last bits, so such a resize is close to diffusers, not exact.

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use std::borrow::Cow;

use image::{GrayImage, ImageBuffer, Pixel, RgbImage};

use crate::error::{Error, Result};

/// `image` as a `[1, 3, height, width]` f32 tensor in [-1, 1], resized first when its size
/// differs.
pub fn image_to_tensor(
    image: &RgbImage,
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor> {
    let image = sized(image, width, height);
    let plane = width * height;
    let mut data = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = f32::from(pixel[c]) / 255.0 * 2.0 - 1.0;
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, height, width), device)?)
}

/// `mask` (white = repaint) as a `[1, 1, height, width]` f32 tensor of 0s and 1s, resized first
/// when its size differs.
pub fn mask_to_tensor(
    mask: &GrayImage,
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor> {
    let mask = sized(mask, width, height);
    let data: Vec<f32> = mask
        .pixels()
        .map(|p| {
            if f32::from(p[0]) / 255.0 < 0.5 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, height, width), device)?)
}

/// `image` at `width` x `height`: borrowed when it already is, else a Lanczos3 resize.
fn sized<P>(
    image: &ImageBuffer<P, Vec<u8>>,
    width: usize,
    height: usize,
) -> Cow<'_, ImageBuffer<P, Vec<u8>>>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    if (image.width() as usize, image.height() as usize) == (width, height) {
        Cow::Borrowed(image)
    } else {
        Cow::Owned(image::imageops::resize(
            image,
            width as u32,
            height as u32,
            FilterType::Lanczos3,
        ))
    }
}

/// An RGB picture as a mask the way PIL's `convert("L")` does: L = (19595 R + 38470 G + 7471 B
/// + 2^15) >> 16, i.e. 0.299 R + 0.587 G + 0.114 B rounded.
pub fn rgb_to_mask(image: &RgbImage) -> GrayImage {
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b] = image.get_pixel(x, y).0;
        let l = (19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b) + 0x8000) >> 16;
        image::Luma([l as u8])
    })
}

/// Images `[B, 3, H, W]` in about [-1, 1] to 8-bit RGB pictures.
pub fn tensor_to_images(images: &Tensor) -> Result<Vec<RgbImage>> {
    let (b, c, h, w) = images.dims4()?;
    if c != 3 {
        return Err(Error::model(
            "vae",
            format!("decoded {c} channels; an RGB image needs 3"),
        ));
    }
    let data = images
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Error::check_finite("decoded images", &data)?;
    let plane = h * w;
    let out = (0..b)
        .map(|n| {
            let base = n * 3 * plane;
            let mut rgb = Vec::with_capacity(3 * plane);
            for i in 0..plane {
                for ch in 0..3 {
                    rgb.push(to_u8(data[base + ch * plane + i]));
                }
            }
            // The buffer is exactly w * h * 3 bytes, so this cannot fail.
            RgbImage::from_raw(w as u32, h as u32, rgb).unwrap_or_default()
        })
        .collect();
    Ok(out)
}

/// diffusers' postprocessing of one value: `(x / 2 + 0.5).clamp(0, 1) * 255`, rounded half to
/// even. NaN becomes 0, as `astype(uint8)` of NaN does on x86.
fn to_u8(x: f32) -> u8 {
    let v = (x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0;
    if v.is_nan() {
        0
    } else {
        v.round_ties_even() as u8
    }
}

/// Nearest-neighbour resize of `[B, C, h, w]` to `(height, width)` as
/// `torch.nn.functional.interpolate(mode="nearest")`: source index floor(dst * in / out).
pub fn resize_nearest(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let index = |out: usize, input: usize| -> Result<Tensor> {
        let scale = input as f32 / out as f32;
        let idx: Vec<u32> = (0..out)
            .map(|i| ((i as f32 * scale).floor() as usize).min(input - 1) as u32)
            .collect();
        Ok(Tensor::new(idx, x.device())?)
    };
    let rows = x.index_select(&index(height, h)?, 2)?;
    Ok(rows.index_select(&index(width, w)?, 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postprocessing_rounds_half_to_even_and_clamps() {
        // 127.5 rounds to 128 (even), 0.5 to 0, 254.5 to 254; out of range clamps.
        let x = |v: f32| (v / 255.0 - 0.5) * 2.0;
        assert_eq!(to_u8(x(127.5)), 128);
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(3.0), 255);
        assert_eq!(to_u8(-3.0), 0);
        assert_eq!(to_u8(f32::NAN), 0);
        assert_eq!(to_u8(x(10.2)), 10);
        assert_eq!(to_u8(x(10.7)), 11);
    }

    #[test]
    fn pixels_round_trip_through_tensors() {
        let image = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 100, 7]));
        let t = image_to_tensor(&image, 5, 3, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 3, 3, 5]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Channel 0 at (x=4, y=0) is 200 / 255 * 2 - 1.
        assert_eq!(v[4], 200.0 / 255.0 * 2.0 - 1.0);
        let back = tensor_to_images(&t).unwrap();
        assert_eq!(back, vec![image]);
    }

    #[test]
    fn masks_binarize_at_one_half() {
        let mask = GrayImage::from_raw(4, 1, vec![0, 127, 128, 255]).unwrap();
        let t = mask_to_tensor(&mask, 4, 1, &Device::Cpu).unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, [0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn grey_from_rgb_as_pil() {
        // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L") is 76; (0, 255, 0) 150;
        // (0, 0, 255) 29; (10, 200, 30) 124.
        let px =
            |r, g, b| rgb_to_mask(&RgbImage::from_pixel(1, 1, image::Rgb([r, g, b])))[(0, 0)][0];
        assert_eq!(
            [px(255, 0, 0), px(0, 255, 0), px(0, 0, 255), px(10, 200, 30)],
            [76, 150, 29, 124]
        );
    }

    #[test]
    fn nearest_resize_takes_every_kth_pixel() {
        let x = Tensor::arange(0f32, 64.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 8, 8))
            .unwrap();
        let y = resize_nearest(&x, 2, 4).unwrap();
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, [0.0, 2.0, 4.0, 6.0, 32.0, 34.0, 36.0, 38.0]);
        // Upsampling repeats: 3 -> 5 takes floor(i * 0.6).
        let x = Tensor::new(&[[[[1f32, 2.0, 3.0]]]], &Device::Cpu).unwrap();
        let v = resize_nearest(&x, 1, 5).unwrap().flatten_all().unwrap();
        assert_eq!(v.to_vec1::<f32>().unwrap(), [1.0, 1.0, 2.0, 2.0, 3.0]);
    }
}
