//! Config parsing, per-class defaults of missing keys, and choosing schedulers by name.

use sd_scheduler::{
    build, BetaSchedule, Error, PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing,
};

/// runwayml/stable-diffusion-v1-5 `scheduler/scheduler_config.json`.
const SD15: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

/// stabilityai/stable-diffusion-2 `scheduler/scheduler_config.json`.
const SD2: &str = r#"{
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.8.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
}"#;

#[test]
fn sd_configs_parse_to_the_presets() {
    assert_eq!(
        SchedulerConfig::from_json(SD15).unwrap(),
        SchedulerConfig::default()
    );
    assert_eq!(
        SchedulerConfig::from_json(SD2).unwrap(),
        SchedulerConfig::sd2_v_prediction()
    );
    let sd2 = SchedulerConfig::from_json(SD2).unwrap();
    assert_eq!(sd2.prediction_type, PredictionType::VPrediction);
    assert_eq!(sd2.beta_schedule, BetaSchedule::ScaledLinear);
}

#[test]
fn unknown_keys_are_ignored_and_bad_values_are_errors() {
    let c = SchedulerConfig::from_json(
        r#"{"some_future_key": [1, 2], "timestep_spacing": "trailing"}"#,
    )
    .unwrap();
    assert_eq!(c.timestep_spacing, Some(TimestepSpacing::Trailing));
    assert!(matches!(
        SchedulerConfig::from_json(r#"{"beta_schedule": "sigmoid"}"#),
        Err(Error::Json(_))
    ));
    assert!(matches!(
        SchedulerConfig::from_json("{"),
        Err(Error::Json(_))
    ));
    assert!(matches!(
        SchedulerConfig::from_json(r#"{"num_train_timesteps": 0}"#),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn missing_keys_take_the_class_defaults() {
    // An empty config is each class's own defaults, as `Class.from_config({})` in diffusers:
    // DDIM leading without offset, Euler linspace. Every expected list below is what
    // diffusers 0.42.1 prints for the same class, config and step count.
    let bare = SchedulerConfig::from_json("{}").unwrap();
    let ddim = build(SchedulerKind::Ddim, &bare, 4).unwrap();
    assert_eq!(ddim.timesteps(), [750.0, 500.0, 250.0, 0.0]);
    let euler = build(SchedulerKind::Euler, &bare, 4).unwrap();
    assert_eq!(euler.timesteps(), [999.0, 666.0, 333.0, 0.0]);
    let dpm = build(SchedulerKind::DpmSolverPlusPlus, &bare, 4).unwrap();
    assert_eq!(dpm.timesteps(), [999.0, 749.0, 500.0, 250.0]);
    // SD 1.5's config: leading spacing with offset 1.
    let sd = SchedulerConfig::default();
    assert_eq!(
        build(SchedulerKind::Pndm, &sd, 4).unwrap().timesteps(),
        [751.0, 501.0, 501.0, 251.0, 1.0]
    );
    assert_eq!(
        build(SchedulerKind::Heun, &sd, 2).unwrap().timesteps(),
        [999.0, 0.0, 0.0]
    );
}

#[test]
fn schedulers_are_chosen_by_name_and_by_class() {
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
        assert_eq!(
            SchedulerKind::from_class_name(kind.class_name()).unwrap(),
            kind
        );
    }
    let err = "euler_a".parse::<SchedulerKind>().unwrap_err();
    assert!(matches!(&err, Error::UnknownScheduler { name, .. } if name == "euler_a"));
    assert_eq!(
        err.to_string(),
        "unknown scheduler \"euler_a\"; valid names: ddim, ddpm, pndm, lms, euler, euler-ancestral, heun, dpm-solver++, unipc"
    );
    assert!(matches!(
        SchedulerKind::from_class_name("KarrasVeScheduler"),
        Err(Error::UnknownClassName(_))
    ));
    assert_eq!(
        SchedulerConfig::default().default_kind().unwrap(),
        SchedulerKind::Pndm
    );
    assert_eq!(
        SchedulerConfig::sd2_v_prediction().default_kind().unwrap(),
        SchedulerKind::Ddim
    );
    assert!(SchedulerConfig::from_json("{}")
        .unwrap()
        .default_kind()
        .is_err());
}

#[test]
fn unimplemented_options_are_typed_errors() {
    let with = |json: &str| SchedulerConfig::from_json(json).unwrap();
    let cases = [
        (SchedulerKind::Ddim, r#"{"thresholding": true}"#),
        (SchedulerKind::Ddpm, r#"{"variance_type": "learned_range"}"#),
        (SchedulerKind::Pndm, r#"{"skip_prk_steps": false}"#),
        (
            SchedulerKind::Euler,
            r#"{"final_sigmas_type": "sigma_min"}"#,
        ),
        (
            SchedulerKind::Euler,
            r#"{"interpolation_type": "log_linear"}"#,
        ),
        (SchedulerKind::Lms, r#"{"use_exponential_sigmas": true}"#),
        (
            SchedulerKind::DpmSolverPlusPlus,
            r#"{"algorithm_type": "sde-dpmsolver++"}"#,
        ),
        (SchedulerKind::DpmSolverPlusPlus, r#"{"solver_order": 3}"#),
        (SchedulerKind::UniPc, r#"{"solver_type": "bh1"}"#),
        (SchedulerKind::UniPc, r#"{"predict_x0": false}"#),
        (
            SchedulerKind::EulerAncestral,
            r#"{"prediction_type": "sample"}"#,
        ),
    ];
    for (kind, json) in cases {
        let result = build(kind, &with(json), 10);
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{kind} {json}"
        );
    }
    let negative_eta = SchedulerConfig {
        eta: -1.0,
        ..SchedulerConfig::default()
    };
    assert!(matches!(
        build(SchedulerKind::Ddim, &negative_eta, 10),
        Err(Error::InvalidConfig(_))
    ));
    let short = with(r#"{"trained_betas": [0.1, 0.2]}"#);
    assert!(matches!(
        build(SchedulerKind::Ddim, &short, 2),
        Err(Error::InvalidConfig(_))
    ));
}
