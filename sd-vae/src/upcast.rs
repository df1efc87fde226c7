//! The f16 overflow fallback: when a half-precision pass produces inf or NaN (the "black image"
//! of f16 VAEs), the same pass is run again with f32 weights and activations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::autoencoder::{DecodePath, EncodePath};
use crate::config::AutoencoderKlConfig;
use crate::error::Result;

/// f32 copies of the two halves of the model, built the first time an overflow needs them and
/// kept afterwards (an SD 1.5 decoder is about 200 MB in f32).
pub(crate) struct F32Fallback {
    source: VarBuilder<'static>,
    encode: OnceLock<EncodePath>,
    decode: OnceLock<DecodePath>,
}

impl F32Fallback {
    /// `source` must yield the model's weights; it is read as f32.
    pub(crate) fn new(source: VarBuilder<'static>) -> Self {
        Self {
            source: source.set_dtype(DType::F32),
            encode: OnceLock::new(),
            decode: OnceLock::new(),
        }
    }

    pub(crate) fn encode_path(&self, config: &AutoencoderKlConfig) -> Result<&EncodePath> {
        if let Some(path) = self.encode.get() {
            return Ok(path);
        }
        let path = EncodePath::new(config, self.source.clone())?;
        Ok(self.encode.get_or_init(|| path))
    }

    pub(crate) fn decode_path(&self, config: &AutoencoderKlConfig) -> Result<&DecodePath> {
        if let Some(path) = self.decode.get() {
            return Ok(path);
        }
        let path = DecodePath::new(config, self.source.clone())?;
        Ok(self.decode.get_or_init(|| path))
    }
}

/// True when no element is inf or NaN: 0 * x is 0 for finite x and NaN otherwise, and one NaN
/// makes the sum NaN.
pub(crate) fn all_finite(x: &Tensor) -> Result<bool> {
    let x = x.to_dtype(DType::F32)?;
    let s = (x * 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(s.is_finite())
}

/// A pass-through backend that keeps every tensor handed out, so that a model built from a
/// caller's `VarBuilder` can later be rebuilt from the very same (already loaded) weights in f32.
/// The kept tensors share storage with the model's: no extra memory until an upcast happens.
pub(crate) struct Recorder<'a> {
    inner: VarBuilder<'a>,
    seen: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl<'a> Recorder<'a> {
    /// Wraps `inner`; the returned map fills as the model is built from the returned builder.
    pub(crate) fn wrap(
        inner: VarBuilder<'a>,
    ) -> (VarBuilder<'a>, Arc<Mutex<HashMap<String, Tensor>>>) {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let dtype = inner.dtype();
        let device = inner.device().clone();
        let recorder = Recorder {
            inner,
            seen: seen.clone(),
        };
        (
            VarBuilder::from_backend(Box::new(recorder), dtype, device),
            seen,
        )
    }

    fn keep(&self, name: &str, t: candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        let t = t?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }
}

impl SimpleBackend for Recorder<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        _: &Device,
    ) -> candle_core::Result<Tensor> {
        self.keep(name, self.inner.get_with_hints_dtype(s, name, h, dtype))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        self.keep(name, self.inner.get_unchecked_dtype(name, dtype))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
