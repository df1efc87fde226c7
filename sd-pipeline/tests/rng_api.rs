//! The generator's API contract: typed errors for bad input, and what each kernel choice means.
//! (Exactness against torch is in rng_torch.rs.)

use candle_core::{DType, Device};
use sd_pipeline::{randn_per_sample, Error, NormalKernel, TorchRng};

#[test]
fn integer_dtypes_are_a_typed_error() {
    let mut rng = TorchRng::new(0);
    let err = rng
        .randn_tensor(&[2, 2], &Device::Cpu, DType::U8)
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType(DType::U8)), "{err}");
    let err = rng.rand_tensor(&[2], &Device::Cpu, DType::I64).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType(DType::I64)), "{err}");
}

#[test]
fn one_generator_per_image_is_required() {
    let mut rngs = TorchRng::from_seeds(&[1, 2]);
    let err = randn_per_sample(&mut rngs, &[3, 4, 8, 8], &Device::Cpu, DType::F32).unwrap_err();
    match err {
        Error::BatchMismatch {
            expected: 3,
            got: 2,
            ..
        } => {}
        other => panic!("unexpected {other}"),
    }
}

/// A per-image generator draws the same numbers as that seed alone would for one image.
#[test]
fn per_sample_rows_are_single_image_draws() {
    let mut rngs = TorchRng::from_seeds(&[7, 8]);
    let batch = randn_per_sample(&mut rngs, &[2, 4, 3, 5], &Device::Cpu, DType::F32).unwrap();
    let row1: Vec<f32> = batch
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(row1, TorchRng::new(8).randn(&[1, 4, 3, 5]));
    // And the generators moved on, ready for the next step's noise.
    assert_eq!(rngs[0].randn(&[3]), {
        let mut fresh = TorchRng::new(7);
        fresh.randn(&[60]);
        fresh.randn(&[3])
    });
}

/// The two kernels give the same normals to within float rounding but not the same bits, so the
/// bit-exact fixture tests do tell them apart.
#[test]
fn kernels_differ_only_in_the_last_bits() {
    let a = TorchRng::with_kernel(0, NormalKernel::Avx2).randn(&[1, 4, 64, 64]);
    let b = TorchRng::with_kernel(0, NormalKernel::Libm).randn(&[1, 4, 64, 64]);
    let differ = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0f32, f32::max);
    assert!(differ > 100, "only {differ} of {} differ", a.len());
    assert!(max < 1e-5, "max relative difference {max}");
}

#[test]
fn empty_and_scalar_shapes() {
    let mut rng = TorchRng::new(0);
    assert!(rng.randn(&[0, 4]).is_empty());
    let t = rng.randn_tensor(&[], &Device::Cpu, DType::F32).unwrap();
    assert_eq!(t.dims(), &[] as &[usize]);
    // An empty draw consumes nothing: the scalar is the first normal of seed 0.
    assert_eq!(
        t.to_scalar::<f32>().unwrap(),
        TorchRng::new(0).randn(&[1])[0]
    );
}
