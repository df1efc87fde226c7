//! Model mixing on named tensors, before any model is built.
//!
//! Weighted sum: `a + (b - a) * scale` per tensor (scale 0 is `a`, 1 is `b`; values outside
//! [0, 1] extrapolate). Add difference: `a + (b - c) * scale`, which moves `a` by what
//! fine-tuning `c` into `b` learned. Both compute in f32 and store the result in `a`'s dtype;
//! integer tensors (none in SD weights) are copied from `a`.

use candle_core::{DType, Tensor};

use super::ldm_names::Component;
use super::{ModelWeights, NamedTensors};
use crate::error::{Error, Result};

/// Which networks a merge blends; the others are taken from the first model unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Components {
    /// Only the UNet (the usual choice: text encoders and VAEs rarely differ usefully).
    UnetOnly,
    /// UNet, VAE and text encoder.
    #[default]
    All,
}

impl Components {
    fn includes(self, component: Component) -> bool {
        self == Components::All || component == Component::Unet
    }
}

/// `a + (b - a) * scale` for every network `components` selects; configs and kind from `a`.
pub fn weighted_sum(
    a: &ModelWeights,
    b: &ModelWeights,
    scale: f64,
    components: Components,
) -> Result<ModelWeights> {
    combine(a, b, None, scale, components)
}

/// `a + (b - c) * scale` for every network `components` selects; configs and kind from `a`.
pub fn add_difference(
    a: &ModelWeights,
    b: &ModelWeights,
    c: &ModelWeights,
    scale: f64,
    components: Components,
) -> Result<ModelWeights> {
    combine(a, b, Some(c), scale, components)
}

fn combine(
    a: &ModelWeights,
    b: &ModelWeights,
    c: Option<&ModelWeights>,
    scale: f64,
    components: Components,
) -> Result<ModelWeights> {
    let mut out = a.clone();
    for component in [Component::Unet, Component::Vae, Component::TextEncoder] {
        if components.includes(component) {
            let blended = blend(
                component,
                a.component(component),
                b.component(component),
                c.map(|c| c.component(component)),
                scale,
            )?;
            *out.component_mut(component) = blended;
        }
    }
    Ok(out)
}

/// Blends one network's tensors: `a + (b - base) * scale` where `base` is `c` when given,
/// else `a`. Every tensor of `a` must be in `b` (and `c`) with the same shape, and the other
/// way round.
pub fn blend(
    component: Component,
    a: &NamedTensors,
    b: &NamedTensors,
    c: Option<&NamedTensors>,
    scale: f64,
) -> Result<NamedTensors> {
    let others: Vec<(&str, &NamedTensors)> = std::iter::once(("second", b))
        .chain(c.map(|c| ("third", c)))
        .collect();
    for (which, other) in &others {
        if let Some(extra) = other.keys().filter(|k| !a.contains_key(*k)).min() {
            return Err(Error::Merge(format!(
                "{component} tensor {extra} is in the {which} model but not the first"
            )));
        }
    }
    let mut out = NamedTensors::with_capacity(a.len());
    // Sorted, so a mismatch is always reported on the same (first) tensor.
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    for name in names {
        let ta = &a[name];
        let get = |which: &str, m: &NamedTensors| -> Result<Tensor> {
            let t = m.get(name).ok_or_else(|| {
                Error::Merge(format!(
                    "{component} tensor {name} is missing from the {which} model"
                ))
            })?;
            if t.dims() != ta.dims() {
                return Err(Error::Merge(format!(
                    "{component} tensor {name} has shape {:?} in the first model and {:?} in the {which}",
                    ta.dims(),
                    t.dims()
                )));
            }
            Ok(t.clone())
        };
        let tb = get("second", b)?;
        let tc = c.map(|c| get("third", c)).transpose()?;
        if !ta.dtype().is_float() {
            out.insert(name.clone(), ta.clone());
            continue;
        }
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let a32 = f(ta)?;
        let base = match &tc {
            Some(tc) => f(tc)?,
            None => a32.clone(),
        };
        let mixed = (&a32 + (f(&tb)? - base)?.affine(scale, 0.0)?)?.to_dtype(ta.dtype())?;
        let values = f(&mixed)?.flatten_all()?.to_vec1::<f32>()?;
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::Merge(format!(
                "{component} tensor {name}: {bad} of {} merged values are not finite in {:?} \
                 (NaN or infinity; is the scale {scale} too large?)",
                values.len(),
                ta.dtype()
            )));
        }
        out.insert(name.clone(), mixed);
    }
    Ok(out)
}
