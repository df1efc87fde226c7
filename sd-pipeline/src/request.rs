//! What to generate: [`GenerateRequest`], with diffusers' defaults, and its checks.

use image::{GrayImage, RgbImage};
use sd_scheduler::SchedulerKind;

use crate::error::{Error, Result};

/// The largest side accepted, in pixels: far beyond what SD 1.x / 2.x were trained for, small
/// enough that a mistyped size is an error and not an out-of-memory kill.
pub const MAX_SIDE: usize = 4096;
/// The most images one request may ask for.
pub const MAX_BATCH: usize = 64;
/// The most inference steps one request may ask for (a schedule cannot exceed its training steps).
pub const MAX_STEPS: usize = 1000;

/// How the emphasis weights of a prompt (`(word:1.3)`, `[word]`) reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emphasis {
    /// AUTOMATIC1111's: scale each token's text-encoder output, then restore each window's mean.
    #[default]
    A1111,
    /// sd-fused's: weights scale each text token's value vector inside cross-attention.
    Attention,
}

/// Which guidance rule turns the two noise predictions into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuidanceRule {
    /// diffusers': a scale <= 1 runs the conditional pass alone (the negative prompt is then
    /// unused); a scale > 1 gives uncond + g (cond - uncond).
    #[default]
    Diffusers,
    /// uncond + g (cond - uncond) for every g: 0 is the unconditional image, a negative scale
    /// pushes away from the prompt.
    TrueCfg,
}

impl GuidanceRule {
    /// True when a run at `scale` evaluates the unconditional (negative prompt) pass too.
    pub fn uses_uncond(self, scale: f64) -> bool {
        self == GuidanceRule::TrueCfg || scale > 1.0
    }
}

/// An init image for image-to-image, with a mask for inpainting.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The starting picture (resized to the request's size when they differ).
    pub image: RgbImage,
    /// Inpainting: white = repaint, black = keep (binarized at half grey).
    pub mask: Option<GrayImage>,
    /// How far to noise the image, in [0, 1]: 1 repaints from pure noise. diffusers' defaults
    /// are 0.8 for image-to-image and 1.0 for inpainting ([`ImageInput::new`] picks them).
    pub strength: f64,
}

impl ImageInput {
    /// An image-to-image (no mask) or inpainting (mask) input with diffusers' default strength.
    pub fn new(image: RgbImage, mask: Option<GrayImage>) -> Self {
        let strength = if mask.is_some() { 1.0 } else { 0.8 };
        Self {
            image,
            mask,
            strength,
        }
    }
}

/// One generation: a prompt and everything that shapes the picture. `Default` is diffusers'
/// `StableDiffusionPipeline.__call__` defaults (50 steps, scale 7.5, the model's size).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The prompt, with emphasis syntax (sd-prompt's).
    pub prompt: String,
    /// The negative prompt (used when guidance evaluates the unconditional pass).
    pub negative_prompt: String,
    /// Inference steps (model calls may differ: Heun 2N - 1, PNDM N + 1).
    pub steps: usize,
    /// Guidance scale g.
    pub guidance_scale: f64,
    /// The guidance rule.
    pub guidance: GuidanceRule,
    /// Width in pixels, a multiple of 8 (None: as `height`; neither: the init image's, else
    /// the model's sample size).
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 8 (None: as `width`; neither: as for `width`).
    pub height: Option<usize>,
    /// Images per prompt, drawn from one generator as diffusers' `num_images_per_prompt`.
    pub batch_size: usize,
    /// The seed of the torch-compatible generator.
    pub seed: u64,
    /// A1111's clip skip: 1 = last layer.
    pub clip_skip: usize,
    /// How emphasis weights are applied.
    pub emphasis: Emphasis,
    /// The sampler (None: the model's scheduler_config.json class).
    pub scheduler: Option<SchedulerKind>,
    /// Karras sigmas on or off for this run (None: the model's `use_karras_sigmas`). Only
    /// Euler, Heun, LMS, DPM-Solver++ and UniPC have Karras schedules (see
    /// [`supports_karras`]); the others refuse `Some(true)`.
    pub karras: Option<bool>,
    /// Image-to-image or inpainting input.
    pub init: Option<ImageInput>,
    /// Text-to-image: the start noise `[batch, 4, height / 8, width / 8]` (standard normal,
    /// before the scheduler's initial sigma) instead of the seed's first draw, which is still
    /// made, so later draws (ancestral samplers) are the seed's as usual. For latent walks.
    pub start_noise: Option<candle_core::Tensor>,
    /// The text conditioning to use instead of encoding the prompts (see
    /// [`StableDiffusion::encode`](crate::StableDiffusion::encode)); `<lora:…>` tags in the
    /// prompts still choose side-branch LoRAs. For interpolating between prompts.
    pub conditioning: Option<crate::conditioning::Conditioning>,
    /// Which network decodes the final latents: the VAE, or the pipeline's TAESD (faster, lower
    /// quality).
    pub decoder: crate::taesd::LatentDecoder,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
            guidance: GuidanceRule::Diffusers,
            width: None,
            height: None,
            batch_size: 1,
            seed: 0,
            clip_skip: 1,
            emphasis: Emphasis::A1111,
            scheduler: None,
            karras: None,
            init: None,
            start_noise: None,
            conditioning: None,
            decoder: crate::taesd::LatentDecoder::Vae,
        }
    }
}

/// True for the samplers whose schedules have Karras sigmas (diffusers' `use_karras_sigmas`):
/// Euler, Heun, LMS, DPM-Solver++ and UniPC. Euler a, DDIM, DDPM and PNDM have none.
pub fn supports_karras(kind: SchedulerKind) -> bool {
    matches!(
        kind,
        SchedulerKind::Euler
            | SchedulerKind::Heun
            | SchedulerKind::Lms
            | SchedulerKind::DpmSolverPlusPlus
            | SchedulerKind::UniPc
    )
}

/// A number as error messages show it: plain when short, in scientific notation beyond
/// 1e15 or below 1e-6 (echoing 40 digits back helps no one).
pub fn display_number(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && a.is_finite() && !(1e-6..1e15).contains(&a) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

impl GenerateRequest {
    /// A text-to-image request for `prompt` with the defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    /// The size to generate at: width and height as given, one side alone for both (a
    /// square); neither: the init image's (image-to-image and inpainting) rounded down to a
    /// multiple of 8, else `default_side` square. Checked: multiples of 8, at least 8, at most
    /// [`MAX_SIDE`]. (diffusers' inpainting pipeline defaults to the model's size instead; an
    /// init image smaller or larger than that is what a user means to keep.)
    pub fn size(&self, default_side: usize) -> Result<(usize, usize)> {
        let from_image = self.init.as_ref().map(|init| {
            (
                init.image.width() as usize / 8 * 8,
                init.image.height() as usize / 8 * 8,
            )
        });
        let (width, height) = match (self.width, self.height) {
            (Some(w), Some(h)) => (w, h),
            (Some(side), None) | (None, Some(side)) => (side, side),
            (None, None) => from_image.unwrap_or((default_side, default_side)),
        };
        if let (None, None, Some(init)) = (self.width, self.height, &self.init) {
            if width == 0 || height == 0 {
                return Err(Error::request(
                    "init-image",
                    format!(
                        "{}x{} is smaller than 8 pixels on a side; give --width and --height",
                        init.image.width(),
                        init.image.height()
                    ),
                ));
            }
        }
        for (field, side) in [("width", width), ("height", height)] {
            if side == 0 || side % 8 != 0 {
                return Err(Error::request(
                    field,
                    format!("{side} is not a positive multiple of 8"),
                ));
            }
            if side > MAX_SIDE {
                return Err(Error::request(
                    field,
                    format!("{side} is larger than {MAX_SIDE} pixels"),
                ));
            }
        }
        Ok((width, height))
    }

    /// Checks every field that does not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::request(
                "steps",
                format!("{} is not in 1..={MAX_STEPS}", self.steps),
            ));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale.abs() > f64::from(f32::MAX) {
            return Err(Error::request(
                "guidance-scale",
                format!(
                    "{} is not a finite number within f32's range",
                    display_number(self.guidance_scale)
                ),
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(Error::request(
                "batch-size",
                format!("{} is not in 1..={MAX_BATCH}", self.batch_size),
            ));
        }
        if self.clip_skip == 0 {
            return Err(Error::request(
                "clip-skip",
                "0 is not a layer: 1 is the last layer, 2 the penultimate",
            ));
        }
        if let Some(init) = &self.init {
            if !(0.0..=1.0).contains(&init.strength) {
                return Err(Error::request(
                    "strength",
                    format!("{} is not in [0, 1]", init.strength),
                ));
            }
            if init.image.width() == 0 || init.image.height() == 0 {
                return Err(Error::request("init-image", "the image is empty"));
            }
            if let Some(mask) = &init.mask {
                if mask.dimensions() != init.image.dimensions() {
                    return Err(Error::request(
                        "mask",
                        format!(
                            "{}x{} does not match the init image's {}x{}",
                            mask.width(),
                            mask.height(),
                            init.image.width(),
                            init.image.height()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// diffusers' `get_timesteps`: with `steps` and `strength`, the index of the first step to
    /// run, `t_start = steps - min(floor(steps * strength), steps)` (before multiplying by the
    /// scheduler's order). Text-to-image starts at 0.
    pub fn start_step(&self) -> Result<usize> {
        let Some(init) = &self.init else {
            return Ok(0);
        };
        let init_timestep = ((self.steps as f64 * init.strength) as usize).min(self.steps);
        let t_start = self.steps - init_timestep;
        if t_start >= self.steps {
            return Err(Error::request(
                "strength",
                format!(
                    "{} with {} steps leaves no step to run (steps x strength must be at least 1)",
                    init.strength, self.steps
                ),
            ));
        }
        Ok(t_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_init(w: u32, h: u32, mask: bool, strength: f64) -> GenerateRequest {
        let image = RgbImage::new(w, h);
        let mask = mask.then(|| GrayImage::new(w, h));
        GenerateRequest {
            init: Some(ImageInput {
                image,
                mask,
                strength,
            }),
            ..GenerateRequest::new("x")
        }
    }

    #[test]
    fn sizes_default_to_the_model_or_the_init_image() {
        assert_eq!(GenerateRequest::new("x").size(512).unwrap(), (512, 512));
        // img2img and inpainting: the image's size rounded down to 8.
        assert_eq!(with_init(70, 45, false, 0.5).size(512).unwrap(), (64, 40));
        assert_eq!(with_init(70, 45, true, 0.5).size(64).unwrap(), (64, 40));
        // One side alone gives a square (as the help says), also over an init image.
        let r = GenerateRequest {
            width: Some(96),
            ..GenerateRequest::new("x")
        };
        assert_eq!(r.size(64).unwrap(), (96, 96));
        let r = GenerateRequest {
            height: Some(40),
            ..with_init(70, 45, false, 0.5)
        };
        assert_eq!(r.size(64).unwrap(), (40, 40));
        // A 1x1 init image is blamed, not --width.
        let e = with_init(1, 1, false, 0.5)
            .size(64)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("init-image: 1x1 is smaller than 8"), "{e}");
    }

    #[test]
    fn long_numbers_are_shown_short() {
        assert_eq!(display_number(7.5), "7.5");
        assert_eq!(display_number(1e39), "1e39");
        assert_eq!(display_number(-2.5e-9), "-2.5e-9");
        assert_eq!(display_number(f64::INFINITY), "inf");
    }

    #[test]
    fn bad_sizes_name_the_argument() {
        for (w, h, field) in [(100, 64, "width"), (64, 0, "height"), (8192, 64, "width")] {
            let r = GenerateRequest {
                width: Some(w),
                height: Some(h),
                ..GenerateRequest::new("x")
            };
            match r.size(512) {
                Err(Error::InvalidRequest { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{w}x{h}: {other:?}"),
            }
        }
    }

    #[test]
    fn validation_names_each_field() {
        let field = |r: GenerateRequest| match r.validate() {
            Err(Error::InvalidRequest { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = GenerateRequest::new("x");
        assert!(base.validate().is_ok());
        assert_eq!(
            field(GenerateRequest {
                steps: 0,
                ..base.clone()
            }),
            "steps"
        );
        assert_eq!(
            field(GenerateRequest {
                guidance_scale: f64::NAN,
                ..base.clone()
            }),
            "guidance-scale"
        );
        assert_eq!(
            field(GenerateRequest {
                batch_size: 0,
                ..base.clone()
            }),
            "batch-size"
        );
        assert_eq!(
            field(GenerateRequest {
                clip_skip: 0,
                ..base.clone()
            }),
            "clip-skip"
        );
        assert_eq!(field(with_init(8, 8, false, 1.5)), "strength");
        let mut mismatched = with_init(8, 8, true, 1.0);
        mismatched.init.as_mut().unwrap().mask = Some(GrayImage::new(16, 8));
        assert_eq!(field(mismatched), "mask");
    }

    #[test]
    fn start_step_follows_get_timesteps() {
        let r = |steps, strength| GenerateRequest {
            steps,
            ..with_init(8, 8, false, strength)
        };
        assert_eq!(r(10, 0.6).start_step().unwrap(), 4);
        assert_eq!(r(10, 1.0).start_step().unwrap(), 0);
        assert_eq!(r(50, 0.75).start_step().unwrap(), 13);
        assert_eq!(r(3, 0.34).start_step().unwrap(), 2);
        assert!(r(3, 0.3).start_step().is_err());
        assert!(r(10, 0.0).start_step().is_err());
        assert_eq!(GenerateRequest::new("x").start_step().unwrap(), 0);
    }

    #[test]
    fn guidance_rules() {
        assert!(!GuidanceRule::Diffusers.uses_uncond(1.0));
        assert!(GuidanceRule::Diffusers.uses_uncond(1.01));
        assert!(GuidanceRule::TrueCfg.uses_uncond(0.0));
        assert!(GuidanceRule::TrueCfg.uses_uncond(-2.0));
    }
}
