//! `sd generate --preview-every N --animation OUT.gif --frames DIR` on the tiny model: frame
//! counts, names, sizes and order, the final frame is the output image, the GIF decodes.

mod common;

use common::{folder, root, s, sd, TempDir};
use sd_pipeline::image_crate::codecs::gif::GifDecoder;
use sd_pipeline::image_crate::{self, AnimationDecoder};

fn args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "generate",
        "a photo of a cat",
        "--model",
        model,
        "--steps",
        "10",
        "--seed",
        "42",
        "--scheduler",
        "ddim",
        "-q",
        "-o",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn frames_every_n_steps_end_with_the_final_image() {
    let dir = TempDir::new("animation");
    let model = folder("tiny-sd1");
    let out = dir.path("cat.png");
    let gif = dir.path("cat.gif");
    let frames = dir.path("frames");
    let run = sd(&args(
        s(&model),
        s(&out),
        &[
            "--preview-every",
            "3",
            "--animation",
            s(&gif),
            "--frames",
            s(&frames),
        ],
    ));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("wrote 4 frames") && stdout.contains("(4 frames)"),
        "{stdout}"
    );

    let mut names: Vec<String> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "step-003.png",
            "step-006.png",
            "step-009.png",
            "step-010.png"
        ]
    );
    let last = image_crate::open(frames.join("step-010.png"))
        .unwrap()
        .to_rgb8();
    let final_image = image_crate::open(&out).unwrap().to_rgb8();
    assert_eq!(last, final_image, "the last frame is the output image");
    let first = image_crate::open(frames.join("step-003.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(first.dimensions(), (64, 64));
    assert_ne!(first, last);

    let file = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
    let decoded = GifDecoder::new(file)
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(decoded.len(), 4);
    assert!(decoded.iter().all(|f| f.buffer().dimensions() == (64, 64)));

    // VAE previews, and a GIF that exists is replaced only with --force.
    let run = sd(&args(
        s(&model),
        s(&out),
        &[
            "--preview-every",
            "5",
            "--preview",
            "vae",
            "--animation",
            s(&gif),
            "--force",
        ],
    ));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = sd(&args(
        s(&model),
        s(&out),
        &["--preview-every", "5", "--animation", s(&gif)],
    ));
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("--animation") || err.contains("-o"), "{err}");

    let run = sd(&args(
        s(&model),
        s(&out),
        &["--preview-every", "0", "--animation", s(&gif), "--force"],
    ));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--preview-every: 0 steps"));

    // A live preview file holds the newest preview (step 8 of 10 here), written whole each time.
    let live = dir.path("live.png");
    let run = sd(&args(
        s(&model),
        s(&out),
        &[
            "--preview-every",
            "4",
            "--preview-file",
            s(&live),
            "--frames",
            s(&frames),
            "--force",
        ],
    ));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let live_image = image_crate::open(&live).unwrap().to_rgb8();
    let step8 = image_crate::open(frames.join("step-008.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(live_image, step8);
    assert_ne!(live_image, image_crate::open(&out).unwrap().to_rgb8());
}

#[test]
fn a_walk_starts_and_ends_on_the_keyframes_images() {
    let dir = TempDir::new("walk");
    let model = folder("tiny-sd1");
    let gif = dir.path("walk.gif");
    let frames = dir.path("frames");
    let common = ["--steps", "4", "--negative-prompt", "blurry", "-q"];
    let mut walk = vec!["walk", "--model", s(&model), "--prompt", "a photo of a cat"];
    walk.extend([
        "--seed",
        "1",
        "--seed",
        "2",
        "--between",
        "2",
        "-o",
        s(&gif),
    ]);
    walk.extend(["--frames", s(&frames)]);
    walk.extend(common);
    let run = sd(&walk);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("(4 frames"));
    let file = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
    let decoded = GifDecoder::new(file)
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(decoded.len(), 4);

    for (seed, frame) in [("1", "frame-000.png"), ("2", "frame-003.png")] {
        let out = dir.path(&format!("seed{seed}.png"));
        let mut generate = vec!["generate", "a photo of a cat", "--model", s(&model)];
        generate.extend(["--seed", seed, "-o", s(&out)]);
        generate.extend(common);
        let run = sd(&generate);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let own = image_crate::open(&out).unwrap().to_rgb8();
        let walked = image_crate::open(frames.join(frame)).unwrap().to_rgb8();
        assert_eq!(
            own, walked,
            "seed {seed}: the keyframe is sd generate's image"
        );
    }

    let run = sd(&[
        "walk",
        "--model",
        s(&model),
        "--prompt",
        "a",
        "--prompt",
        "b",
        "--prompt",
        "c",
        "--seed",
        "1",
        "--seed",
        "2",
        "-o",
        s(&gif),
        "--force",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--prompt x3 and --seed x2"));
}

#[test]
fn taesd_previews_and_final_decode() {
    let dir = TempDir::new("taesd");
    let model = folder("tiny-sd1");
    let taesd = root().join("fixtures/vae/taesd");
    let out = dir.path("cat.png");
    let frames = dir.path("frames");
    // The fixture case: Euler, 10 steps, seed 42, negative prompt "blurry", 64x64.
    let mut a = vec!["generate", "a photo of a cat", "--model", s(&model)];
    a.extend(["--steps", "10", "--seed", "42", "--scheduler", "euler"]);
    a.extend(["--negative-prompt", "blurry", "-q", "-o", s(&out)]);
    a.extend(["--taesd", s(&taesd), "--decoder", "taesd"]);
    a.extend([
        "--preview-every",
        "5",
        "--preview",
        "taesd",
        "--frames",
        s(&frames),
    ]);
    let run = sd(&a);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let image = image_crate::open(&out).unwrap().to_rgb8();
    let expected = image_crate::open(taesd.join("txt2img-euler-10-0.png"))
        .unwrap()
        .to_rgb8();
    let diff = image
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(diff <= 2, "{diff} levels from diffusers' TAESD image");
    let step5 = image_crate::open(frames.join("step-005.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(step5.dimensions(), (64, 64));
    assert_ne!(step5, image);
    let text = std::fs::read(&out).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("VAE: TAESD"));

    // Asking for TAESD without weights fails before any work, naming the flag.
    let run = sd(&args(
        s(&model),
        s(&dir.path("no.png")),
        &["--decoder", "taesd"],
    ));
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--taesd PATH"));
    assert!(!dir.path("no.png").exists());
}
