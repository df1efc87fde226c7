//! AUTOMATIC1111's `txt2img` / `img2img` request and response bodies, with A1111's field
//! names and defaults (50 steps, CFG 7, 512 x 512, seed -1 = random, sampler "Euler",
//! denoising strength 0.75), turned into [`GenerateRequest`]s.
//!
//! Fields are all optional and `null` means the default, as A1111's clients send them. Fields
//! this server does not know are ignored (as A1111 does); features it lacks (`enable_hr`,
//! `restore_faces`, `tiling`, inpainting fills other than "original") are refused by name
//! rather than silently dropped. `n_iter` batches use seeds `seed`, `seed + batch_size`, ...;
//! the images of one batch come from one generator (diffusers' `num_images_per_prompt`).

use sd_pipeline::image::rgb_to_mask;
use sd_pipeline::image_crate::{DynamicImage, GrayImage};
use sd_pipeline::infotext::a1111_sampler_name;
use sd_pipeline::{GenerateRequest, Generated, ImageInput};
use serde::{Deserialize, Serialize};

use crate::api_error::ApiError;
use crate::images::{decode_base64, png_base64};
use crate::limits::Limits;
use crate::samplers::{choose, schedule_label, SamplerChoice};

/// A1111's default image side for both routes.
pub const DEFAULT_SIDE: usize = 512;

/// Settings a request may override for itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OverrideSettings {
    /// Clip skip for this request (1 = last layer).
    #[serde(rename = "CLIP_stop_at_last_layers")]
    pub clip_stop_at_last_layers: Option<usize>,
    /// Must name the resident model when given: this server does not switch models per
    /// request (`POST /sdapi/v1/options` does).
    pub sd_model_checkpoint: Option<String>,
}

/// The body of `POST /sdapi/v1/txt2img` and `POST /sdapi/v1/img2img` (the image fields are
/// read by img2img only).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GenerationRequest {
    /// The prompt (default empty), with emphasis and `<lora:NAME:W>` tags.
    pub prompt: Option<String>,
    /// The negative prompt (default empty).
    pub negative_prompt: Option<String>,
    /// The seed; -1 (the default) picks one at random.
    pub seed: Option<i64>,
    /// A1111's sampler name ("Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", ...).
    pub sampler_name: Option<String>,
    /// The older name of `sampler_name` (default "Euler").
    pub sampler_index: Option<String>,
    /// The schedule type: "Automatic" (default) or "Karras".
    pub scheduler: Option<String>,
    /// Images per batch (default 1).
    pub batch_size: Option<usize>,
    /// Batches (default 1).
    pub n_iter: Option<usize>,
    /// Inference steps (default 50).
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (default 7).
    pub cfg_scale: Option<f64>,
    /// Width in pixels, a multiple of 8 (default 512).
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 8 (default 512).
    pub height: Option<usize>,
    /// Refused when true (no face restoration here).
    pub restore_faces: Option<bool>,
    /// Refused when true (no tiling here).
    pub tiling: Option<bool>,
    /// Refused when true (no hires fix here).
    pub enable_hr: Option<bool>,
    /// False leaves `images` empty in the answer (default true).
    pub send_images: Option<bool>,
    /// Per-request settings (`CLIP_stop_at_last_layers`; `sd_model_checkpoint` only when it
    /// names the resident model).
    pub override_settings: Option<OverrideSettings>,
    /// img2img: the init images as base64 (the first is used).
    pub init_images: Option<Vec<String>>,
    /// img2img: an inpainting mask as base64 (white = repaint).
    pub mask: Option<String>,
    /// img2img: how far the init image is noised, in [0, 1] (default 0.75).
    pub denoising_strength: Option<f64>,
    /// img2img: what the masked area starts from; only 1 ("original") maps to this pipeline.
    pub inpainting_fill: Option<u8>,
    /// img2img: 1 repaints the black part of the mask instead of the white.
    pub inpainting_mask_invert: Option<u8>,
}

/// Which route a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `txt2img`.
    Txt2Img,
    /// `img2img`.
    Img2Img,
}

/// A request checked and turned into the pipeline's requests, one per batch.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One request per `n_iter` batch.
    pub requests: Vec<GenerateRequest>,
    /// The sampler chosen.
    pub sampler: SamplerChoice,
    /// The request with every default filled in (images left out): the answer's `parameters`.
    pub parameters: serde_json::Value,
    /// Whether the answer carries the images.
    pub send_images: bool,
}

/// A seed in A1111's range (32 bits), from the standard library's randomly keyed hasher.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() & 0xFFFF_FFFF
}

fn refuse_if_true(field: &str, value: Option<bool>, what: &str) -> Result<(), ApiError> {
    if value == Some(true) {
        return Err(ApiError::field(
            field,
            format!("{what} is not available on this server; send false or leave it out"),
        ));
    }
    Ok(())
}

impl GenerationRequest {
    /// Checks the request against `limits` and turns it into pipeline requests; `clip_skip` is
    /// the server's `CLIP_stop_at_last_layers` option. For img2img this decodes the images.
    ///
    /// # Errors
    /// [`ApiError::InvalidField`] naming the first field at fault.
    pub fn plan(&self, mode: Mode, clip_skip: usize, limits: &Limits) -> Result<Plan, ApiError> {
        let sampler = choose(
            self.sampler_name.as_deref(),
            self.sampler_index.as_deref(),
            self.scheduler.as_deref(),
        )?;
        refuse_if_true("enable_hr", self.enable_hr, "hires fix")?;
        refuse_if_true("restore_faces", self.restore_faces, "face restoration")?;
        refuse_if_true("tiling", self.tiling, "tiling")?;
        let seed = match self.seed.unwrap_or(-1) {
            -1 => random_seed(),
            s if s < 0 => {
                return Err(ApiError::field(
                    "seed",
                    format!("{s} is not a seed: give -1 (random) or a number >= 0"),
                ))
            }
            s => s as u64,
        };
        let batch_size = self.batch_size.unwrap_or(1);
        let n_iter = self.n_iter.unwrap_or(1);
        if n_iter == 0 {
            return Err(ApiError::field("n_iter", "0 batches; give at least 1"));
        }
        let steps = self.steps.unwrap_or(50);
        let clip_skip = self
            .override_settings
            .as_ref()
            .and_then(|o| o.clip_stop_at_last_layers)
            .unwrap_or(clip_skip);
        let width = self.width.unwrap_or(DEFAULT_SIDE);
        let height = self.height.unwrap_or(DEFAULT_SIDE);
        let init = match mode {
            Mode::Txt2Img => None,
            Mode::Img2Img => Some(self.init_input()?),
        };
        let base = GenerateRequest {
            prompt: self.prompt.clone().unwrap_or_default(),
            negative_prompt: self.negative_prompt.clone().unwrap_or_default(),
            steps,
            guidance_scale: self.cfg_scale.unwrap_or(7.0),
            width: Some(width),
            height: Some(height),
            batch_size,
            seed,
            clip_skip,
            scheduler: Some(sampler.kind),
            karras: sampler.karras,
            init,
            ..GenerateRequest::default()
        };
        base.validate().map_err(ApiError::from_pipeline)?;
        let size = base.size(DEFAULT_SIDE).map_err(ApiError::from_pipeline)?;
        base.start_step().map_err(ApiError::from_pipeline)?;
        limits.check(size, steps, batch_size.saturating_mul(n_iter))?;

        let mut parameters = self.clone();
        parameters.init_images = None;
        parameters.mask = None;
        parameters.seed = Some(seed as i64);
        parameters.sampler_name = Some(a1111_sampler_name(sampler.kind).to_string());
        parameters.scheduler = Some(schedule_label(sampler.karras == Some(true)).to_string());
        parameters.batch_size = Some(batch_size);
        parameters.n_iter = Some(n_iter);
        parameters.steps = Some(steps);
        parameters.cfg_scale = Some(base.guidance_scale);
        parameters.width = Some(size.0);
        parameters.height = Some(size.1);
        parameters.prompt = Some(base.prompt.clone());
        parameters.negative_prompt = Some(base.negative_prompt.clone());
        if mode == Mode::Img2Img {
            parameters.denoising_strength = base.init.as_ref().map(|i| i.strength);
        }
        let parameters = serde_json::to_value(&parameters)
            .map_err(|e| ApiError::Internal(format!("parameters: {e}")))?;

        let requests = (0..n_iter)
            .map(|i| GenerateRequest {
                seed: seed.wrapping_add((i * batch_size) as u64),
                ..base.clone()
            })
            .collect();
        Ok(Plan {
            requests,
            sampler,
            parameters,
            send_images: self.send_images.unwrap_or(true),
        })
    }

    /// img2img's init image, mask and strength.
    fn init_input(&self) -> Result<ImageInput, ApiError> {
        let first = self
            .init_images
            .as_ref()
            .and_then(|images| images.first())
            .ok_or_else(|| {
                ApiError::field("init_images", "img2img needs an init image (base64)")
            })?;
        let image = decode_base64("init_images[0]", first)?.to_rgb8();
        let mask = match &self.mask {
            None => None,
            Some(text) => {
                let mut mask = match decode_base64("mask", text)? {
                    grey @ (DynamicImage::ImageLuma8(_)
                    | DynamicImage::ImageLuma16(_)
                    | DynamicImage::ImageLumaA8(_)
                    | DynamicImage::ImageLumaA16(_)) => grey.to_luma8(),
                    other => rgb_to_mask(&other.to_rgb8()),
                };
                match self.inpainting_mask_invert.unwrap_or(0) {
                    0 => {}
                    1 => invert(&mut mask),
                    n => {
                        return Err(ApiError::field(
                            "inpainting_mask_invert",
                            format!("{n}: give 0 (repaint white) or 1 (repaint black)"),
                        ))
                    }
                }
                Some(mask)
            }
        };
        if let Some(fill) = self.inpainting_fill.filter(|&f| f != 1) {
            if mask.is_some() {
                return Err(ApiError::field(
                    "inpainting_fill",
                    format!(
                        "{fill}: only 1 (original) maps to this server's inpainting, which starts \
                         the masked area from the init image"
                    ),
                ));
            }
        }
        let strength = self.denoising_strength.unwrap_or(0.75);
        if !strength.is_finite() {
            return Err(ApiError::field("denoising_strength", "not a finite number"));
        }
        Ok(ImageInput {
            image,
            mask,
            strength,
        })
    }
}

fn invert(mask: &mut GrayImage) {
    for p in mask.pixels_mut() {
        p.0[0] = 255 - p.0[0];
    }
}

/// The answer of `txt2img` / `img2img`: base64 PNGs with their parameters text, the request
/// with its defaults filled in, and A1111's `info` (a JSON object, as a string).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagesResponse {
    /// Base64 PNGs, each carrying its A1111 `parameters` text chunk.
    pub images: Vec<String>,
    /// The request as run (defaults filled, images left out).
    pub parameters: serde_json::Value,
    /// A JSON object as a string: prompt, seeds, size, sampler, infotexts, ...
    pub info: String,
}

impl ImagesResponse {
    /// The answer for `plan`'s `batches`, made with the model called `model`.
    ///
    /// # Errors
    /// [`ApiError::Internal`] if a PNG cannot be encoded.
    pub fn new(plan: &Plan, batches: &[Generated], model: &str) -> Result<Self, ApiError> {
        let first = &plan.requests[0];
        let mut images = Vec::new();
        let mut infotexts = Vec::new();
        let mut all_seeds = Vec::new();
        for (request, generated) in plan.requests.iter().zip(batches) {
            for (image, info) in generated.images.iter().zip(&generated.infotexts) {
                let text = info.to_string();
                if plan.send_images {
                    images.push(png_base64(image, &text)?);
                }
                infotexts.push(text);
                all_seeds.push(request.seed);
            }
        }
        let count = infotexts.len();
        let (width, height) = first
            .size(DEFAULT_SIDE)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let info = serde_json::json!({
            "prompt": first.prompt,
            "all_prompts": vec![&first.prompt; count],
            "negative_prompt": first.negative_prompt,
            "all_negative_prompts": vec![&first.negative_prompt; count],
            "seed": first.seed,
            "all_seeds": all_seeds,
            "subseed": -1,
            "all_subseeds": vec![-1; count],
            "subseed_strength": 0,
            "width": width,
            "height": height,
            "sampler_name": a1111_sampler_name(plan.sampler.kind),
            "scheduler": schedule_label(plan.sampler.karras == Some(true)),
            "cfg_scale": first.guidance_scale,
            "steps": first.steps,
            "batch_size": first.batch_size,
            "n_iter": plan.requests.len(),
            "restore_faces": false,
            "sd_model_name": model,
            "sd_model_hash": null,
            "denoising_strength": first.init.as_ref().map(|i| i.strength),
            "clip_skip": first.clip_skip,
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "styles": [],
        });
        Ok(Self {
            images,
            parameters: plan.parameters.clone(),
            info: info.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str, mode: Mode) -> Result<Plan, ApiError> {
        let request: GenerationRequest = crate::json::parse(json.as_bytes())?;
        request.plan(mode, 1, &Limits::default())
    }

    #[test]
    fn defaults_are_a1111s() {
        let p = plan(
            r#"{"prompt": "cat", "seed": 5, "styles": null}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        let r = &p.requests[0];
        assert_eq!((r.steps, r.guidance_scale, r.seed), (50, 7.0, 5));
        assert_eq!((r.width, r.height), (Some(512), Some(512)));
        assert_eq!(r.scheduler.map(|k| k.name()), Some("euler"));
        assert_eq!(p.parameters["sampler_name"], "Euler");
        assert_eq!(p.parameters["width"], 512);
        let p = plan(
            r#"{"seed": 10, "batch_size": 2, "n_iter": 3, "steps": 4, "width": 64, "height": 64}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        let seeds: Vec<u64> = p.requests.iter().map(|r| r.seed).collect();
        assert_eq!(seeds, [10, 12, 14]);
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |json: &str, mode| plan(json, mode).unwrap_err().field_name().map(String::from);
        assert_eq!(
            field(r#"{"width": 100}"#, Mode::Txt2Img).as_deref(),
            Some("width")
        );
        assert_eq!(
            field(r#"{"steps": 0}"#, Mode::Txt2Img).as_deref(),
            Some("steps")
        );
        assert_eq!(
            field(r#"{"steps": 151}"#, Mode::Txt2Img).as_deref(),
            Some("steps")
        );
        assert_eq!(
            field(r#"{"cfg_scale": "x"}"#, Mode::Txt2Img).as_deref(),
            Some("cfg_scale")
        );
        assert_eq!(
            field(r#"{"enable_hr": true}"#, Mode::Txt2Img).as_deref(),
            Some("enable_hr")
        );
        assert_eq!(
            field(r#"{"seed": -5}"#, Mode::Txt2Img).as_deref(),
            Some("seed")
        );
        assert_eq!(
            field(r#"{"width": 2048, "height": 2048}"#, Mode::Txt2Img).as_deref(),
            Some("width")
        );
        assert_eq!(field("{}", Mode::Img2Img).as_deref(), Some("init_images"));
        assert_eq!(
            field(r#"{"init_images": ["xx"]}"#, Mode::Img2Img).as_deref(),
            Some("init_images[0]")
        );
        assert_eq!(
            field(
                r#"{"override_settings": {"CLIP_stop_at_last_layers": 0}}"#,
                Mode::Txt2Img
            )
            .as_deref(),
            Some("CLIP_stop_at_last_layers")
        );
    }
}
