//! `sd generate --preview-every N --animation OUT.gif --frames DIR`: the denoising process as
//! pictures. Every N model calls the predicted clean image (x0) of the first batch entry is
//! kept, as the latent-to-RGB projection or through the VAE (`--preview`), and the final image
//! is the last frame. Frames are written as numbered PNGs and/or one looping GIF, each under a
//! temporary name first; `--preview-file` rewrites one PNG with each new preview as it comes,
//! for an image viewer that reloads it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use sd_pipeline::image_crate::codecs::gif::{GifEncoder, Repeat};
use sd_pipeline::image_crate::{self, Delay, Frame, RgbImage};
use sd_pipeline::{LatentDecoder, StableDiffusion, StepProgress};

use crate::output_path;
use crate::temp_path::TempSibling;

/// How a step's x0 is turned into a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreviewQuality {
    /// The linear projection of the 4 latent channels (no network; blocky, instant).
    Latent2rgb,
    /// TAESD, the tiny autoencoder (needs --taesd): close to the VAE's picture at a small
    /// fraction of its cost.
    Taesd,
    /// The full VAE decoder (the final image's quality; one decode per frame).
    Vae,
}

/// Frame time in the GIF; the final image stays 5 times as long.
const FRAME_MS: u32 = 200;

/// The frames of one run.
pub struct Animation {
    every: usize,
    quality: PreviewQuality,
    /// (model calls done, picture), kept when frames or a GIF are asked for.
    frames: Vec<(usize, RgbImage)>,
    keep: bool,
    /// Rewritten with the newest preview at every frame (`--preview-file`).
    live: Option<PathBuf>,
}

impl Animation {
    /// Makes a frame every `every` model calls (at least 1); keeps them when `keep`, and
    /// writes each to `live` as it comes.
    pub fn new(
        every: usize,
        quality: PreviewQuality,
        keep: bool,
        live: Option<PathBuf>,
    ) -> Result<Self> {
        if every == 0 {
            bail!("--preview-every: 0 steps; give at least 1");
        }
        Ok(Self {
            every,
            quality,
            frames: Vec::new(),
            keep,
            live,
        })
    }

    /// Called at every step: keeps a frame when one is due (never at the last step, whose
    /// frame is the final image).
    pub fn step(&mut self, sd: &StableDiffusion, progress: &StepProgress) -> Result<()> {
        if !progress.step.is_multiple_of(self.every) || progress.step >= progress.total {
            return Ok(());
        }
        let x0 = progress.predicted_original.narrow(0, 0, 1)?;
        let mut images = match self.quality {
            PreviewQuality::Latent2rgb => sd_pipeline::preview::latent_to_rgb(&x0)?,
            PreviewQuality::Taesd => sd.decode_latents_with(&x0, LatentDecoder::Taesd)?,
            PreviewQuality::Vae => sd.decode_latents(&x0)?,
        };
        let image = images.remove(0);
        if let Some(path) = &self.live {
            write_png(path, &image, "--preview-file")?;
        }
        if self.keep {
            self.frames.push((progress.step, image));
        }
        Ok(())
    }

    /// The final image as the last frame, after `steps` model calls.
    pub fn finish(&mut self, steps: usize, image: &RgbImage) {
        self.frames.push((steps, image.clone()));
    }

    /// How many frames there are.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The numbered PNG paths in `dir`: `step-003.png`, ...
    fn frame_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.frames
            .iter()
            .map(|(step, _)| dir.join(format!("step-{step:03}.png")))
            .collect()
    }

    /// Writes `dir/step-NNN.png` for every frame (the folder is made if missing). Existing
    /// files are replaced only with `force`; all are checked before any is written.
    pub fn write_frames(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
        if dir.exists() && !dir.is_dir() {
            bail!("--frames {}: not a folder", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--frames {}: cannot make the folder", dir.display()))?;
        let paths = self.frame_paths(dir);
        for path in &paths {
            output_path::check_replaceable("--frames", path, force)?;
        }
        for (path, (_, image)) in paths.iter().zip(&self.frames) {
            write_png(path, image, "--frames")?;
        }
        Ok(paths)
    }

    /// Writes the frames as one looping GIF at `path` (already checked to be replaceable).
    pub fn write_gif(&self, path: &Path) -> Result<()> {
        let images: Vec<&RgbImage> = self.frames.iter().map(|(_, image)| image).collect();
        write_gif(path, &images, "--animation", true)
    }
}

/// `images` as one looping GIF at `path`, written under a temporary name; with `hold_last`
/// the last frame stays 5 times as long.
pub fn write_gif(path: &Path, images: &[&RgbImage], flag: &str, hold_last: bool) -> Result<()> {
    let tmp = TempSibling::new(path, "gif");
    {
        let file = std::fs::File::create(tmp.path())
            .with_context(|| format!("{flag} {}: cannot create", path.display()))?;
        let mut encoder = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
        encoder.set_repeat(Repeat::Infinite)?;
        let last = images.len().saturating_sub(1);
        for (i, image) in images.iter().enumerate() {
            let ms = if hold_last && i == last {
                5 * FRAME_MS
            } else {
                FRAME_MS
            };
            let rgba = image_crate::DynamicImage::ImageRgb8((*image).clone()).to_rgba8();
            let frame = Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(ms, 1));
            encoder
                .encode_frame(frame)
                .with_context(|| format!("{flag} {}: cannot encode", path.display()))?;
        }
    }
    std::fs::rename(tmp.path(), path)
        .with_context(|| format!("{flag} {}: cannot rename into place", path.display()))?;
    Ok(())
}

/// `image` as a PNG at `path`, written under a temporary name and renamed into place (so a
/// viewer watching `path` never reads half a file).
pub fn write_png(path: &Path, image: &RgbImage, flag: &str) -> Result<()> {
    let tmp = TempSibling::new(path, "frame");
    image
        .save_with_format(tmp.path(), image_crate::ImageFormat::Png)
        .with_context(|| format!("{flag} {}: cannot write", path.display()))?;
    std::fs::rename(tmp.path(), path)
        .with_context(|| format!("{flag} {}: cannot rename into place", path.display()))?;
    Ok(())
}
