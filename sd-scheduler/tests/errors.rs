//! Bad input gives typed errors, never a panic.

use candle_core::{Device, Tensor};
use sd_scheduler::{build, Error, SchedulerConfig, SchedulerKind};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn step_counts_out_of_range() {
    let config = SchedulerConfig::default();
    for kind in SchedulerKind::ALL {
        assert!(
            matches!(build(kind, &config, 0), Err(Error::ZeroSteps)),
            "{kind}"
        );
        assert!(
            matches!(
                build(kind, &config, 1001),
                Err(Error::TooManySteps {
                    steps: 1001,
                    max: 1000
                })
            ),
            "{kind}"
        );
    }
    // SD's steps_offset pushes the first leading timestep of a 1000-step DDIM schedule to 1000.
    let err = build(SchedulerKind::Ddim, &config, 1000).err().unwrap();
    assert!(matches!(
        err,
        Error::TimestepOutOfRange {
            timestep: 1000,
            num_train_timesteps: 1000
        }
    ));
}

#[test]
fn bad_indices_shapes_and_missing_noise() {
    let config = SchedulerConfig {
        eta: 0.3,
        ..SchedulerConfig::default()
    };
    let x = zeros(&[1, 4, 8, 8]);
    let wrong = zeros(&[1, 4, 8, 9]);
    for kind in SchedulerKind::ALL {
        let mut s = build(kind, &config, 5).unwrap();
        let len = s.timesteps().len();
        let past = Error::IndexOutOfRange { index: len, len };
        let same = |e: Error| e.to_string() == past.to_string();
        assert!(same(s.step(len, &x, &x, Some(&x)).unwrap_err()), "{kind}");
        assert!(same(s.scale_model_input(&x, len).unwrap_err()), "{kind}");
        assert!(same(s.add_noise(&x, &x, len).unwrap_err()), "{kind}");
        let e = s.step(0, &wrong, &x, Some(&x)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ShapeMismatch {
                    what: "model_output",
                    ..
                }
            ),
            "{kind}: {e}"
        );
        let e = s.step(0, &x, &x, Some(&wrong)).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { what: "noise", .. }),
            "{kind}: {e}"
        );
        let e = s.add_noise(&x, &wrong, 0).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { what: "noise", .. }),
            "{kind}: {e}"
        );
        let needs = s.noise_needed(0);
        let expected = matches!(
            kind,
            SchedulerKind::Ddim | SchedulerKind::Ddpm | SchedulerKind::EulerAncestral
        );
        assert_eq!(needs, expected, "{kind}");
        match s.step(0, &x, &x, None) {
            Err(Error::MissingNoise { index: 0 }) => assert!(needs, "{kind}"),
            Ok(_) => assert!(!needs, "{kind}"),
            Err(e) => panic!("{kind}: {e}"),
        }
    }
}
