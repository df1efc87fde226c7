//! Full-size models of seeded random weights, made in memory: benchmarks anyone can run with no
//! download (`sd bench --random sd15`).
//!
//! The tensors are exactly the ones the networks read: the UNet and VAE are built once on a
//! recording weight source (zero-sized broadcast f16 tensors, so nothing is allocated or
//! packed) that notes each name and shape; the text encoder's list is
//! [`sd_clip::expected_tensors`]. Values follow torch's default initialisation closely enough
//! to keep every activation finite: matrices and kernels uniform in `±1/√fan_in`, norm scales
//! 1, biases and norm shifts 0, embeddings normal with std 0.02 (from a splitmix64 stream seeded
//! by the seed and the tensor's name, so a tensor's values do not depend on the others).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use sd_clip::ClipTextConfig;
use sd_scheduler::{PredictionType, SchedulerConfig};
use sd_tokenize::{ClipTokenizer, Padding};
use sd_unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};
use sd_vae::{AutoencoderKl, AutoencoderKlConfig};

use crate::checkpoint::{Family, ModelKind, ModelWeights, NamedTensors};
use crate::error::{Error, Result};

/// Which model's shapes and configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomModel {
    /// Stable Diffusion 1.5 (CLIP ViT-L/14, 768-wide context, PNDM, epsilon).
    Sd15,
    /// Stable Diffusion 2.1 (OpenCLIP ViT-H/14, 1024-wide context, linear projections, DDIM,
    /// v-prediction, 768² default size).
    Sd21,
}

impl RandomModel {
    /// The name written in images' metadata: `random-sd15`, `random-sd21`.
    pub fn name(self) -> &'static str {
        match self {
            RandomModel::Sd15 => "random-sd15",
            RandomModel::Sd21 => "random-sd21",
        }
    }

    fn configs(self) -> (UNet2DConditionConfig, AutoencoderKlConfig, ClipTextConfig) {
        match self {
            RandomModel::Sd15 => (
                UNet2DConditionConfig::default(),
                AutoencoderKlConfig::default(),
                ClipTextConfig::sd1(),
            ),
            RandomModel::Sd21 => {
                let unet = UNet2DConditionConfig {
                    sample_size: Some(96),
                    cross_attention_dim: 1024,
                    attention_head_dim: PerBlock::Each(vec![5, 10, 20, 20]),
                    use_linear_projection: true,
                    ..UNet2DConditionConfig::default()
                };
                let vae = AutoencoderKlConfig {
                    sample_size: 768,
                    ..AutoencoderKlConfig::default()
                };
                (unet, vae, ClipTextConfig::sd2())
            }
        }
    }
}

/// Random weights of `model` (f32), and the tokenizer it pads with.
///
/// # Errors
/// Only if a network cannot be built from its own default config (a bug).
pub fn random_weights(model: RandomModel, seed: u64) -> Result<(ModelWeights, ClipTokenizer)> {
    let (unet_config, vae_config, text_encoder_config) = model.configs();
    let unet_shapes = recorded(|vb| {
        UNet2DConditionModel::new(&unet_config, vb).map_err(|e| Error::model("unet", e))?;
        Ok(())
    })?;
    let vae_shapes = recorded(|vb| {
        AutoencoderKl::new(&vae_config, vb).map_err(|e| Error::model("vae", e))?;
        Ok(())
    })?;
    let text_shapes = sd_clip::expected_tensors(&text_encoder_config);
    let (family, prediction, scheduler_config, padding) = match model {
        RandomModel::Sd15 => (
            Family::Sd1,
            PredictionType::Epsilon,
            SchedulerConfig::default(),
            Padding::Eos,
        ),
        RandomModel::Sd21 => (
            Family::Sd2,
            PredictionType::VPrediction,
            SchedulerConfig::sd2_v_prediction(),
            Padding::Zero,
        ),
    };
    let weights = ModelWeights {
        unet: filled(&unet_shapes, seed, "unet")?,
        vae: filled(&vae_shapes, seed, "vae")?,
        text_encoder: filled(&text_shapes, seed, "text_encoder")?,
        unet_config,
        vae_config,
        text_encoder_config,
        scheduler_config,
        kind: ModelKind {
            family,
            inpainting: false,
            prediction,
        },
        unknown_keys: Vec::new(),
    };
    Ok((weights, ClipTokenizer::default().with_padding(padding)))
}

/// Tensor names with their shapes, in the order a network asks for them.
type Shapes = Vec<(String, Vec<usize>)>;

/// A weight source that hands out zero-sized broadcast tensors and notes what was asked for.
struct Recorder {
    seen: Arc<Mutex<Shapes>>,
}

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((name.to_string(), shape.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a random model's tensors are asked for with their shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The (name, shape) of every tensor `build` asks for, in order (each once).
fn recorded(build: impl FnOnce(VarBuilder<'static>) -> Result<()>) -> Result<Shapes> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder { seen: seen.clone() };
    // f16 on the CPU takes the layers' plain candle path, which keeps the tensors as given.
    build(VarBuilder::from_backend(
        Box::new(recorder),
        DType::F16,
        Device::Cpu,
    ))?;
    let mut seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut once = std::collections::HashSet::new();
    seen.retain(|(name, _)| once.insert(name.clone()));
    Ok(seen)
}

/// Seeded values for each `(name, shape)` (see the module docs), on two threads.
fn filled(
    shapes: &[(String, Vec<usize>)],
    seed: u64,
    network: &'static str,
) -> Result<NamedTensors> {
    let halves = shapes.split_at(shapes.len() / 2);
    let make = |part: &[(String, Vec<usize>)]| -> candle_core::Result<Vec<(String, Tensor)>> {
        part.iter()
            .map(|(name, shape)| {
                let values = values(name, shape, seed ^ hash(network));
                Ok((
                    name.clone(),
                    Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?,
                ))
            })
            .collect()
    };
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| make(halves.0));
        let second = make(halves.1);
        (first.join(), second)
    });
    let a = a.map_err(|_| Error::model(network, "a weight-making thread panicked"))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(shapes.len());
    tensors.extend(a?);
    tensors.extend(b?);
    Ok(tensors)
}

fn values(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut state = seed ^ hash(name);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let is_embedding = name.contains("embedding");
    if shape.len() >= 2 && !is_embedding {
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        return (0..n).map(|_| next() * bound).collect();
    }
    if is_embedding {
        // Sum of two uniforms, scaled: a bell shape of std 0.02.
        return (0..n).map(|_| (next() + next()) * 0.0245).collect();
    }
    // 1-D: a norm's scale (`weight`) is 1, every bias and shift 0.
    vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n]
}

/// FNV-1a: a stable per-name seed.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(model: RandomModel) -> (usize, usize, usize) {
        let (unet, vae, text) = model.configs();
        let count = |shapes: &[(String, Vec<usize>)]| -> usize {
            shapes
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        let unet_shapes = recorded(|vb| {
            UNet2DConditionModel::new(&unet, vb).map_err(|e| Error::model("unet", e))?;
            Ok(())
        })
        .unwrap();
        let vae_shapes = recorded(|vb| {
            AutoencoderKl::new(&vae, vb).map_err(|e| Error::model("vae", e))?;
            Ok(())
        })
        .unwrap();
        (
            count(&unet_shapes),
            count(&vae_shapes),
            count(&sd_clip::expected_tensors(&text)),
        )
    }

    #[test]
    fn the_shapes_give_diffusers_parameter_counts() {
        // Counted by diffusers 0.42 / transformers 5.25 on models built from the same configs.
        assert_eq!(
            parameters(RandomModel::Sd15),
            (859_520_964, 83_653_863, 123_060_480)
        );
        assert_eq!(
            parameters(RandomModel::Sd21),
            (865_910_724, 83_653_863, 340_387_840)
        );
    }

    #[test]
    fn values_are_seeded_per_name_and_scaled() {
        let a = values("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3], 7);
        let b = values("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3], 7);
        let c = values("down_blocks.0.resnets.0.conv2.weight", &[320, 320, 3, 3], 7);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = 1.0 / (320.0f32 * 9.0).sqrt();
        assert!(a.iter().all(|x| x.abs() <= bound));
        let rms = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
        assert!((rms - bound / 3f32.sqrt()).abs() < 0.05 * bound, "{rms}");
        assert!(values("conv1.bias", &[320], 1).iter().all(|&x| x == 0.0));
        assert!(values("norm1.weight", &[320], 1).iter().all(|&x| x == 1.0));
    }
}
