//! Feature maps `[B, C, H, W]` as token sequences `[B, H*W, C]` and back: transposes by bands
//! (a transformer's tokens, into and out of its projections).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::tensor::{from_vec, with_f32, Unwritten};

/// Pixels per band: a band's tokens (`BLOCK x C` floats, 40 KiB at 320 channels) stay in
/// cache while every channel's strip of it is written.
const BLOCK: usize = 32;

/// `[B, C, H, W]` (f32, CPU) -> `[B, H*W, C]`.
pub fn tokens_of_map(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let hw = h * w;
    let mut out = Unwritten::new(b * hw * c);
    with_f32("tokens_of_map", x, |xs| {
        // One task per image and band of BLOCK pixels: it writes rows p0..p0+BLOCK of the
        // image's [hw, c] tokens, reading BLOCK-wide strips of every channel plane.
        out.slots()
            .par_chunks_mut(hw * c)
            .zip(xs.par_chunks(c * hw))
            .for_each(|(tokens, image)| {
                tokens
                    .par_chunks_mut(BLOCK * c)
                    .enumerate()
                    .for_each(|(band, dst)| {
                        let (p0, pixels) = (band * BLOCK, dst.len() / c);
                        for ch in 0..c {
                            let src = &image[ch * hw + p0..ch * hw + p0 + pixels];
                            for (p, v) in src.iter().enumerate() {
                                dst[p * c + ch].write(*v);
                            }
                        }
                    })
            });
    })?;
    // SAFETY: every (pixel, channel) of every image was written above.
    from_vec(unsafe { out.assume_written() }, (b, hw, c))
}

/// `[B, H*W, C]` (f32, CPU) -> `[B, C, H, W]` for the given `h x w`.
pub fn map_of_tokens(tokens: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (b, hw, c) = tokens.dims3()?;
    if hw != h * w {
        return Err(crate::Error::Shape {
            op: "map_of_tokens",
            what: format!("tokens {:?} for a {h}x{w} map", tokens.dims()),
        });
    }
    let mut out = Unwritten::new(b * c * hw);
    with_f32("map_of_tokens", tokens, |ts| {
        // One task per image and band of BLOCK channels: it writes those channels' planes,
        // reading BLOCK values of every token.
        out.slots()
            .par_chunks_mut(c * hw)
            .zip(ts.par_chunks(hw * c))
            .for_each(|(map, image)| {
                map.par_chunks_mut(BLOCK * hw)
                    .enumerate()
                    .for_each(|(band, dst)| {
                        let (c0, channels) = (band * BLOCK, dst.len() / hw);
                        for (p, token) in image.chunks_exact(c).enumerate() {
                            for (ch, v) in token[c0..c0 + channels].iter().enumerate() {
                                dst[ch * hw + p].write(*v);
                            }
                        }
                    })
            });
    })?;
    // SAFETY: every (channel, pixel) of every image was written above.
    from_vec(unsafe { out.assume_written() }, (b, c, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::rand;

    #[test]
    fn equals_candles_transpose_both_ways() {
        // Whole and partial blocks of pixels and channels, pixel counts that are not
        // multiples of the block (a band must not run into the next image).
        for &(b, c, h, w) in &[(2, 320, 8, 8), (1, 40, 7, 5), (3, 33, 9, 11)] {
            let x = rand(&[b, c, h, w], 5 + c as u64);
            let want = x
                .flatten_from(2)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap();
            let got = tokens_of_map(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (&got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            // And back.
            let back = map_of_tokens(&got, (h, w)).unwrap();
            assert_eq!(back.dims(), x.dims());
            let diff = (back - &x).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
    }
}
