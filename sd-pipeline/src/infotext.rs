//! The `parameters` text AUTOMATIC1111 writes into its PNGs, which civitai, ComfyUI loaders and
//! image browsers read back:
//!
//! ```text
//! a photo of a cat
//! Negative prompt: blurry
//! Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: v1-5, Clip skip: 2
//! ```
//!
//! The negative line is left out when empty; a value holding a comma, colon or newline is
//! written as a JSON string, as A1111's `quote()` does.

use sd_scheduler::SchedulerKind;

/// What one image was made with.
#[derive(Debug, Clone, PartialEq)]
pub struct Infotext {
    /// The prompt as typed.
    pub prompt: String,
    /// The negative prompt as typed (may be empty).
    pub negative_prompt: String,
    /// Inference steps.
    pub steps: usize,
    /// The sampler.
    pub sampler: SchedulerKind,
    /// True when the schedule uses Karras sigmas (`Schedule type: Karras`).
    pub karras: bool,
    /// Guidance scale.
    pub guidance_scale: f64,
    /// The seed of this image's generator.
    pub seed: u64,
    /// Width and height in pixels.
    pub size: (usize, usize),
    /// The model's name.
    pub model: String,
    /// The decoder when it is not the model's own VAE (`VAE: TAESD`).
    pub vae: Option<String>,
    /// A1111's clip skip (written when above 1).
    pub clip_skip: usize,
    /// Image-to-image / inpainting strength (`Denoising strength`).
    pub strength: Option<f64>,
    /// The position of this image in its batch, when the batch has more than one.
    pub batch_position: Option<(usize, usize)>,
}

/// The sampler's name as A1111 shows it.
pub fn a1111_sampler_name(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Ddim => "DDIM",
        SchedulerKind::Ddpm => "DDPM",
        SchedulerKind::Pndm => "PLMS",
        SchedulerKind::Lms => "LMS",
        SchedulerKind::Euler => "Euler",
        SchedulerKind::EulerAncestral => "Euler a",
        SchedulerKind::Heun => "Heun",
        SchedulerKind::DpmSolverPlusPlus => "DPM++ 2M",
        SchedulerKind::UniPc => "UniPC",
    }
}

/// A1111's `quote()`: plain when safe, else a JSON string.
fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) {
        serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

/// A float as Python prints it for these fields: `7.5`, `7` for whole numbers.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

impl std::fmt::Display for Infotext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.prompt)?;
        if !self.negative_prompt.is_empty() {
            writeln!(f, "Negative prompt: {}", self.negative_prompt)?;
        }
        let mut fields = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", a1111_sampler_name(self.sampler).to_string()),
        ];
        if self.karras {
            fields.push(("Schedule type", "Karras".to_string()));
        }
        fields.extend([
            ("CFG scale", number(self.guidance_scale)),
            ("Seed", self.seed.to_string()),
            ("Size", format!("{}x{}", self.size.0, self.size.1)),
            ("Model", quote(&self.model)),
        ]);
        if let Some(vae) = &self.vae {
            fields.push(("VAE", quote(vae)));
        }
        if let Some(strength) = self.strength {
            fields.push(("Denoising strength", number(strength)));
        }
        if self.clip_skip > 1 {
            fields.push(("Clip skip", self.clip_skip.to_string()));
        }
        if let Some((index, size)) = self.batch_position {
            fields.push(("Batch size", size.to_string()));
            fields.push(("Batch pos", index.to_string()));
        }
        let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        write!(f, "{}", line.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Infotext {
        Infotext {
            prompt: "a photo of a cat".into(),
            negative_prompt: "blurry".into(),
            steps: 20,
            sampler: SchedulerKind::EulerAncestral,
            karras: false,
            guidance_scale: 7.0,
            seed: 1234,
            size: (512, 512),
            model: "v1-5-pruned-emaonly".into(),
            vae: None,
            clip_skip: 2,
            strength: None,
            batch_position: None,
        }
    }

    #[test]
    fn a1111_layout() {
        assert_eq!(
            sample().to_string(),
            "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, \
             Seed: 1234, Size: 512x512, Model: v1-5-pruned-emaonly, Clip skip: 2"
        );
    }

    #[test]
    fn empty_negative_quoted_values_and_optional_fields() {
        let info = Infotext {
            negative_prompt: String::new(),
            guidance_scale: 7.5,
            clip_skip: 1,
            karras: true,
            model: "mix, v2".into(),
            vae: Some("TAESD".into()),
            strength: Some(0.6),
            batch_position: Some((1, 2)),
            sampler: SchedulerKind::DpmSolverPlusPlus,
            ..sample()
        };
        assert_eq!(
            info.to_string(),
            "a photo of a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, \
             Seed: 1234, Size: 512x512, Model: \"mix, v2\", VAE: TAESD, Denoising strength: 0.6, \
             Batch size: 2, Batch pos: 1"
        );
    }
}
