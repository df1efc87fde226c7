//! AUTOMATIC1111's emphasis: scale the text encoder's output per token, then restore the mean.
//!
//! A1111 (`FrozenCLIPEmbedderWithCustomWordsBase.process_tokens`) does, on the encoder output z
//! of one 77-token chunk (all prompts of the batch at once):
//!
//! ```text
//! z'  = z * w            (row t of z scaled by the weight of token t)
//! z'' = z' * (mean(z) / mean(z'))      (each mean one scalar over the whole tensor)
//! ```
//!
//! so emphasis changes the direction of token embeddings relative to each other while the
//! tensor's overall mean stays where the UNet expects it.

use crate::error::{Error, Result};

/// Applies A1111 emphasis to `z`, row-major `[tokens × channels]`, with one weight per token.
///
/// The whole slice is one tensor for both means: pass one window (or one batch of windows, as
/// A1111 does) at a time. Sums run in f64.
///
/// # Errors
/// [`Error::ZeroDim`] for `channels == 0`, [`Error::Shape`] when `z` is not
/// `weights.len() × channels`, [`Error::ZeroMean`] when the weighted tensor's mean is 0 (every
/// weight 0, say), where the restoring ratio does not exist.
pub fn emphasize_a1111(z: &[f32], weights: &[f32], channels: usize) -> Result<Vec<f32>> {
    if channels == 0 {
        return Err(Error::ZeroDim { what: "channels" });
    }
    let expected = weights.len() * channels;
    if z.len() != expected {
        return Err(Error::Shape {
            what: "z",
            expected,
            got: z.len(),
        });
    }
    let mut scaled: Vec<f32> = z
        .chunks_exact(channels)
        .zip(weights)
        .flat_map(|(row, &w)| row.iter().map(move |&x| x * w))
        .collect();
    let mean_z = mean(z);
    let mean_scaled = mean(&scaled);
    if mean_scaled == 0.0 {
        return Err(Error::ZeroMean);
    }
    let ratio = (mean_z / mean_scaled) as f32;
    for x in &mut scaled {
        *x *= ratio;
    }
    Ok(scaled)
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_rows_then_restores_the_mean() {
        // z = [[1, 2], [3, 4]], w = [2, 1]: mean(z) = 2.5, z' = [[2, 4], [3, 4]], mean(z') = 3.25,
        // ratio 2.5 / 3.25 = 10/13, so z'' = [[20, 40], [30, 40]] / 13.
        let out = emphasize_a1111(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0], 2).unwrap();
        let expected = [20.0 / 13.0, 40.0 / 13.0, 30.0 / 13.0, 40.0 / 13.0];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
        let m: f32 = out.iter().sum::<f32>() / 4.0;
        assert!((m - 2.5).abs() < 1e-6);
    }

    #[test]
    fn unit_weights_change_nothing_and_uniform_weights_cancel() {
        let z = [0.5, -1.0, 2.0, 0.25, 3.0, -0.75];
        assert_eq!(emphasize_a1111(&z, &[1.0; 3], 2).unwrap(), z);
        // w = 3 everywhere: z' = 3z, ratio 1/3, back to z.
        let out = emphasize_a1111(&z, &[3.0; 3], 2).unwrap();
        for (o, e) in out.iter().zip(z) {
            assert!((o - e).abs() < 1e-6);
        }
    }

    #[test]
    fn negative_weight_flips_a_row() {
        // z = [[1, 1], [1, 1]], w = [-1, 1]: z' = [[-1, -1], [1, 1]] has mean 0.
        let err = emphasize_a1111(&[1.0; 4], &[-1.0, 1.0], 2).unwrap_err();
        assert_eq!(err, Error::ZeroMean);
        // z = [[1, 1], [2, 2]], w = [-1, 1]: mean(z) = 1.5, z' = [[-1, -1], [2, 2]], mean 0.5,
        // ratio 3: [[-3, -3], [6, 6]].
        let out = emphasize_a1111(&[1.0, 1.0, 2.0, 2.0], &[-1.0, 1.0], 2).unwrap();
        assert_eq!(out, [-3.0, -3.0, 6.0, 6.0]);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert_eq!(
            emphasize_a1111(&[1.0; 5], &[1.0, 1.0], 2),
            Err(Error::Shape {
                what: "z",
                expected: 4,
                got: 5
            })
        );
        assert_eq!(
            emphasize_a1111(&[], &[], 0),
            Err(Error::ZeroDim { what: "channels" })
        );
    }
}
