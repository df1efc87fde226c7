//! Feature maps `[B, C, H, W]` as token sequences `[B, H*W, C]` and back: transposes by bands
//! (a transformer's tokens, into and out of its projections).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::tensor::{from_vec, with_f32, Unwritten};

/// Output rows per band: a band (`BLOCK` rows, 40 KiB at 320 channels) stays in cache while
/// every input row's strip of it is written.
const BLOCK: usize = 32;

/// `[B, C, H, W]` (f32, CPU) -> `[B, H*W, C]`.
pub fn tokens_of_map(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out = with_f32("tokens_of_map", x, |xs| transpose_images(xs, b, c, h * w))?;
    from_vec(out, (b, h * w, c))
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
    let out = with_f32("map_of_tokens", tokens, |ts| transpose_images(ts, b, hw, c))?;
    from_vec(out, (b, c, h, w))
}

/// Each of `b` row-major `[rows, cols]` matrices in `src` transposed to `[cols, rows]`. One
/// task per image and band of `BLOCK` output rows: it reads a `BLOCK`-wide strip of every
/// input row.
fn transpose_images(src: &[f32], b: usize, rows: usize, cols: usize) -> Vec<f32> {
    let len = rows * cols;
    let mut out = Unwritten::new(b * len);
    out.slots()
        .par_chunks_mut(len)
        .zip(src[..b * len].par_chunks(len))
        .for_each(|(image_out, image)| {
            image_out
                .par_chunks_mut(BLOCK * rows)
                .enumerate()
                .for_each(|(band, dst)| {
                    let (c0, n) = (band * BLOCK, dst.len() / rows);
                    for (r, row) in image.chunks_exact(cols).enumerate() {
                        for (j, v) in row[c0..c0 + n].iter().enumerate() {
                            dst[j * rows + r].write(*v);
                        }
                    }
                })
        });
    // SAFETY: every (column, row) of every image was written above.
    unsafe { out.assume_written() }
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
