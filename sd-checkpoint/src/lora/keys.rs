//! How a LoRA file's tensor names say which layer they change and what part they are.
//!
//! Every naming style in use reduces to one module key: the layer's diffusers path with `.`
//! written as `_` (kohya-ss's own form), in the network's own naming (the text encoder without
//! its `text_model.` prefix). So `lora_unet_down_blocks_0_attentions_0_proj_in` (kohya),
//! `unet.down_blocks.0.attentions.0.proj_in.lora_A.weight` (PEFT) and
//! `down_blocks.0.attentions.0.processor.to_q_lora.down.weight` (diffusers' old attention
//! processors) all land on the key of the tensor `<path>.weight` the model loads.

use crate::ldm_names::Component;

/// What one tensor of a LoRA module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// LoRA's down projection (kohya `lora_down`, PEFT `lora_A`): `[rank, in, (k, k)]`.
    Down,
    /// LoRA's up projection (kohya `lora_up`, PEFT `lora_B`): `[out, rank, (1, 1)]`.
    Up,
    /// kohya's CP middle factor `lora_mid`: `[rank, rank, k, k]`.
    Mid,
    /// The scale numerator: the change is scaled by `alpha / rank`.
    Alpha,
    /// LoHa `hada_w1_a`.
    HadaW1A,
    /// LoHa `hada_w1_b`.
    HadaW1B,
    /// LoHa `hada_w2_a`.
    HadaW2A,
    /// LoHa `hada_w2_b`.
    HadaW2B,
    /// LoHa Tucker core `hada_t1`.
    HadaT1,
    /// LoHa Tucker core `hada_t2`.
    HadaT2,
    /// LoKr full left factor `lokr_w1`.
    LokrW1,
    /// LoKr `lokr_w1_a`.
    LokrW1A,
    /// LoKr `lokr_w1_b`.
    LokrW1B,
    /// LoKr full right factor `lokr_w2`.
    LokrW2,
    /// LoKr `lokr_w2_a`.
    LokrW2A,
    /// LoKr `lokr_w2_b`.
    LokrW2B,
    /// LoKr Tucker core `lokr_t2`.
    LokrT2,
}

/// Name endings and the role they give, longest first where one ends another.
const ENDINGS: &[(&str, Role)] = &[
    (".lora_down.weight", Role::Down),
    (".lora_up.weight", Role::Up),
    (".lora_mid.weight", Role::Mid),
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".lora_A.default.weight", Role::Down),
    (".lora_B.default.weight", Role::Up),
    (".lora.down.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    ("_lora.down.weight", Role::Down),
    ("_lora.up.weight", Role::Up),
    (".alpha", Role::Alpha),
    (".hada_w1_a", Role::HadaW1A),
    (".hada_w1_b", Role::HadaW1B),
    (".hada_w2_a", Role::HadaW2A),
    (".hada_w2_b", Role::HadaW2B),
    (".hada_t1", Role::HadaT1),
    (".hada_t2", Role::HadaT2),
    (".lokr_w1", Role::LokrW1),
    (".lokr_w1_a", Role::LokrW1A),
    (".lokr_w1_b", Role::LokrW1B),
    (".lokr_w2", Role::LokrW2),
    (".lokr_w2_a", Role::LokrW2A),
    (".lokr_w2_b", Role::LokrW2B),
    (".lokr_t2", Role::LokrT2),
];

/// The naming convention a tensor name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyStyle {
    /// kohya-ss sd-scripts / LyCORIS: `lora_unet_…`, `lora_te_…`, underscores.
    Kohya,
    /// diffusers / PEFT: dotted paths under `unet.` / `text_encoder.`.
    Diffusers,
    /// diffusers' old attention-processor names (`processor.to_q_lora.down`), UNet only.
    AttnProcessor,
}

impl std::fmt::Display for KeyStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyStyle::Kohya => "kohya-ss",
            KeyStyle::Diffusers => "diffusers/PEFT",
            KeyStyle::AttnProcessor => "diffusers attention processor",
        })
    }
}

/// Which layer a tensor belongs to: the network and the module key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleKey {
    /// The network the layer is in (the UNet or the text encoder).
    pub network: Component,
    /// The layer's path in that network's diffusers naming, `.` written as `_`.
    pub path: String,
}

/// A LoRA tensor name, understood: its layer, its role, its naming style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// The layer.
    pub module: ModuleKey,
    /// What the tensor is.
    pub role: Role,
    /// The naming convention.
    pub style: KeyStyle,
}

/// Reads tensor name `name`; `None` for a name that is no part of a known LoRA module.
pub fn parse(name: &str) -> Option<ParsedKey> {
    let (stem, role) = ENDINGS
        .iter()
        .filter_map(|(end, role)| name.strip_suffix(end).map(|stem| (stem, *role)))
        .next()?;
    if let Some(path) = stem.strip_prefix("lora_unet_") {
        return Some(key(
            Component::Unet,
            path.to_string(),
            role,
            KeyStyle::Kohya,
        ));
    }
    if let Some(path) = stem.strip_prefix("lora_te_") {
        let path = path.strip_prefix("text_model_").unwrap_or(path);
        return Some(key(
            Component::TextEncoder,
            path.to_string(),
            role,
            KeyStyle::Kohya,
        ));
    }
    if stem.starts_with("lora_") {
        // lora_te1_ / lora_te2_ (SDXL's two text encoders) and other networks SD 1.x / 2.x lack.
        return None;
    }
    if let Some((before, layer)) = stem.rsplit_once(".processor.") {
        // `attn1.processor.to_q_lora.down.weight`: the old processors name q / k / v / out.
        let layer = match layer {
            "to_q" | "to_k" | "to_v" => layer.to_string(),
            "to_out" => "to_out.0".to_string(),
            _ => return None,
        };
        let path = underscored(before.strip_prefix("unet.").unwrap_or(before))
            + "_"
            + &underscored(&layer);
        return Some(key(Component::Unet, path, role, KeyStyle::AttnProcessor));
    }
    if name.ends_with("_lora.down.weight") || name.ends_with("_lora.up.weight") {
        return None;
    }
    let (network, path) = if let Some(path) = stem.strip_prefix("text_encoder.") {
        let path = path.strip_prefix("text_model.").unwrap_or(path);
        (Component::TextEncoder, path)
    } else {
        (Component::Unet, stem.strip_prefix("unet.").unwrap_or(stem))
    };
    Some(key(network, underscored(path), role, KeyStyle::Diffusers))
}

/// The module key of a model's weight tensor `name` (`None` unless it ends in `.weight`).
pub fn weight_key(network: Component, name: &str) -> Option<ModuleKey> {
    Some(ModuleKey {
        network,
        path: underscored(name.strip_suffix(".weight")?),
    })
}

fn underscored(path: &str) -> String {
    path.replace('.', "_")
}

fn key(network: Component, path: String, role: Role, style: KeyStyle) -> ParsedKey {
    ParsedKey {
        module: ModuleKey { network, path },
        role,
        style,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str) -> (Component, String, Role, KeyStyle) {
        let p = parse(name).unwrap_or_else(|| panic!("{name} not parsed"));
        (p.module.network, p.module.path, p.role, p.style)
    }

    #[test]
    fn every_style_names_the_same_layer() {
        let unet_q = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q".to_string();
        for name in [
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
        ] {
            let (network, path, role, _) = module(name);
            assert_eq!(
                (network, path.as_str(), role),
                (Component::Unet, unet_q.as_str(), Role::Down),
                "{name}"
            );
        }
        let te = "encoder_layers_3_self_attn_q_proj";
        for name in [
            "lora_te_text_model_encoder_layers_3_self_attn_q_proj.lora_up.weight",
            "text_encoder.text_model.encoder.layers.3.self_attn.q_proj.lora_B.weight",
        ] {
            let (network, path, role, _) = module(name);
            assert_eq!(
                (network, path.as_str(), role),
                (Component::TextEncoder, te, Role::Up),
                "{name}"
            );
        }
        let w = weight_key(
            Component::TextEncoder,
            "encoder.layers.3.self_attn.q_proj.weight",
        );
        assert_eq!(w.map(|k| k.path), Some(te.to_string()));
    }

    #[test]
    fn processors_name_the_output_projection_to_out_0() {
        let (_, path, role, style) = module(
            "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight",
        );
        assert_eq!(
            path,
            "mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
        );
        assert_eq!((role, style), (Role::Up, KeyStyle::AttnProcessor));
    }

    #[test]
    fn lycoris_roles_and_foreign_networks() {
        assert_eq!(module("lora_unet_conv_in.hada_w1_a").2, Role::HadaW1A);
        assert_eq!(module("lora_unet_conv_in.lokr_w2_b").2, Role::LokrW2B);
        assert_eq!(module("lora_unet_conv_in.lokr_w2").2, Role::LokrW2);
        assert_eq!(module("lora_unet_conv_in.alpha").2, Role::Alpha);
        assert!(parse("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight").is_none());
        assert!(parse("lora_unet_conv_in.dora_scale").is_none());
        assert!(parse("string_to_param.*").is_none());
    }
}
