//! Weight names: the two on-disk layouts, the list of tensors a config needs, checked loading.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::{ClipTextConfig, Error, Result};

/// The prefix transformers 4 put before every text-encoder key.
pub(crate) const TRANSFORMERS4_PREFIX: &str = "text_model";

/// A tensor every layout has, used to tell the layouts apart.
const PROBE: &str = "embeddings.token_embedding.weight";

/// How the text encoder's keys are named in a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `text_model.embeddings...`: transformers 4, i.e. every SD repository on the hub.
    Transformers4,
    /// `embeddings...`: what transformers 5 `save_pretrained` writes.
    Transformers5,
}

impl WeightLayout {
    /// Reads the layout from `vb` (at its current prefix): transformers 4 when
    /// `text_model.embeddings.token_embedding.weight` is there, else transformers 5.
    pub fn detect(vb: &VarBuilder) -> Self {
        if vb.contains_tensor(&format!("{TRANSFORMERS4_PREFIX}.{PROBE}")) {
            Self::Transformers4
        } else {
            Self::Transformers5
        }
    }

    /// The key prefix of this layout, `"text_model."` or `""`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Transformers4 => "text_model.",
            Self::Transformers5 => "",
        }
    }
}

/// Every tensor the model reads for `config`, with its shape, in transformers 5 naming (no
/// prefix). Useful to check a file, or to make random weights of the right shapes.
pub fn expected_tensors(config: &ClipTextConfig) -> Vec<(String, Vec<usize>)> {
    let (c, inner) = (config.hidden_size, config.intermediate_size);
    let mut tensors = vec![
        (
            "embeddings.token_embedding.weight".to_owned(),
            vec![config.vocab_size, c],
        ),
        (
            "embeddings.position_embedding.weight".to_owned(),
            vec![config.max_position_embeddings, c],
        ),
    ];
    for i in 0..config.num_hidden_layers {
        let layer = format!("encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            tensors.push((format!("{layer}.self_attn.{proj}.weight"), vec![c, c]));
            tensors.push((format!("{layer}.self_attn.{proj}.bias"), vec![c]));
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            tensors.push((format!("{layer}.{norm}.weight"), vec![c]));
            tensors.push((format!("{layer}.{norm}.bias"), vec![c]));
        }
        tensors.push((format!("{layer}.mlp.fc1.weight"), vec![inner, c]));
        tensors.push((format!("{layer}.mlp.fc1.bias"), vec![inner]));
        tensors.push((format!("{layer}.mlp.fc2.weight"), vec![c, inner]));
        tensors.push((format!("{layer}.mlp.fc2.bias"), vec![c]));
    }
    tensors.push(("final_layer_norm.weight".to_owned(), vec![c]));
    tensors.push(("final_layer_norm.bias".to_owned(), vec![c]));
    tensors
}

/// Opens `paths`, checks every tensor `config` needs against the file headers, and returns a
/// `VarBuilder` over the memory-mapped files.
pub(crate) fn checked_var_builder<'a, P: AsRef<Path>>(
    config: &ClipTextConfig,
    paths: &[P],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'a>> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_owned()).collect();
    let files = paths
        .iter()
        .map(|path| {
            // SAFETY: the file is mapped read-only; like every mmap-based loader (candle's,
            // safetensors'), we rely on nobody truncating it while the model is being built.
            unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::weights_file(path, e))
        })
        .collect::<Result<Vec<_>>>()?;

    let transformers4 = format!("{TRANSFORMERS4_PREFIX}.{PROBE}");
    let layout = if files.iter().any(|f| f.get(&transformers4).is_ok()) {
        WeightLayout::Transformers4
    } else {
        WeightLayout::Transformers5
    };
    for (name, shape) in expected_tensors(config) {
        let name = format!("{}{name}", layout.prefix());
        let found = files
            .iter()
            .zip(&paths)
            .find_map(|(file, path)| file.get(&name).ok().map(|view| (view, path)));
        let Some((view, path)) = found else {
            return Err(Error::MissingTensor {
                name,
                files: paths.clone(),
            });
        };
        if view.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name,
                file: path.clone(),
                expected: shape,
                got: view.shape().to_vec(),
            });
        }
        let float = matches!(
            DType::try_from(view.dtype()),
            Ok(DType::F64 | DType::F32 | DType::F16 | DType::BF16)
        );
        if !float {
            return Err(Error::UnsupportedDtype {
                name,
                file: path.clone(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
    }
    drop(files);

    // SAFETY: as above.
    let tensors = unsafe { MmapedSafetensors::multi(&paths) }
        .map_err(|e| Error::weights_file(paths.first().map_or(Path::new(""), |p| p), e))?;
    Ok(VarBuilder::from_backend(
        Box::new(tensors),
        dtype,
        device.clone(),
    ))
}
