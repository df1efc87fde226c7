//! The one renaming table between original (CompVis / LDM) single-file names and diffusers /
//! transformers names, for the UNet, the VAE and both text encoders, usable in both directions.
//!
//! The table is a list of block-level prefix pairs built from the model configs (the UNet's
//! numbering depends on `layers_per_block` and on which blocks have attention), each with a
//! rule for the names below it. It follows the structure of diffusers'
//! `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`
//! and `convert_open_clip_checkpoint` (diffusers 0.42, `loaders/single_file_utils.py`).
//!
//! Diffusers-side text-encoder names are transformers 5's (`encoder.layers.0...`, no
//! `text_model.` prefix), which is what `sd-clip` reads.

use std::collections::HashMap;

use sd_unet::{DownBlockType, UNet2DConditionConfig, UpBlockType};
use sd_vae::AutoencoderKlConfig;

/// Prefix of the UNet in a single file.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE in a single file.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of the SD 1.x (openai CLIP, transformers layout) text encoder.
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// Prefix of the SD 2.x (OpenCLIP) text encoder.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
/// Prefix of the EMA copy of the UNet (LDM's `LitEma`; names lose their dots).
pub const EMA_PREFIX: &str = "model_ema.";

/// The three networks of a Stable Diffusion model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The denoising UNet.
    Unet,
    /// The autoencoder.
    Vae,
    /// The CLIP text encoder.
    TextEncoder,
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
        })
    }
}

/// How the text encoder is laid out in the single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoderLayout {
    /// SD 1.x: transformers' `CLIPTextModel` under `cond_stage_model.transformer.`.
    Clip,
    /// SD 2.x: OpenCLIP under `cond_stage_model.model.`, q/k/v stacked; the first `layers` of
    /// its `in_file` resblocks are used (SD 2.x conditions on the penultimate layer of ViT-H's
    /// 24, so diffusers' text encoder has 23).
    OpenClip {
        /// Resblocks the diffusers text encoder keeps.
        layers: usize,
        /// Resblocks the file holds (the rest are known and ignored).
        in_file: usize,
    },
}

/// Where one single-file tensor goes in diffusers naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDiffusers {
    /// The same tensor under a new name.
    Rename(String),
    /// A 1x1 convolution kernel `[o, i, 1, 1]` that diffusers holds as a linear `[o, i]`.
    ConvToLinear(String),
    /// OpenCLIP's stacked `in_proj` split in three equal parts along dim 0: q, k, v.
    SplitQkv([String; 3]),
    /// A known tensor diffusers does not use (EMA bookkeeping, `position_ids`, OpenCLIP's
    /// `text_projection` and `logit_scale`, the unused last OpenCLIP layer).
    Ignore,
}

/// Where one diffusers tensor goes in the single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToLdm {
    /// The same tensor under a new name.
    Rename(String),
    /// A linear `[o, i]` written as a 1x1 convolution `[o, i, 1, 1]`.
    LinearToConv(String),
    /// Part `index` (0 = q, 1 = k, 2 = v) of OpenCLIP's stacked `in_proj` tensor `name`.
    QkvPart {
        /// The stacked tensor's name.
        name: String,
        /// 0 for q, 1 for k, 2 for v.
        index: usize,
    },
}

/// What the names below a table entry's prefix become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Unchanged below the prefix.
    Same,
    /// The prefix names the whole tensor.
    Exact,
    /// Known, unused: dropped when reading, never written.
    Ignore,
    /// Sub-names mapped by a suffix list (diffusers, LDM).
    Suffixes(&'static [(&'static str, &'static str)]),
    /// VAE mid-block attention: suffix list, and 1x1 convolutions become linears.
    VaeAttention,
    /// One OpenCLIP resblock: suffix list, and q/k/v stacked.
    OpenClipLayer,
}

const UNET_RESNET: &[(&str, &str)] = &[
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
];
const VAE_RESNET: &[(&str, &str)] = &[
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("conv_shortcut", "nin_shortcut"),
];
const VAE_ATTENTION: &[(&str, &str)] = &[
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
];
const OPEN_CLIP_LAYER: &[(&str, &str)] = &[
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
];
const QKV: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

#[derive(Debug, Clone)]
struct Entry {
    component: Component,
    ldm: String,
    diffusers: String,
    rule: Rule,
}

/// The renaming table of one model (UNet + VAE + text encoder), both directions.
#[derive(Debug, Clone)]
pub struct NameTable {
    entries: Vec<Entry>,
    by_ldm: HashMap<String, usize>,
    by_diffusers: HashMap<(Component, String), usize>,
}

impl NameTable {
    /// The table for a model with these UNet and VAE configs and this text-encoder layout.
    pub fn new(
        unet: &UNet2DConditionConfig,
        vae: &AutoencoderKlConfig,
        text: TextEncoderLayout,
    ) -> Self {
        let mut table = Self {
            entries: Vec::new(),
            by_ldm: HashMap::new(),
            by_diffusers: HashMap::new(),
        };
        table.add_unet(unet);
        table.add_vae(vae);
        match text {
            TextEncoderLayout::Clip => table.add_clip(),
            TextEncoderLayout::OpenClip { layers, in_file } => table.add_open_clip(layers, in_file),
        }
        table
    }

    fn push(&mut self, component: Component, ldm: String, diffusers: String, rule: Rule) {
        let index = self.entries.len();
        self.by_ldm.insert(ldm.clone(), index);
        if !matches!(rule, Rule::Ignore) {
            self.by_diffusers
                .insert((component, diffusers.clone()), index);
        }
        self.entries.push(Entry {
            component,
            ldm,
            diffusers,
            rule,
        });
    }

    /// An extra single-file spelling that reads like entry `index` but is never written.
    fn alias(&mut self, ldm: String, index: usize) {
        self.by_ldm.insert(ldm, index);
    }

    fn add_unet(&mut self, config: &UNet2DConditionConfig) {
        let u = |s: &str| format!("{UNET_PREFIX}{s}");
        let mut add = |ldm: String, diffusers: String, rule| {
            self.push(Component::Unet, u(&ldm), diffusers, rule)
        };
        for (ldm, diffusers) in [
            ("time_embed.0", "time_embedding.linear_1"),
            ("time_embed.2", "time_embedding.linear_2"),
            ("input_blocks.0.0", "conv_in"),
            ("out.0", "conv_norm_out"),
            ("out.2", "conv_out"),
            ("middle_block.1", "mid_block.attentions.0"),
        ] {
            add(ldm.into(), diffusers.into(), Rule::Same);
        }
        add(
            "middle_block.0".into(),
            "mid_block.resnets.0".into(),
            Rule::Suffixes(UNET_RESNET),
        );
        add(
            "middle_block.2".into(),
            "mid_block.resnets.1".into(),
            Rule::Suffixes(UNET_RESNET),
        );
        let blocks = config.block_out_channels.len();
        let per = config.layers_per_block;
        for (b, kind) in config.down_block_types.iter().enumerate().take(blocks) {
            for l in 0..per {
                let i = 1 + b * (per + 1) + l;
                add(
                    format!("input_blocks.{i}.0"),
                    format!("down_blocks.{b}.resnets.{l}"),
                    Rule::Suffixes(UNET_RESNET),
                );
                if *kind == DownBlockType::CrossAttnDownBlock2D {
                    add(
                        format!("input_blocks.{i}.1"),
                        format!("down_blocks.{b}.attentions.{l}"),
                        Rule::Same,
                    );
                }
            }
            if b + 1 < blocks {
                let i = 1 + b * (per + 1) + per;
                add(
                    format!("input_blocks.{i}.0.op"),
                    format!("down_blocks.{b}.downsamplers.0.conv"),
                    Rule::Same,
                );
            }
        }
        for (b, kind) in config.up_block_types.iter().enumerate().take(blocks) {
            let attention = *kind == UpBlockType::CrossAttnUpBlock2D;
            for l in 0..=per {
                let i = b * (per + 1) + l;
                add(
                    format!("output_blocks.{i}.0"),
                    format!("up_blocks.{b}.resnets.{l}"),
                    Rule::Suffixes(UNET_RESNET),
                );
                if attention {
                    add(
                        format!("output_blocks.{i}.1"),
                        format!("up_blocks.{b}.attentions.{l}"),
                        Rule::Same,
                    );
                }
            }
            if b + 1 < blocks {
                // The upsampler follows the last resnet (and its transformer, when there is one).
                let i = b * (per + 1) + per;
                let slot = if attention { 2 } else { 1 };
                add(
                    format!("output_blocks.{i}.{slot}.conv"),
                    format!("up_blocks.{b}.upsamplers.0.conv"),
                    Rule::Same,
                );
            }
        }
    }

    fn add_vae(&mut self, config: &AutoencoderKlConfig) {
        let v = |s: &str| format!("{VAE_PREFIX}{s}");
        let mut add =
            |ldm: &str, diffusers: String, rule| self.push(Component::Vae, v(ldm), diffusers, rule);
        for (ldm, diffusers) in [
            ("encoder.conv_in", "encoder.conv_in"),
            ("encoder.conv_out", "encoder.conv_out"),
            ("encoder.norm_out", "encoder.conv_norm_out"),
            ("decoder.conv_in", "decoder.conv_in"),
            ("decoder.conv_out", "decoder.conv_out"),
            ("decoder.norm_out", "decoder.conv_norm_out"),
            ("quant_conv", "quant_conv"),
            ("post_quant_conv", "post_quant_conv"),
        ] {
            add(ldm, diffusers.into(), Rule::Same);
        }
        for side in ["encoder", "decoder"] {
            for (n, d) in [(1, 0), (2, 1)] {
                add(
                    &format!("{side}.mid.block_{n}"),
                    format!("{side}.mid_block.resnets.{d}"),
                    Rule::Suffixes(VAE_RESNET),
                );
            }
            add(
                &format!("{side}.mid.attn_1"),
                format!("{side}.mid_block.attentions.0"),
                Rule::VaeAttention,
            );
        }
        let blocks = config.block_out_channels.len();
        for i in 0..blocks {
            // The decoder's LDM blocks are numbered from the innermost, diffusers' from the outermost.
            let j = blocks - 1 - i;
            for l in 0..config.layers_per_block + 1 {
                if l < config.layers_per_block {
                    add(
                        &format!("encoder.down.{i}.block.{l}"),
                        format!("encoder.down_blocks.{i}.resnets.{l}"),
                        Rule::Suffixes(VAE_RESNET),
                    );
                }
                add(
                    &format!("decoder.up.{j}.block.{l}"),
                    format!("decoder.up_blocks.{i}.resnets.{l}"),
                    Rule::Suffixes(VAE_RESNET),
                );
            }
            if i + 1 < blocks {
                add(
                    &format!("encoder.down.{i}.downsample.conv"),
                    format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                    Rule::Same,
                );
                add(
                    &format!("decoder.up.{j}.upsample.conv"),
                    format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                    Rule::Same,
                );
            }
        }
    }

    fn add_clip(&mut self) {
        for part in ["embeddings", "encoder", "final_layer_norm"] {
            let index = self.entries.len();
            self.push(
                Component::TextEncoder,
                format!("{CLIP_PREFIX}text_model.{part}"),
                part.into(),
                Rule::Same,
            );
            // transformers < 4.?? saved CLIPTextModel without the `text_model.` level.
            self.alias(format!("{CLIP_PREFIX}{part}"), index);
        }
        for ids in [
            "text_model.embeddings.position_ids",
            "embeddings.position_ids",
        ] {
            self.push(
                Component::TextEncoder,
                format!("{CLIP_PREFIX}{ids}"),
                String::new(),
                Rule::Ignore,
            );
        }
    }

    fn add_open_clip(&mut self, layers: usize, in_file: usize) {
        let o = |s: &str| format!("{OPEN_CLIP_PREFIX}{s}");
        let mut add = |ldm: &str, diffusers: &str, rule| {
            self.push(Component::TextEncoder, o(ldm), diffusers.into(), rule)
        };
        add("token_embedding", "embeddings.token_embedding", Rule::Same);
        add(
            "positional_embedding",
            "embeddings.position_embedding.weight",
            Rule::Exact,
        );
        add("ln_final", "final_layer_norm", Rule::Same);
        add("text_projection", "", Rule::Ignore);
        add("logit_scale", "", Rule::Ignore);
        for i in 0..layers {
            add(
                &format!("transformer.resblocks.{i}"),
                &format!("encoder.layers.{i}"),
                Rule::OpenClipLayer,
            );
        }
        // SD 2.x conditions on the penultimate layer: the resblocks after `layers` are unused.
        for i in layers..in_file {
            add(&format!("transformer.resblocks.{i}"), "", Rule::Ignore);
        }
    }

    /// Where single-file tensor `ldm` goes, and in which network; `None` for a name this model
    /// does not have (an unknown key).
    pub fn to_diffusers(&self, ldm: &str) -> Option<(Component, ToDiffusers)> {
        let (index, rest) = longest_prefix(ldm, |p| self.by_ldm.get(p).copied())?;
        let entry = &self.entries[index];
        let join = |sub: &str| join(&entry.diffusers, sub);
        let target = match entry.rule {
            Rule::Ignore => ToDiffusers::Ignore,
            Rule::Exact if rest.is_empty() => ToDiffusers::Rename(entry.diffusers.clone()),
            Rule::Exact => return None,
            _ if rest.is_empty() => return None,
            Rule::Same => ToDiffusers::Rename(join(rest)),
            Rule::Suffixes(list) => ToDiffusers::Rename(join(&swap(rest, list, false)?)),
            Rule::VaeAttention => {
                let name = join(&swap(rest, VAE_ATTENTION, false)?);
                if rest.ends_with(".weight") && !rest.starts_with("norm.") {
                    ToDiffusers::ConvToLinear(name)
                } else {
                    ToDiffusers::Rename(name)
                }
            }
            Rule::OpenClipLayer => match rest {
                "attn.in_proj_weight" | "attn.in_proj_bias" => {
                    let kind = if rest.ends_with("weight") {
                        "weight"
                    } else {
                        "bias"
                    };
                    ToDiffusers::SplitQkv(QKV.map(|p| join(&format!("self_attn.{p}.{kind}"))))
                }
                _ => ToDiffusers::Rename(join(&swap(rest, OPEN_CLIP_LAYER, false)?)),
            },
        };
        Some((entry.component, target))
    }

    /// The diffusers path of a UNet module named in LDM terms with every `.` written as `_`,
    /// as some LoRA files name layers (`input_blocks_4_1_proj_in` →
    /// `down_blocks_1_attentions_0_proj_in`, `input_blocks_1_0_in_layers_2` →
    /// `down_blocks_0_resnets_0_conv1`); `None` when no UNet entry of this model starts it.
    pub fn unet_module_from_ldm_underscored(&self, path: &str) -> Option<String> {
        let underscored = |s: &str| s.replace('.', "_");
        let mut best: Option<(&Entry, &str)> = None;
        for entry in self
            .entries
            .iter()
            .filter(|e| e.component == Component::Unet)
        {
            let ldm = underscored(entry.ldm.strip_prefix(UNET_PREFIX).unwrap_or(&entry.ldm));
            let rest = match path.strip_prefix(ldm.as_str()) {
                Some("") => "",
                Some(r) if r.starts_with('_') => &r[1..],
                _ => continue,
            };
            let longer = best.is_none_or(|(b, _)| b.ldm.len() < entry.ldm.len());
            if longer {
                best = Some((entry, rest));
            }
        }
        let (entry, rest) = best?;
        let diffusers = underscored(&entry.diffusers);
        match entry.rule {
            Rule::Exact | Rule::Same if rest.is_empty() => Some(diffusers),
            Rule::Same => Some(format!("{diffusers}_{rest}")),
            Rule::Suffixes(list) => list
                .iter()
                .find(|(_, ldm)| underscored(ldm) == rest)
                .map(|(d, _)| format!("{diffusers}_{}", underscored(d))),
            _ => None,
        }
    }

    /// Where diffusers tensor `name` of `component` goes in a single file; `None` when the
    /// table has no place for it.
    pub fn to_ldm(&self, component: Component, name: &str) -> Option<ToLdm> {
        let (index, rest) = longest_prefix(name, |p| {
            self.by_diffusers.get(&(component, p.to_string())).copied()
        })?;
        let entry = &self.entries[index];
        let join = |sub: &str| join(&entry.ldm, sub);
        Some(match entry.rule {
            Rule::Ignore => return None,
            Rule::Exact if rest.is_empty() => ToLdm::Rename(entry.ldm.clone()),
            Rule::Exact => return None,
            _ if rest.is_empty() => return None,
            Rule::Same => ToLdm::Rename(join(rest)),
            Rule::Suffixes(list) => ToLdm::Rename(join(&swap(rest, list, true)?)),
            Rule::VaeAttention => {
                let ldm = join(&swap(rest, VAE_ATTENTION, true)?);
                if rest.ends_with(".weight") && !rest.starts_with("group_norm.") {
                    ToLdm::LinearToConv(ldm)
                } else {
                    ToLdm::Rename(ldm)
                }
            }
            Rule::OpenClipLayer => {
                let qkv = rest
                    .strip_prefix("self_attn.")
                    .and_then(|r| r.split_once('.'))
                    .and_then(|(p, kind)| Some((QKV.iter().position(|q| *q == p)?, kind)));
                match qkv {
                    Some((index, kind @ ("weight" | "bias"))) => ToLdm::QkvPart {
                        name: join(&format!("attn.in_proj_{kind}")),
                        index,
                    },
                    Some(_) => return None,
                    None => ToLdm::Rename(join(&swap(rest, OPEN_CLIP_LAYER, true)?)),
                }
            }
        })
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

/// The entry for the longest dot-bounded prefix of `key` (the whole key first), and the rest.
fn longest_prefix(key: &str, find: impl Fn(&str) -> Option<usize>) -> Option<(usize, &str)> {
    if let Some(index) = find(key) {
        return Some((index, ""));
    }
    key.rmatch_indices('.')
        .find_map(|(pos, _)| find(&key[..pos]).map(|index| (index, &key[pos + 1..])))
}

/// Renames the leading part of `rest` by `list` (diffusers, LDM); `to_ldm` picks the direction.
fn swap(rest: &str, list: &[(&str, &str)], to_ldm: bool) -> Option<String> {
    list.iter().find_map(|(diffusers, ldm)| {
        let (from, to) = if to_ldm {
            (diffusers, ldm)
        } else {
            (ldm, diffusers)
        };
        rest.strip_prefix(from)
            .and_then(|tail| tail.strip_prefix('.'))
            .map(|tail| format!("{to}.{tail}"))
    })
}
