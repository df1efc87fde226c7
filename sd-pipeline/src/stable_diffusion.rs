//! [`StableDiffusion`], the facade: a loaded model and [`StableDiffusion::generate`], which runs
//! text-to-image, image-to-image or inpainting exactly as diffusers' `StableDiffusionPipeline`,
//! `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline` do, draw for draw.
//!
//! Random draws, in diffusers' order, all from one torch-compatible generator seeded with the
//! request's seed: (img2img) the VAE posterior sample of the init image, then the start noise;
//! (inpainting) the init image's posterior sample when the UNet has 4 channels or strength < 1,
//! the start noise, the masked image's posterior sample; (text-to-image) the start latents; then
//! in every run the noise of each ancestral / DDPM step.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use sd_clip::ClipTextModel;
use sd_kernels::alloc::CachingAllocator;
use sd_scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use sd_tokenize::{ClipTokenizer, Padding};
use sd_unet::{AttentionMode, UNet2DConditionConfig, UNet2DConditionModel};
use sd_vae::AutoencoderKl;

use crate::checkpoint::{
    mapped_networks, merge, Component, Components, Family, LoadOptions, LoraFile, LoraStack,
    MappedSafetensors, ModelKind, ModelWeights, Multipliers,
};
use crate::components::{Autoencoder, Denoiser, TextEncoder, Vae};
use crate::conditioning::{encode_prompts, Conditioning};
use crate::denoise::{denoise, Guidance, Inpainting, StepCallback};
use crate::error::{Error, Result};
use crate::image::{image_to_tensor, mask_to_tensor, resize_nearest, tensor_to_images};
use crate::infotext::Infotext;
use crate::lora_branches::{LoraBranches, PendingBranches, SelectionGuard};
use crate::model_source::ModelSource;
use crate::request::{supports_karras, GenerateRequest, ImageInput};
use crate::rng::TorchRng;
use crate::taesd::{LatentDecoder, Taesd};
use crate::textual_inversion::Embeddings;

/// The most freed memory the caching allocator keeps in low-memory mode (default 512 MiB):
/// measured on random SD 1.5 at 512² f32, the peak was 4.07 GiB at 512 MiB, 3.84 at 256 and
/// 3.60 with no cache, with UNet calls within the run-to-run noise of each other.
const LOW_MEMORY_CACHE: usize = 128 << 20;

/// The most freed memory the caching allocator keeps for half-precision (bf16 / f16) weights
/// (default 512 MiB). Their activations are as large as with f32 weights, so the cache weighs
/// more against the smaller weights: random SD 1.5 bf16 at 512², AVX512-BF16, peak RSS 2904
/// MiB at 512 MiB, 2804 at 384, 2775 at 256, UNet calls within the run-to-run noise (4.85-5.17
/// s a call at either size; 12% more page faults over the run at 256).
const HALF_PRECISION_CACHE: usize = 256 << 20;

/// The most freed memory the caching allocator keeps while the VAE decodes: room for the
/// Winograd buffers (V and M, at most 32 MiB each) that each of its convolutions asks for,
/// not for its activations (up to 256 MiB at 512², never asked for again). Uncached, those
/// buffers were fresh pages every convolution (page zeroing was 19% of a 256² f32 decode);
/// keeping all blocks added 0.6 GiB to the peak at 512² for no gain.
const DECODE_CACHE: usize = 96 << 20;

/// Pixels per latent cell (SD 1.x / 2.x VAEs downsample by 8).
pub const VAE_SCALE: usize = 8;

/// The three networks, ready to run.
#[derive(Clone)]
pub struct Parts {
    /// The text encoder.
    pub text_encoder: Arc<dyn TextEncoder>,
    /// The UNet.
    pub denoiser: Arc<dyn Denoiser>,
    /// The VAE.
    pub autoencoder: Arc<dyn Autoencoder>,
}

/// How networks are built from weights.
#[derive(Debug, Clone)]
pub(crate) struct BuildSettings {
    dtype: DType,
    device: Device,
    attention: AttentionMode,
    vae_tiling: bool,
    /// LoRA files merged into the weights as each network is built (unless `side_branches`).
    pub(crate) lora: Option<Arc<LoraStack>>,
    /// Keep the LoRAs as side branches chosen per request instead of merging them.
    pub(crate) side_branches: bool,
    /// Textual-inversion rows added to the text encoder's token table.
    embeddings: Arc<Embeddings>,
}

/// Where networks built on demand take their weights from.
// One per pipeline: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum WeightStore {
    /// Weights handed to the builder, kept in memory.
    Memory(Box<ModelWeights>),
    /// Re-read from disk for each stage, one network at a time, with the mixes applied.
    Disk {
        path: PathBuf,
        options: LoadOptions,
        mixes: Vec<(PathBuf, f64)>,
    },
}

impl WeightStore {
    /// Weights holding (at least) `component`'s tensors.
    fn weights(&self, component: Component) -> Result<Cow<'_, ModelWeights>> {
        match self {
            WeightStore::Memory(weights) => Ok(Cow::Borrowed(weights)),
            WeightStore::Disk {
                path,
                options,
                mixes,
            } => {
                let options = LoadOptions {
                    only: Some(component),
                    ..options.clone()
                };
                let mut weights = ModelWeights::open(path, &options)?;
                mix_into(&mut weights, mixes, &options)?;
                Ok(Cow::Owned(weights))
            }
        }
    }
}

/// The networks, built once (the default) or built for each stage and dropped after it.
#[allow(clippy::large_enum_variant)]
enum Models {
    Resident(Parts),
    OnDemand {
        store: WeightStore,
        settings: BuildSettings,
    },
}

impl Models {
    fn text_encoder(&self) -> Result<Arc<dyn TextEncoder>> {
        match self {
            Models::Resident(parts) => Ok(parts.text_encoder.clone()),
            Models::OnDemand { store, settings } => {
                let _uncached = CachingAllocator::uncached();
                let weights = store.weights(Component::TextEncoder)?;
                Ok(Arc::new(build_text_encoder(&weights, settings)?))
            }
        }
    }

    fn denoiser(&self) -> Result<Arc<dyn Denoiser>> {
        match self {
            Models::Resident(parts) => Ok(parts.denoiser.clone()),
            Models::OnDemand { store, settings } => {
                let _uncached = CachingAllocator::uncached();
                let mut weights = store.weights(Component::Unet)?.into_owned();
                let tensors = TensorStore::read(std::mem::take(&mut weights.unet));
                Ok(Arc::new(build_unet(tensors, &weights, settings)?))
            }
        }
    }

    fn autoencoder(&self) -> Result<Arc<dyn Autoencoder>> {
        match self {
            Models::Resident(parts) => Ok(parts.autoencoder.clone()),
            Models::OnDemand { store, settings } => {
                let _uncached = CachingAllocator::uncached();
                let mut weights = store.weights(Component::Vae)?.into_owned();
                let tensors = TensorStore::read(std::mem::take(&mut weights.vae));
                Ok(Arc::new(build_vae(tensors, &weights, settings)?))
            }
        }
    }
}

/// Where a network's tensors come from while it is built. A network that packs its weights
/// (sd-kernels' CPU layers) then holds the only copy, so building never needs the read
/// tensors and the built network in memory at the same time.
enum TensorStore {
    /// Tensors already read, each handed out once and then forgotten.
    Read(std::sync::Mutex<crate::checkpoint::NamedTensors>),
    /// A `.safetensors` file, read tensor by tensor as the network asks for them: one read
    /// copy at a time instead of the whole network's.
    Mapped(MappedSafetensors),
}

impl TensorStore {
    fn read(tensors: crate::checkpoint::NamedTensors) -> Self {
        TensorStore::Read(std::sync::Mutex::new(tensors))
    }
}

/// One network's tensors as it is built: from a [`TensorStore`], with the LoRA files (if any)
/// merged into each weight as it is handed out.
struct TensorSource {
    store: TensorStore,
    network: Component,
    lora: Option<Arc<LoraStack>>,
}

impl candle_nn::var_builder::SimpleBackend for TensorSource {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &shape {
            candle_core::bail!("{name}: shape {:?}, expected {:?}", t.dims(), shape.dims());
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let found = match &self.store {
            TensorStore::Read(tensors) => Ok(tensors
                .lock()
                .map_err(|_| candle_core::Error::Msg("weights lock poisoned".into()))?
                .remove(name)),
            // Without a LoRA to merge first, read straight into the dtype asked for.
            TensorStore::Mapped(file) if self.lora.is_none() => file.load_as(name, dtype),
            TensorStore::Mapped(file) => file.load(name),
        }
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut t = found.ok_or_else(|| candle_core::Error::CannotFindTensor {
            path: name.to_string(),
        })?;
        if let Some(lora) = &self.lora {
            t = lora
                .apply(self.network, name, t)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.store {
            TensorStore::Read(tensors) => tensors.lock().is_ok_and(|m| m.contains_key(name)),
            TensorStore::Mapped(file) => file.contains(name),
        }
    }
}

/// A `VarBuilder` over `store`, with the LoRA files applied (see [`TensorSource`]).
fn take_once(store: TensorStore, network: Component, s: &BuildSettings) -> VarBuilder<'static> {
    let source = TensorSource {
        store,
        network,
        lora: s.lora.clone().filter(|_| !s.side_branches),
    };
    VarBuilder::from_backend(Box::new(source), s.dtype, s.device.clone())
}

pub(crate) fn build_text_encoder(
    weights: &ModelWeights,
    s: &BuildSettings,
) -> Result<ClipTextModel> {
    let mut tensors = weights.text_encoder.clone();
    if let Some(lora) = s.lora.as_ref().filter(|_| !s.side_branches) {
        lora.apply_all(Component::TextEncoder, &mut tensors)?;
    }
    let config = s
        .embeddings
        .extend(&mut tensors, &weights.text_encoder_config)?;
    let vb = VarBuilder::from_tensors(tensors, s.dtype, &s.device);
    ClipTextModel::new(&config, vb).map_err(|e| Error::model("text_encoder", e))
}

/// The UNet from `tensors` (each dropped as soon as the network has packed it; `meta` gives
/// the config).
fn build_unet(
    tensors: TensorStore,
    meta: &ModelWeights,
    s: &BuildSettings,
) -> Result<UNet2DConditionModel> {
    let mut unet =
        UNet2DConditionModel::new(&meta.unet_config, take_once(tensors, Component::Unet, s))
            .map_err(|e| Error::model("unet", e))?;
    unet.set_attention_mode(s.attention);
    Ok(unet)
}

/// The VAE from `tensors` (as [`build_unet`]).
fn build_vae(tensors: TensorStore, meta: &ModelWeights, s: &BuildSettings) -> Result<Vae> {
    let vae = AutoencoderKl::new(&meta.vae_config, take_once(tensors, Component::Vae, s))
        .map_err(|e| Error::model("vae", e))?;
    Ok(Vae::new(vae, s.vae_tiling))
}

/// Gives the blocks the caching allocator keeps (when the binary uses [`CachingAllocator`]) back to the system at the end of a phase: loading,
/// denoising and decoding each ask for their own sizes, so the previous phase's blocks would
/// only add to the peak memory and fill the cache the next phase needs.
fn end_of_phase() {
    CachingAllocator::release_all();
}

/// Time spent in each stage of one [`StableDiffusion::generate`].
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Tokenizing and encoding the prompts (building the text encoder too, in low-memory mode).
    pub text_encoding: Duration,
    /// Preparing the start latents (VAE encoding for img2img / inpainting).
    pub preparing: Duration,
    /// The sampling loop.
    pub denoising: Duration,
    /// VAE decoding and conversion to 8-bit.
    pub decoding: Duration,
    /// UNet calls made.
    pub model_calls: usize,
}

/// What [`StableDiffusion::generate`] returns.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The pictures, one per batch entry.
    pub images: Vec<RgbImage>,
    /// For each picture, its A1111 `parameters` text.
    pub infotexts: Vec<Infotext>,
    /// Where the time went.
    pub timings: Timings,
}

/// Where a builder's weights come from.
#[derive(Debug, Clone)]
enum Origin {
    Source(ModelSource),
    Weights {
        weights: Box<ModelWeights>,
        tokenizer: Box<ClipTokenizer>,
        name: String,
    },
}

/// Loads a [`StableDiffusion`]: model location, device, dtype, scheduler, attention mode.
#[derive(Debug, Clone)]
pub struct StableDiffusionBuilder {
    origin: Origin,
    settings: BuildSettings,
    scheduler: Option<SchedulerKind>,
    low_memory: bool,
    load_options: LoadOptions,
    mixes: Vec<(ModelSource, f64)>,
    loras: Vec<(PathBuf, Multipliers)>,
    lora_strict: bool,
    embedding_files: Vec<PathBuf>,
    taesd: Option<PathBuf>,
    download_progress: bool,
}

impl StableDiffusionBuilder {
    /// Runs on `device` (default: the CPU).
    pub fn device(mut self, device: Device) -> Self {
        self.settings.device = device;
        self
    }

    /// Computes in `dtype` (f32, f16 or bf16; default f32). Attention softmax stays in f32 and
    /// an overflowing f16 VAE pass is redone in f32. With f16 or bf16, [`build`](Self::build)
    /// lowers the caching allocator's limit to 256 MiB (half precision is chosen for memory).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.settings.dtype = dtype;
        self
    }

    /// The default sampler for requests that name none (default: the model's
    /// `scheduler_config.json` class, or PNDM / DDIM for single files as diffusers picks).
    pub fn scheduler(mut self, kind: SchedulerKind) -> Self {
        self.scheduler = Some(kind);
        self
    }

    /// The UNet's attention backend (full or sliced).
    pub fn attention(mut self, mode: AttentionMode) -> Self {
        self.settings.attention = mode;
        self
    }

    /// VAE encode / decode in overlapping tiles for images larger than the VAE's sample size.
    pub fn vae_tiling(mut self, tiled: bool) -> Self {
        self.settings.vae_tiling = tiled;
        self
    }

    /// Builds each network when its stage starts and drops it when the stage ends. A model on
    /// disk is re-read network by network, so only one network's weights are in memory at a
    /// time (a model handed over as weights stays in memory, in its stored dtype). It also caps
    /// the memory sd-kernels' caching allocator keeps for reuse at 128 MiB, for the process.
    pub fn low_memory(mut self, low_memory: bool) -> Self {
        self.low_memory = low_memory;
        self
    }

    /// How single files are read (EMA weights, config overrides, prediction type).
    pub fn load_options(mut self, options: LoadOptions) -> Self {
        self.load_options = options;
        self
    }

    /// Blends another model in before the networks are built: `a + (b - a) * scale` on every
    /// network (calls chain: each blends into the result of the previous ones).
    pub fn mix(mut self, other: impl Into<ModelSource>, scale: f64) -> Self {
        self.mixes.push((other.into(), scale));
        self
    }

    /// Merges a LoRA / LyCORIS file (kohya, diffusers / PEFT, LoHa, LoKr; `.safetensors` or
    /// `.pt`) into the weights as the networks are built, at `multipliers` (calls add files:
    /// `W + Σ multiplier · ΔW`). A prompt's `<lora:NAME:…>` tag must then name one of these
    /// files (by file name without extension) at the same multipliers.
    pub fn lora(mut self, path: impl Into<PathBuf>, multipliers: Multipliers) -> Self {
        self.loras.push((path.into(), multipliers));
        self
    }

    /// Keeps the LoRA files as side branches of the UNet's layers (and re-merges the small text
    /// encoder when asked for other multipliers) instead of merging them at load: each
    /// request's `<lora:NAME:TE:UNET>` tags then choose which of them apply, at any
    /// multipliers, and a request without tags gets the plain model. Each call pays for the
    /// branches' products; the images are the merged ones (within rounding). Needs the
    /// networks resident (not [`low_memory`](Self::low_memory)). The multipliers given to
    /// [`lora`](Self::lora) are then not used: the tags choose.
    pub fn lora_side_branches(mut self, side_branches: bool) -> Self {
        self.settings.side_branches = side_branches;
        self
    }

    /// Makes LoRA keys of no known module, and modules for layers the model lacks, an error
    /// (default: they are skipped, and listed by [`StableDiffusion::lora_unmatched`]).
    pub fn lora_strict(mut self, strict: bool) -> Self {
        self.lora_strict = strict;
        self
    }

    /// Adds a textual-inversion embedding (A1111 `.pt` / `.safetensors`, diffusers `.bin`):
    /// its file name without extension, written as a word in a prompt or negative prompt,
    /// then stands for its vectors (calls add files).
    pub fn embedding(mut self, path: impl Into<PathBuf>) -> Self {
        self.embedding_files.push(path.into());
        self
    }

    /// Also loads TAESD, the tiny autoencoder, from `path` (see [`Taesd::open`]), in the
    /// pipeline's dtype: for [`decode_latents_with`](StableDiffusion::decode_latents_with)
    /// previews and for requests whose [`decoder`](GenerateRequest::decoder) is
    /// [`LatentDecoder::Taesd`].
    pub fn taesd(mut self, path: impl Into<PathBuf>) -> Self {
        self.taesd = Some(path.into());
        self
    }

    /// Shows download progress bars when a Hub model is fetched (default: off).
    pub fn download_progress(mut self, show: bool) -> Self {
        self.download_progress = show;
        self
    }

    /// Resolves and reads the model (and any models to mix, and LoRA files), then builds the
    /// networks. In low-memory mode a model on disk is only opened here for its configs and
    /// tokenizer (so LoRA layers the model lacks are found at the first generation).
    pub fn build(mut self) -> Result<StableDiffusion> {
        if self.low_memory {
            CachingAllocator::cap_limit(LOW_MEMORY_CACHE);
        }
        if matches!(self.settings.dtype, DType::BF16 | DType::F16) {
            CachingAllocator::cap_limit(HALF_PRECISION_CACHE);
        }
        if self.settings.side_branches && self.low_memory {
            return Err(Error::Lora {
                message: "LoRA side branches need the networks resident; \
                          turn low-memory mode off or merge the LoRAs"
                    .into(),
            });
        }
        let strict = self.lora_strict;
        let mut stack = LoraStack::new();
        for (path, multipliers) in &self.loras {
            let file = LoraFile::open(path)?;
            if strict && !file.unknown_keys().is_empty() {
                return Err(Error::Lora {
                    message: format!(
                        "{}: keys of no known LoRA module: {}",
                        path.display(),
                        file.unknown_keys().join(", ")
                    ),
                });
            }
            stack.push(file, *multipliers);
        }
        let stack = (!stack.is_empty()).then(|| Arc::new(stack));
        self.settings.lora = stack.clone();
        let taesd = self
            .taesd
            .take()
            .map(|path| Taesd::open(path, self.settings.dtype, &self.settings.device))
            .transpose()?;
        let mut sd = self.build_networks()?;
        sd.taesd = taesd.map(Arc::new);
        if let (Some(stack), Some(pending)) = (&stack, sd.pending_branches.take()) {
            sd.branches = Some(LoraBranches::new(stack.clone(), pending)?);
        }
        sd.lora = stack.map(|stack| LoadedLoras { stack, strict });
        if matches!(sd.models, Models::Resident(_)) {
            sd.check_lora_matches()?;
        }
        Ok(sd)
    }

    fn build_networks(self) -> Result<StableDiffusion> {
        let _uncached = CachingAllocator::uncached();
        let mixes = self
            .mixes
            .iter()
            .enumerate()
            .map(|(index, (other, scale))| {
                let path = other
                    .resolve(self.download_progress)
                    .map_err(|e| Error::mix(index, other.to_string(), e))?;
                Ok((path, *scale))
            })
            .collect::<Result<Vec<_>>>()?;
        let source = match self.origin {
            Origin::Source(source) if self.low_memory => source,
            Origin::Source(source) => {
                let path = source.resolve(self.download_progress)?;
                // A diffusers folder of .safetensors files is read network by network, tensor
                // by tensor; a mix needs every tensor of both models, so it reads them all.
                let mapped = match mixes.is_empty() && path.is_dir() {
                    true => mapped_networks(&path)?,
                    false => None,
                };
                let options = match mapped {
                    Some(_) => LoadOptions {
                        only: Some(Component::TextEncoder),
                        ..self.load_options.clone()
                    },
                    None => self.load_options.clone(),
                };
                let weights = ModelWeights::open(&path, &options)?;
                let tokenizer = tokenizer_for(&path, &weights)?;
                let settings = settings_for_model(
                    &self.settings,
                    &self.embedding_files,
                    &tokenizer,
                    &weights,
                )?;
                return Self::resident(
                    weights,
                    mapped,
                    &mixes,
                    tokenizer,
                    source.name(),
                    &settings,
                    &self.load_options,
                    self.scheduler,
                );
            }
            Origin::Weights {
                weights,
                tokenizer,
                name,
            } => {
                let settings = settings_for_model(
                    &self.settings,
                    &self.embedding_files,
                    &tokenizer,
                    &weights,
                )?;
                if !self.low_memory {
                    return Self::resident(
                        *weights,
                        None,
                        &mixes,
                        *tokenizer,
                        name,
                        &settings,
                        &self.load_options,
                        self.scheduler,
                    );
                }
                let mut weights = *weights;
                mix_into(&mut weights, &mixes, &self.load_options)?;
                let device = settings.device.clone();
                let embeddings = settings.embeddings.clone();
                let models = Models::OnDemand {
                    store: WeightStore::Memory(Box::new(weights.clone())),
                    settings,
                };
                return StableDiffusion::assemble(
                    &weights,
                    models,
                    embeddings,
                    *tokenizer,
                    name,
                    self.scheduler,
                    device,
                );
            }
        };
        let path = source.resolve(self.download_progress)?;
        // The text encoder is the smallest network: read it for the configs and the kind.
        let probe = LoadOptions {
            only: Some(Component::TextEncoder),
            ..self.load_options.clone()
        };
        let meta = ModelWeights::open(&path, &probe)?;
        let tokenizer = tokenizer_for(&path, &meta)?;
        let settings =
            settings_for_model(&self.settings, &self.embedding_files, &tokenizer, &meta)?;
        let device = settings.device.clone();
        let embeddings = settings.embeddings.clone();
        let models = Models::OnDemand {
            store: WeightStore::Disk {
                path,
                options: self.load_options,
                mixes,
            },
            settings,
        };
        StableDiffusion::assemble(
            &meta,
            models,
            embeddings,
            tokenizer,
            source.name(),
            self.scheduler,
            device,
        )
    }

    /// Mixes in, then builds all three networks once. With `mapped`, the UNet and VAE are
    /// read tensor by tensor from those files and `weights` holds the text encoder's only.
    #[allow(clippy::too_many_arguments)]
    fn resident(
        mut weights: ModelWeights,
        mapped: Option<(MappedSafetensors, MappedSafetensors)>,
        mixes: &[(PathBuf, f64)],
        tokenizer: ClipTokenizer,
        name: String,
        settings: &BuildSettings,
        load_options: &LoadOptions,
        scheduler: Option<SchedulerKind>,
    ) -> Result<StableDiffusion> {
        mix_into(&mut weights, mixes, load_options)?;
        // Each network's tensors are dropped once it is built: the fast CPU layers keep packed
        // copies only, so the read tensors would otherwise double the peak memory.
        let text_encoder = Arc::new(build_text_encoder(&weights, settings)?);
        let branch_text = settings.side_branches.then(|| ModelWeights {
            unet: Default::default(),
            vae: Default::default(),
            ..weights.clone()
        });
        weights.text_encoder.clear();
        let (unet_tensors, vae_tensors) = match mapped {
            Some((unet, vae)) => (TensorStore::Mapped(unet), TensorStore::Mapped(vae)),
            None => (
                TensorStore::read(std::mem::take(&mut weights.unet)),
                TensorStore::read(std::mem::take(&mut weights.vae)),
            ),
        };
        let (denoiser, slots) = if settings.side_branches {
            sd_kernels::side_branch::collect(|| build_unet(unet_tensors, &weights, settings))
        } else {
            (build_unet(unet_tensors, &weights, settings), Vec::new())
        };
        let denoiser = Arc::new(denoiser?);
        let autoencoder = Arc::new(build_vae(vae_tensors, &weights, settings)?);
        end_of_phase();
        let models = Models::Resident(Parts {
            text_encoder: text_encoder.clone(),
            denoiser,
            autoencoder,
        });
        let device = settings.device.clone();
        let embeddings = settings.embeddings.clone();
        let mut sd = StableDiffusion::assemble(
            &weights, models, embeddings, tokenizer, name, scheduler, device,
        )?;
        sd.pending_branches = branch_text.map(|text| PendingBranches {
            slots,
            text: Box::new(text),
            settings: settings.clone(),
            plain_text_encoder: text_encoder,
        });
        Ok(sd)
    }
}

/// `settings` for the model of `weights` (its configs): the embedding `files` read for its
/// text encoder and `tokenizer`'s words, and LDM-named LoRA modules placed in its UNet.
fn settings_for_model(
    settings: &BuildSettings,
    files: &[PathBuf],
    tokenizer: &ClipTokenizer,
    weights: &ModelWeights,
) -> Result<BuildSettings> {
    if let Some(lora) = &settings.lora {
        lora.use_ldm_names_of(&weights.name_table());
    }
    let mut settings = settings.clone();
    settings.embeddings = Arc::new(Embeddings::load(
        files,
        tokenizer,
        &weights.text_encoder_config,
    )?);
    Ok(settings)
}

/// Blends each `(path, scale)` model into `weights`: `a + (b - a) * scale` on every network.
fn mix_into(
    weights: &mut ModelWeights,
    mixes: &[(PathBuf, f64)],
    options: &LoadOptions,
) -> Result<()> {
    for (index, (other, scale)) in mixes.iter().enumerate() {
        let blame =
            |e: crate::checkpoint::Error| Error::mix(index, other.display().to_string(), e.into());
        let b = ModelWeights::open(other, options).map_err(blame)?;
        *weights = merge::weighted_sum(weights, &b, *scale, Components::All).map_err(blame)?;
    }
    Ok(())
}

/// A folder's tokenizer (its own files, else the bundled vocabulary with its pad token); for a
/// single file, the bundled vocabulary padded as the detected family pads.
fn tokenizer_for(path: &std::path::Path, weights: &ModelWeights) -> Result<ClipTokenizer> {
    if path.is_dir() {
        return Ok(ClipTokenizer::for_model_dir(&path.join("tokenizer"))?);
    }
    let padding = match weights.kind.family {
        Family::Sd1 => Padding::Eos,
        Family::Sd2 => Padding::Zero,
    };
    Ok(ClipTokenizer::default().with_padding(padding))
}

/// The LoRA files a pipeline was built with.
struct LoadedLoras {
    stack: Arc<LoraStack>,
    strict: bool,
}

/// A loaded Stable Diffusion 1.x / 2.x model.
pub struct StableDiffusion {
    lora: Option<LoadedLoras>,
    /// LoRAs kept as side branches (see `lora_side_branches`).
    branches: Option<LoraBranches>,
    /// What `build` turns into `branches` once the LoRA files are known.
    pending_branches: Option<PendingBranches>,
    embeddings: Arc<Embeddings>,
    taesd: Option<Arc<Taesd>>,
    tokenizer: ClipTokenizer,
    models: Models,
    scheduler_config: SchedulerConfig,
    default_scheduler: SchedulerKind,
    kind: Option<ModelKind>,
    unet_config: Option<UNet2DConditionConfig>,
    unet_in_channels: usize,
    sample_size: usize,
    device: Device,
    name: String,
}

impl StableDiffusion {
    /// Starts loading the model at `source`: a diffusers folder, a single `.safetensors` /
    /// `.ckpt` file, or a Hub repository id (see [`ModelSource::parse`]).
    pub fn builder(source: impl Into<ModelSource>) -> StableDiffusionBuilder {
        Self::builder_from(Origin::Source(source.into()))
    }

    /// Starts from weights already in memory (after [`merge`], say), with their tokenizer and
    /// the name to write in the images' metadata.
    pub fn builder_from_weights(
        weights: ModelWeights,
        tokenizer: ClipTokenizer,
        name: impl Into<String>,
    ) -> StableDiffusionBuilder {
        Self::builder_from(Origin::Weights {
            weights: Box::new(weights),
            tokenizer: Box::new(tokenizer),
            name: name.into(),
        })
    }

    fn builder_from(origin: Origin) -> StableDiffusionBuilder {
        StableDiffusionBuilder {
            origin,
            settings: BuildSettings {
                dtype: DType::F32,
                device: Device::Cpu,
                attention: AttentionMode::default(),
                vae_tiling: false,
                lora: None,
                side_branches: false,
                embeddings: Arc::default(),
            },
            scheduler: None,
            low_memory: false,
            load_options: LoadOptions::default(),
            mixes: Vec::new(),
            loras: Vec::new(),
            lora_strict: false,
            embedding_files: Vec::new(),
            taesd: None,
            download_progress: false,
        }
    }

    /// The pipeline over `models`, with the configs and kind of `meta`.
    fn assemble(
        meta: &ModelWeights,
        models: Models,
        embeddings: Arc<Embeddings>,
        tokenizer: ClipTokenizer,
        name: String,
        scheduler: Option<SchedulerKind>,
        device: Device,
    ) -> Result<Self> {
        let default_scheduler = match scheduler {
            Some(kind) => kind,
            None => meta.scheduler_config.default_kind()?,
        };
        Ok(Self {
            lora: None,
            branches: None,
            pending_branches: None,
            taesd: None,
            embeddings,
            tokenizer,
            models,
            scheduler_config: meta.scheduler_config.clone(),
            default_scheduler,
            kind: Some(meta.kind),
            unet_config: Some(meta.unet_config.clone()),
            unet_in_channels: meta.unet_config.in_channels,
            sample_size: meta.unet_config.sample_size.unwrap_or(64) * VAE_SCALE,
            device,
            name,
        })
    }

    /// A pipeline over networks of your own (any [`TextEncoder`], [`Denoiser`],
    /// [`Autoencoder`]). `sample_size` is the default image side in pixels.
    pub fn from_parts(
        parts: Parts,
        tokenizer: ClipTokenizer,
        scheduler_config: SchedulerConfig,
        sample_size: usize,
        device: Device,
        name: impl Into<String>,
    ) -> Result<Self> {
        Ok(Self {
            lora: None,
            branches: None,
            pending_branches: None,
            taesd: None,
            embeddings: Arc::default(),
            default_scheduler: scheduler_config.default_kind()?,
            unet_in_channels: parts.denoiser.in_channels(),
            tokenizer,
            models: Models::Resident(parts),
            scheduler_config,
            kind: None,
            unet_config: None,
            sample_size,
            device,
            name: name.into(),
        })
    }

    /// What the model is (None for [`from_parts`](Self::from_parts) pipelines).
    pub fn kind(&self) -> Option<ModelKind> {
        self.kind
    }

    /// The UNet's config (None for [`from_parts`](Self::from_parts) pipelines).
    pub fn unet_config(&self) -> Option<&UNet2DConditionConfig> {
        self.unet_config.as_ref()
    }

    /// The scheduler config every run starts from.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// The sampler used when a request names none.
    pub fn default_scheduler(&self) -> SchedulerKind {
        self.default_scheduler
    }

    /// The default image side in pixels (the UNet's sample size x 8).
    pub fn sample_size(&self) -> usize {
        self.sample_size
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The model's name, as written in the images' metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The LoRA files merged in, by name (file name without extension), with their multipliers.
    pub fn loras(&self) -> Vec<(String, Multipliers)> {
        let Some(lora) = &self.lora else {
            return Vec::new();
        };
        lora.stack
            .files()
            .map(|(file, multipliers)| {
                let stem = file.path().file_stem().unwrap_or_default();
                (stem.to_string_lossy().into_owned(), multipliers)
            })
            .collect()
    }

    /// LoRA modules that found no layer in this model, as `file: network layer` (in low-memory
    /// mode: known after the first generation).
    pub fn lora_unmatched(&self) -> Vec<String> {
        self.lora
            .as_ref()
            .map(|l| l.stack.unmatched())
            .unwrap_or_default()
    }

    /// The textual-inversion embeddings loaded: trigger word and vector count, by name.
    pub fn embeddings(&self) -> Vec<(String, usize)> {
        self.embeddings.names()
    }

    /// In strict mode, an error listing the LoRA modules that found no layer.
    fn check_lora_matches(&self) -> Result<()> {
        let Some(lora) = self.lora.as_ref().filter(|l| l.strict) else {
            return Ok(());
        };
        let unmatched = lora.stack.unmatched();
        if unmatched.is_empty() {
            return Ok(());
        }
        Err(Error::Lora {
            message: format!(
                "{} modules change layers this model does not have: {}",
                unmatched.len(),
                unmatched.join(", ")
            ),
        })
    }

    /// `text` without its `<lora:…>` tags, each checked against the LoRA files loaded; with
    /// side branches, the multipliers each tag asks for are written into `selection` (per
    /// file, in load order).
    fn without_lora_tags(
        &self,
        field: &'static str,
        text: &str,
        selection: &mut [Option<Multipliers>],
    ) -> Result<String> {
        let (text, tags) = sd_prompt::split_lora_tags(text).map_err(Error::Prompt)?;
        let loaded = self.loras();
        for tag in tags {
            let wanted = Multipliers {
                text_encoder: tag.text_encoder,
                unet: tag.unet,
            };
            if self.branches.is_some() {
                let Some(index) = loaded.iter().position(|(name, _)| *name == tag.name) else {
                    let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::request(
                        field,
                        format!(
                            "<lora:{}> names no loaded LoRA (loaded: {})",
                            tag.name,
                            names.join(", ")
                        ),
                    ));
                };
                match selection[index] {
                    Some(other) if other != wanted => {
                        return Err(Error::request(
                            field,
                            format!(
                                "<lora:{}> is asked for twice, at te {} / unet {} and at te {} / unet {}",
                                tag.name, other.text_encoder, other.unet, wanted.text_encoder, wanted.unet
                            ),
                        ))
                    }
                    _ => selection[index] = Some(wanted),
                }
                continue;
            }
            if !loaded
                .iter()
                .any(|(name, m)| *name == tag.name && *m == wanted)
            {
                let have: Vec<String> = loaded
                    .iter()
                    .map(|(n, m)| format!("{n} (te {}, unet {})", m.text_encoder, m.unet))
                    .collect();
                return Err(Error::request(
                    field,
                    format!(
                        "<lora:{}:{}:{}> asks for a LoRA this pipeline was not built with \
                         (LoRAs are merged when the model loads; loaded: {})",
                        tag.name,
                        tag.text_encoder,
                        tag.unet,
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(text)
    }

    /// Tokenizes and encodes the prompts of `request` (its `conditioning` field ignored), as
    /// [`generate`](Self::generate) would: `[uncond; cond]` rows per image when guidance runs
    /// the unconditional pass. Interpolate two of these for a walk between prompts.
    pub fn encode(&self, request: &GenerateRequest) -> Result<Conditioning> {
        request.validate()?;
        let guided = request.guidance.uses_uncond(request.guidance_scale);
        let (prompts, selection) = self.select_loras(request)?;
        self.encode_text(
            request,
            &prompts,
            guided,
            request.batch_size,
            selection.as_ref(),
        )
    }

    /// The prompt and negative prompt without their LoRA tags, and the side-branch selection
    /// the tags ask for, held while the guard lives.
    fn select_loras(
        &self,
        request: &GenerateRequest,
    ) -> Result<((String, String), Option<SelectionGuard<'_>>)> {
        let mut selection = vec![None; self.loras().len()];
        let prompt = self.without_lora_tags("prompt", &request.prompt, &mut selection)?;
        let negative_prompt =
            self.without_lora_tags("negative_prompt", &request.negative_prompt, &mut selection)?;
        // With side branches, the tagged LoRAs apply until this request ends.
        let branches = match &self.branches {
            Some(b) => {
                let wanted: Vec<Multipliers> = selection
                    .iter()
                    .map(|m| m.unwrap_or(Multipliers::both(0.0)))
                    .collect();
                Some(b.select(&wanted)?)
            }
            None => None,
        };
        Ok(((prompt, negative_prompt), branches))
    }

    /// `prompts` (prompt, negative prompt; tags removed) encoded for `request`, with the text
    /// encoder of the side-branch `selection` when there is one, on the pipeline's device.
    fn encode_text(
        &self,
        request: &GenerateRequest,
        (prompt, negative_prompt): &(String, String),
        guided: bool,
        batch: usize,
        selection: Option<&SelectionGuard<'_>>,
    ) -> Result<Conditioning> {
        let text_encoder = match selection {
            Some(selection) => selection.text_encoder(),
            None => self.models.text_encoder()?,
        };
        let conditioning = encode_prompts(
            &self.tokenizer,
            &self.embeddings,
            text_encoder.as_ref(),
            prompt,
            guided.then_some(negative_prompt.as_str()),
            batch,
            request.clip_skip,
            request.emphasis,
        )?;
        Ok(Conditioning {
            context: conditioning.context.to_device(&self.device)?,
            token_weights: conditioning
                .token_weights
                .map(|w| w.to_device(&self.device))
                .transpose()?,
        })
    }

    /// Generates `request.batch_size` images. `callback` sees every step and can cancel the run
    /// by returning `ControlFlow::Break(())` ([`Error::Cancelled`]).
    pub fn generate(
        &self,
        request: &GenerateRequest,
        callback: &mut StepCallback,
    ) -> Result<Generated> {
        request.validate()?;
        let (width, height) = request.size(self.sample_size)?;
        let start_step = request.start_step()?;
        self.check_mode(request)?;
        if request.decoder == LatentDecoder::Taesd {
            self.loaded_taesd()?;
        }
        let sampler = request.scheduler.unwrap_or(self.default_scheduler);
        let scheduler_config = self.run_scheduler_config(request, sampler)?;
        let mut scheduler = sd_scheduler::build(sampler, &scheduler_config, request.steps)
            .map_err(|e| match e {
                // e.g. 1000 steps with "leading" spacing and steps_offset 1 reach timestep 1000.
                sd_scheduler::Error::TimestepOutOfRange { .. } => Error::request(
                    "steps",
                    format!(
                        "{} steps do not fit this model's schedule: {e}",
                        request.steps
                    ),
                ),
                e => e.into(),
            })?;
        let guided = request.guidance.uses_uncond(request.guidance_scale);
        let batch = request.batch_size;
        let mut timings = Timings::default();

        let clock = Instant::now();
        let (prompts, selection) = self.select_loras(request)?;
        let conditioning = match &request.conditioning {
            None => self.encode_text(request, &prompts, guided, batch, selection.as_ref())?,
            Some(given) => {
                let rows = if guided { 2 * batch } else { batch };
                if given.context.dim(0)? != rows {
                    return Err(Error::request(
                        "conditioning",
                        format!(
                            "{} context rows; this request needs {rows} ({})",
                            given.context.dim(0)?,
                            if guided {
                                "uncond and cond per image"
                            } else {
                                "cond per image"
                            }
                        ),
                    ));
                }
                given.clone()
            }
        };
        timings.text_encoding = clock.elapsed();

        let clock = Instant::now();
        let mut rng = TorchRng::new(request.seed);
        let begin = start_step * scheduler.order();
        let latent_shape = [batch, 4, height / VAE_SCALE, width / VAE_SCALE];
        if request.start_noise.is_some() && request.init.is_some() {
            return Err(Error::request(
                "start_noise",
                "only text-to-image starts from given noise (img2img noises its init image)",
            ));
        }
        let (latents, inpainting) = match &request.init {
            None => {
                // The seed's draw is made even when replaced, so later draws stay the seed's.
                let mut noise = rng.randn_tensor(&latent_shape, &self.device, DType::F32)?;
                if let Some(given) = &request.start_noise {
                    if given.dims() != latent_shape {
                        return Err(Error::request(
                            "start_noise",
                            format!(
                                "shape {:?}; this request's latents are {latent_shape:?}",
                                given.dims()
                            ),
                        ));
                    }
                    noise = given.to_dtype(DType::F32)?.to_device(&self.device)?;
                }
                ((noise * scheduler.init_noise_sigma())?, None)
            }
            Some(init) if init.mask.is_none() => {
                let vae = self.models.autoencoder()?;
                let image = image_to_tensor(&init.image, width, height, &self.device)?;
                let x0 = encode_image(vae.as_ref(), &image, &mut rng)?.repeat((batch, 1, 1, 1))?;
                let noise = rng.randn_tensor(&latent_shape, &self.device, DType::F32)?;
                (scheduler.add_noise(&x0, &noise, begin)?, None)
            }
            Some(init) => {
                let (latents, inpainting) = self.prepare_inpainting(
                    init,
                    (width, height),
                    &latent_shape,
                    scheduler.as_ref(),
                    begin,
                    guided,
                    &mut rng,
                )?;
                (latents, Some(inpainting))
            }
        };
        timings.preparing = clock.elapsed();

        let clock = Instant::now();
        let guidance = if guided {
            Guidance::Classifier {
                scale: request.guidance_scale,
            }
        } else {
            Guidance::Conditional
        };
        let mut calls = 0;
        let mut counting = |p: &crate::denoise::StepProgress| {
            calls = p.step;
            callback(p)
        };
        let latents = {
            let denoiser = self.models.denoiser()?;
            denoise(
                denoiser.as_ref(),
                scheduler.as_mut(),
                begin,
                latents,
                &conditioning,
                guidance,
                inpainting.as_ref(),
                &mut rng,
                self.scheduler_config.prediction_type,
                &mut counting,
            )?
        };
        end_of_phase();
        if matches!(self.models, Models::OnDemand { .. }) {
            // Both LoRA targets (text encoder, UNet) have now been built.
            self.check_lora_matches()?;
        }
        timings.denoising = clock.elapsed();
        timings.model_calls = calls;
        Error::check_finite(
            "final latents",
            &latents
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        )?;

        let clock = Instant::now();
        let images = {
            // One pass: its activations never come back, but every convolution asks for the
            // same Winograd buffers (see `DECODE_CACHE`).
            let _limited = CachingAllocator::limited(DECODE_CACHE);
            self.decode_latents_with(&latents, request.decoder)?
        };
        end_of_phase();
        timings.decoding = clock.elapsed();

        let infotexts = (0..images.len())
            .map(|i| {
                let karras = scheduler_config.use_karras_sigmas && supports_karras(sampler);
                self.infotext(request, (sampler, karras), (width, height), i)
            })
            .collect();
        Ok(Generated {
            images,
            infotexts,
            timings,
        })
    }

    /// 8-bit images of `latents` `[B, 4, h, w]` (unscaled, as [`StepProgress`](crate::StepProgress) gives them)
    /// through this model's VAE: the full-quality preview of a step's x0.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Vec<RgbImage>> {
        self.decode_latents_with(latents, LatentDecoder::Vae)
    }

    /// 8-bit images of `latents` `[B, 4, h, w]` (unscaled) through the VAE or TAESD: TAESD's
    /// are the quick previews, of lower quality. TAESD must have been loaded
    /// ([`StableDiffusionBuilder::taesd`]).
    pub fn decode_latents_with(
        &self,
        latents: &Tensor,
        decoder: LatentDecoder,
    ) -> Result<Vec<RgbImage>> {
        if decoder == LatentDecoder::Taesd {
            return self.loaded_taesd()?.decode(latents);
        }
        let vae = self.models.autoencoder()?;
        let scale = Tensor::new(vae.scaling_factor() as f32, &self.device)?;
        let latents = latents.to_device(&self.device)?.broadcast_div(&scale)?;
        tensor_to_images(&vae.decode(&latents)?)
    }

    /// The TAESD loaded with [`StableDiffusionBuilder::taesd`], if any.
    pub fn taesd(&self) -> Option<&Taesd> {
        self.taesd.as_deref()
    }

    fn loaded_taesd(&self) -> Result<&Taesd> {
        self.taesd.as_deref().ok_or_else(|| {
            Error::request(
                "decoder",
                "TAESD was asked for but none is loaded (StableDiffusionBuilder::taesd, --taesd)",
            )
        })
    }

    /// [`generate`](Self::generate) without a callback.
    pub fn generate_simple(&self, request: &GenerateRequest) -> Result<Generated> {
        self.generate(request, &mut |_| ControlFlow::Continue(()))
    }

    fn check_mode(&self, request: &GenerateRequest) -> Result<()> {
        let masked = request.init.as_ref().is_some_and(|i| i.mask.is_some());
        match self.unet_in_channels {
            9 if !masked => Err(Error::request(
                "mask",
                "this is an inpainting model (9 input channels): give an init image and a mask",
            )),
            4 | 9 => Ok(()),
            n => Err(Error::model(
                "unet",
                format!("{n} input channels: a Stable Diffusion UNet takes 4, or 9 for inpainting"),
            )),
        }
    }

    /// diffusers' inpainting preparation: start latents, and the mask inputs of the loop.
    #[allow(clippy::too_many_arguments)]
    fn prepare_inpainting(
        &self,
        init: &ImageInput,
        (width, height): (usize, usize),
        latent_shape: &[usize; 4],
        scheduler: &dyn Scheduler,
        begin: usize,
        guided: bool,
        rng: &mut TorchRng,
    ) -> Result<(Tensor, Inpainting)> {
        let [batch, _, lh, lw] = *latent_shape;
        let vae = self.models.autoencoder()?;
        let image = image_to_tensor(&init.image, width, height, &self.device)?;
        let plain_unet = self.unet_in_channels == 4;
        let full_strength = init.strength == 1.0;
        let image_latents = if plain_unet || !full_strength {
            Some(encode_image(vae.as_ref(), &image, rng)?.repeat((batch, 1, 1, 1))?)
        } else {
            None
        };
        let noise = rng.randn_tensor(latent_shape, &self.device, DType::F32)?;
        let latents = match (&image_latents, full_strength) {
            (Some(x0), false) => scheduler.add_noise(x0, &noise, begin)?,
            _ => (&noise * scheduler.init_noise_sigma())?,
        };
        // The mask is required here: check_mode / the caller route only masked inputs.
        let mask = init
            .mask
            .as_ref()
            .ok_or_else(|| Error::request("mask", "inpainting needs a mask"))?;
        let mask = mask_to_tensor(mask, width, height, &self.device)?;
        let latent_mask = resize_nearest(&mask, lh, lw)?.repeat((batch, 1, 1, 1))?;
        let inpainting = match image_latents {
            Some(image_latents) if plain_unet => {
                // diffusers encodes the masked image for plain UNets too, and never uses it:
                // only its posterior draw is kept, so later draws stay in step.
                rng.randn(&[1, 4, lh, lw]);
                Inpainting::Blend {
                    mask: latent_mask,
                    image_latents,
                    noise,
                }
            }
            _ => {
                let keep = mask.lt(0.5)?.to_dtype(DType::F32)?;
                let masked_image = image.broadcast_mul(&keep)?;
                let masked_latents = encode_image(vae.as_ref(), &masked_image, rng)?;
                let rows = if guided { 2 * batch } else { batch };
                Inpainting::Channels {
                    mask: latent_mask.repeat((rows / batch, 1, 1, 1))?,
                    masked_image_latents: masked_latents.repeat((rows, 1, 1, 1))?,
                }
            }
        };
        Ok((latents, inpainting))
    }

    /// The scheduler config of one run: the model's, with the request's Karras choice.
    fn run_scheduler_config(
        &self,
        request: &GenerateRequest,
        sampler: SchedulerKind,
    ) -> Result<SchedulerConfig> {
        let mut config = self.scheduler_config.clone();
        if let Some(karras) = request.karras {
            if karras && !supports_karras(sampler) {
                return Err(Error::request(
                    "karras",
                    format!(
                        "{sampler} has no Karras schedule (euler, heun, lms, dpm-solver++ and \
                         unipc have)"
                    ),
                ));
            }
            config.use_karras_sigmas = karras;
        }
        Ok(config)
    }

    fn infotext(
        &self,
        request: &GenerateRequest,
        (sampler, karras): (SchedulerKind, bool),
        size: (usize, usize),
        index: usize,
    ) -> Infotext {
        Infotext {
            prompt: request.prompt.clone(),
            negative_prompt: if request.guidance.uses_uncond(request.guidance_scale) {
                request.negative_prompt.clone()
            } else {
                String::new()
            },
            steps: request.steps,
            sampler,
            karras,
            guidance_scale: request.guidance_scale,
            seed: request.seed,
            size,
            model: self.name.clone(),
            vae: (request.decoder == LatentDecoder::Taesd).then(|| "TAESD".to_string()),
            clip_skip: request.clip_skip,
            strength: request.init.as_ref().map(|i| i.strength),
            batch_position: (request.batch_size > 1).then_some((index, request.batch_size)),
        }
    }
}

/// A posterior sample of `image`'s latents times the scaling factor, its noise drawn from `rng`
/// (diffusers' `retrieve_latents(vae.encode(image), generator)` * scaling_factor).
fn encode_image(vae: &dyn Autoencoder, image: &Tensor, rng: &mut TorchRng) -> Result<Tensor> {
    let dist = vae.encode(image)?;
    let noise = rng.randn_tensor(dist.mean().dims(), image.device(), DType::F32)?;
    let sample = dist
        .sample(&noise)
        .map_err(|e| Error::model("vae", e))?
        .to_dtype(DType::F32)?;
    Ok((sample * vae.scaling_factor())?)
}
