//! Properties over all step counts and spacings, and round trips through add_noise and step.

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use sd_scheduler::{build, BetaSchedule, Error, SchedulerConfig, SchedulerKind, TimestepSpacing};

const SPACINGS: [TimestepSpacing; 3] = [
    TimestepSpacing::Leading,
    TimestepSpacing::Trailing,
    TimestepSpacing::Linspace,
];

fn config(spacing: TimestepSpacing, karras: bool) -> SchedulerConfig {
    SchedulerConfig {
        timestep_spacing: Some(spacing),
        use_karras_sigmas: karras,
        ..SchedulerConfig::default()
    }
}

/// Where a schedule repeats a timestep on purpose, as diffusers does:
/// Heun repeats every timestep but the first (t0, t1, t1, t2, t2, ...); PNDM repeats the
/// second (t0, t1, t1, t2, ...). Everything else is strictly decreasing.
fn check_order(kind: SchedulerKind, ts: &[f64], steps: usize) -> Result<(), TestCaseError> {
    let expected_len = match kind {
        SchedulerKind::Heun => 2 * steps - 1,
        SchedulerKind::Pndm if steps >= 2 => steps + 1,
        _ => steps,
    };
    prop_assert_eq!(ts.len(), expected_len);
    for i in 1..ts.len() {
        let repeat = match kind {
            SchedulerKind::Heun => i % 2 == 0,
            SchedulerKind::Pndm => i == 2,
            _ => false,
        };
        if repeat {
            prop_assert_eq!(ts[i], ts[i - 1], "{} step {}", kind, i);
        } else {
            prop_assert!(
                ts[i] < ts[i - 1],
                "{} not decreasing at {}: {:?}",
                kind,
                i,
                &ts[i - 1..=i]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any step count 1..=1000 and any spacing: timesteps lie in [0, T) and decrease.
    /// DPM-Solver++ and UniPC space N + 1 grid points, which at N = 1000 cannot be distinct
    /// integers (diffusers repeats timesteps there too), so they are checked up to 999.
    /// SD's steps_offset = 1 pushes `leading` at N = 1000 to t = 1000: a typed error.
    #[test]
    fn timesteps_in_range_and_decreasing(steps in 1usize..=1000, spacing in 0usize..3, kind in 0usize..9) {
        let kind = SchedulerKind::ALL[kind];
        let multistep = matches!(kind, SchedulerKind::DpmSolverPlusPlus | SchedulerKind::UniPc);
        let steps = if multistep { steps.min(999) } else { steps };
        match build(kind, &config(SPACINGS[spacing], false), steps) {
            Ok(s) => {
                let ts = s.timesteps();
                prop_assert!(ts.iter().all(|&t| (0.0..1000.0).contains(&t)), "{:?}", ts);
                check_order(kind, ts, steps)?;
                if let Some(sigmas) = s.sigmas() {
                    prop_assert_eq!(sigmas.len(), ts.len() + 1);
                    prop_assert_eq!(sigmas[sigmas.len() - 1], 0.0);
                }
            }
            Err(Error::TimestepOutOfRange { timestep, .. }) => {
                prop_assert!(SPACINGS[spacing] == TimestepSpacing::Leading && timestep >= 1000);
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }

    /// Karras sigmas: timesteps are the inverse of the sigma interpolation; they stay in
    /// range and never increase (rounded ones may repeat where sigmas are dense).
    #[test]
    fn karras_timesteps_in_range_and_non_increasing(steps in 1usize..=300, spacing in 0usize..3, which in 0usize..5) {
        let kind = [SchedulerKind::Lms, SchedulerKind::Euler, SchedulerKind::Heun,
            SchedulerKind::DpmSolverPlusPlus, SchedulerKind::UniPc][which];
        let s = build(kind, &config(SPACINGS[spacing], true), steps).unwrap();
        let ts = s.timesteps();
        prop_assert!(ts.iter().all(|&t| (0.0..1000.0).contains(&t)));
        prop_assert!(ts.windows(2).all(|w| w[1] <= w[0]), "{:?}", ts);
        let sigmas = s.sigmas().unwrap();
        prop_assert!(sigmas.windows(2).all(|w| w[1] <= w[0]));
    }

    /// A 1-step schedule with set_alpha_to_one: noising x0 with eps to step 0, then one step
    /// with the true eps as the model output, gives back x0 (every scheduler).
    #[test]
    fn one_step_round_trip(
        values in prop::collection::vec(-2.0f32..2.0, 32),
        kind in 0usize..9, spacing in 0usize..3, scaled in any::<bool>(),
    ) {
        let kind = SchedulerKind::ALL[kind];
        let config = SchedulerConfig {
            set_alpha_to_one: Some(true),
            beta_schedule: if scaled { BetaSchedule::ScaledLinear } else { BetaSchedule::Linear },
            ..config(SPACINGS[spacing], false)
        };
        let x0 = Tensor::from_slice(&values[..16], (1, 1, 4, 4), &Device::Cpu).unwrap();
        let eps = Tensor::from_slice(&values[16..], (1, 1, 4, 4), &Device::Cpu).unwrap();
        let mut s = build(kind, &config, 1).unwrap();
        let x = s.add_noise(&x0, &eps, 0).unwrap();
        let out = s.step(0, &eps, &x, Some(&eps)).unwrap();
        // Recovering x0 divides by sqrt(alpha_bar_T) ~ 1/158 (linear betas): f32 rounding of x
        // is amplified by that much.
        let err = (out - &x0).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert!(err < 2e-3, "{} err {}", kind, err);
    }

    /// DDIM with eta = 0 (eq. 12): from add_noise(x0, eps, i), a step whose model output is eps
    /// lands exactly on add_noise(x0, eps, i + 1) (leading spacing steps to the next entry),
    /// and on x0 after the last step when alpha_bar_prev is 1.
    #[test]
    fn ddim_eta0_round_trip(values in prop::collection::vec(-2.0f32..2.0, 32), steps in 1usize..200, at in 0.0f64..1.0) {
        let config = SchedulerConfig { set_alpha_to_one: Some(true), ..SchedulerConfig::default() };
        let mut s = build(SchedulerKind::Ddim, &config, steps).unwrap();
        let i = ((steps as f64 * at) as usize).min(steps - 1);
        let x0 = Tensor::from_slice(&values[..16], (1, 1, 4, 4), &Device::Cpu).unwrap();
        let eps = Tensor::from_slice(&values[16..], (1, 1, 4, 4), &Device::Cpu).unwrap();
        let x = s.add_noise(&x0, &eps, i).unwrap();
        let out = s.step(i, &eps, &x, None).unwrap();
        let expected = if i + 1 < steps { s.add_noise(&x0, &eps, i + 1).unwrap() } else { x0 };
        let err = (out - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert!(err < 1e-4, "step {} of {}: err {}", i, steps, err);
    }
}
