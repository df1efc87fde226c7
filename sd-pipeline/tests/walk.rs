//! Latent walks on tiny-sd1: keyframes are exactly `generate`'s images for their prompt and
//! seed, frames come in order and count, in-between frames are in between.

mod common;

use anyhow::Result;
use common::{max_difference, pipeline_fixture};
use sd_pipeline::walk::{walk, Keyframe, TextPath, WalkOptions};
use sd_pipeline::{GenerateRequest, StableDiffusion};

/// Two keyframes: a cat with seed 1, a dog with seed 2.
fn cat_and_dog() -> [Keyframe; 2] {
    [
        Keyframe {
            prompt: "a photo of a cat".into(),
            seed: 1,
        },
        Keyframe {
            prompt: "a photo of a dog".into(),
            seed: 2,
        },
    ]
}

fn base() -> GenerateRequest {
    GenerateRequest {
        negative_prompt: "blurry".into(),
        steps: 6,
        width: Some(64),
        height: Some(64),
        scheduler: Some("euler-ancestral".parse().unwrap()),
        ..GenerateRequest::default()
    }
}

#[test]
fn keyframes_are_the_generated_images_and_frames_lie_between() -> Result<()> {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1")).build()?;
    let keys = cat_and_dog();
    let mut told = Vec::new();
    let frames = walk(
        &sd,
        &base(),
        &keys,
        &WalkOptions {
            between: 2,
            loop_back: false,
            text_path: TextPath::Linear,
            max_batch: 1,
        },
        &mut |i, n| told.push((i, n)),
    )?;
    assert_eq!(frames.len(), 4);
    assert_eq!(told, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    let own = |k: &Keyframe| -> Result<_> {
        let request = GenerateRequest {
            prompt: k.prompt.clone(),
            seed: k.seed,
            ..base()
        };
        Ok(sd.generate_simple(&request)?.images.remove(0))
    };
    let (first, last) = (own(&keys[0])?, own(&keys[1])?);
    // Ancestral sampling: the seed's later draws are kept too.
    assert_eq!(
        frames[0], first,
        "the first frame is the first keyframe's image"
    );
    assert_eq!(
        frames[3], last,
        "the last frame is the last keyframe's image"
    );
    let d01 = max_difference(&frames[0], &frames[1]);
    let d03 = max_difference(&frames[0], &frames[3]);
    assert!(d01 > 0 && d03 > 0, "{d01} {d03}");

    // Looping back: two segments of three frames, the first keyframe not repeated.
    let looped = walk(
        &sd,
        &base(),
        &keys,
        &WalkOptions {
            between: 2,
            loop_back: true,
            text_path: TextPath::Spherical,
            max_batch: 1,
        },
        &mut |_, _| {},
    )?;
    assert_eq!(looped.len(), 6);
    assert_eq!(looped[0], first);
    assert_eq!(looped[3], last);

    let err = walk(
        &sd,
        &base(),
        &keys[..1],
        &WalkOptions {
            between: 2,
            loop_back: false,
            text_path: TextPath::Linear,
            max_batch: 1,
        },
        &mut |_, _| {},
    );
    assert!(err.is_err());
    Ok(())
}

#[test]
fn an_absurd_frame_count_is_refused_before_any_work() {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1"))
        .build()
        .unwrap();
    let keys = [
        Keyframe {
            prompt: "a".into(),
            seed: 1,
        },
        Keyframe {
            prompt: "b".into(),
            seed: 2,
        },
    ];
    for between in [usize::MAX, 1_000_000] {
        let err = walk(
            &sd,
            &base(),
            &keys,
            &WalkOptions {
                between,
                loop_back: false,
                text_path: TextPath::Linear,
                max_batch: 1,
            },
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("between") && err.contains("10000"), "{err}");
    }
}

#[test]
fn batched_frames_match_frames_made_one_at_a_time() -> Result<()> {
    let sd = StableDiffusion::builder(pipeline_fixture("tiny-sd1")).build()?;
    let keys = cat_and_dog();
    // DDIM draws no noise after the start, so frames can share a batch.
    let ddim = GenerateRequest {
        scheduler: Some("ddim".parse()?),
        ..base()
    };
    let options = |max_batch| WalkOptions {
        between: 3,
        loop_back: true,
        text_path: TextPath::Linear,
        max_batch,
    };
    let mut calls = Vec::new();
    let single = walk(&sd, &ddim, &keys, &options(1), &mut |_, _| {})?;
    let batched = walk(&sd, &ddim, &keys, &options(3), &mut |i, n| {
        calls.push((i, n))
    })?;
    assert_eq!(single.len(), 8);
    assert_eq!(calls, [(3, 8), (6, 8), (8, 8)], "three batches: 3 + 3 + 2");
    for (i, (a, b)) in single.iter().zip(&batched).enumerate() {
        let d = max_difference(a, b);
        assert!(d <= 1, "frame {i}: {d} levels between batched and single");
    }
    // Euler a draws noise at every step: frames are then made one at a time, whatever the
    // batch limit, and stay exactly the unbatched ones.
    let mut told = Vec::new();
    let ancestral = walk(&sd, &base(), &keys, &options(4), &mut |i, n| {
        told.push((i, n))
    })?;
    assert_eq!(told.len(), 8);
    assert_eq!(
        ancestral,
        walk(&sd, &base(), &keys, &options(1), &mut |_, _| {})?
    );
    Ok(())
}
