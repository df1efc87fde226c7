//! `sd generate`, run as a user runs it, on the tiny fixture models: its PNGs are compared with
//! the images diffusers made (`fixtures/pipeline/`, tools/fixtures/pipeline.py), within 2 levels.

mod common;

use std::path::PathBuf;

use common::{fixture, folder, sd, TempDir};

/// A path as an owned argument.
fn arg(path: PathBuf) -> String {
    path.display().to_string()
}

fn arg_in(dir: &TempDir, name: &str) -> String {
    arg(dir.path(name))
}

/// The base case of cases.json: prompt, negative, 10 steps, scale 7.5, seed 42, 64x64.
fn base<'a>(model: &'a str, scheduler: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "a photo of a cat",
        "--model",
        model,
        "--negative-prompt",
        "blurry",
        "--steps",
        "10",
        "--seed",
        "42",
        "--width",
        "64",
        "--height",
        "64",
        "--scheduler",
        scheduler,
        "-q",
        "-o",
        out,
    ]
}

/// `args` with each `--flag value` of `extra` replacing the same flag's value, or appended.
fn with<'a>(mut args: Vec<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    for pair in extra.chunks(2) {
        match args.iter().position(|a| *a == pair[0]) {
            Some(i) if pair.len() == 2 => args[i + 1] = pair[1],
            _ => args.extend_from_slice(pair),
        }
    }
    args
}

fn run_ok(args: &[&str]) -> String {
    let out = sd(args);
    assert!(
        out.status.success(),
        "sd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(args: &[&str]) -> String {
    let out = sd(args);
    assert!(!out.status.success(), "sd {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// Pixels and the `parameters` text of a PNG.
fn read_png(path: &str) -> (Vec<u8>, (u32, u32), Option<String>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(frame.buffer_size());
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|t| t.keyword == "parameters")
                .map(|t| t.get_text().unwrap())
        });
    (pixels, (info.width, info.height), text)
}

fn max_difference(ours: &str, reference: &str) -> u8 {
    let (a, size_a, _) = read_png(ours);
    let (b, size_b, _) = read_png(reference);
    assert_eq!(size_a, size_b);
    a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn text_to_image_png_matches_diffusers_and_carries_a1111_parameters() {
    let dir = TempDir::new("txt2img");
    let out = arg_in(&dir, "cat.png");
    let model = arg(folder("tiny-sd1"));
    let stdout = run_ok(&base(&model, "ddim", &out));
    assert!(stdout.contains("seed: 42"), "{stdout}");
    assert!(stdout.contains("10 model calls"), "{stdout}");
    assert!(max_difference(&out, &arg(folder("txt2img-ddim-0.png"))) <= 2);
    let (_, _, text) = read_png(&out);
    assert_eq!(
        text.unwrap(),
        "a photo of a cat\nNegative prompt: blurry\nSteps: 10, Sampler: DDIM, CFG scale: 7.5, \
         Seed: 42, Size: 64x64, Model: tiny-sd1"
    );
    // Nothing but the image is left in the folder (no temporary files).
    assert_eq!(dir.entries(), ["cat.png"]);
}

#[test]
fn a_batch_writes_numbered_files() {
    let dir = TempDir::new("batch");
    let out = arg_in(&dir, "cat.png");
    let model = arg(folder("tiny-sd1"));
    let mut args = base(&model, "euler-ancestral", &out);
    args.extend(["--batch-size", "2"]);
    run_ok(&args);
    assert_eq!(dir.entries(), ["cat-0.png", "cat-1.png"]);
    for i in 0..2 {
        let ours = arg_in(&dir, &format!("cat-{i}.png"));
        let reference = arg(folder(&format!("txt2img-batch-2-{i}.png")));
        assert!(max_difference(&ours, &reference) <= 2, "image {i}");
        let (_, _, text) = read_png(&ours);
        assert!(text
            .unwrap()
            .ends_with(&format!("Batch size: 2, Batch pos: {i}")));
    }
}

#[test]
fn image_to_image_and_inpainting_from_pngs() {
    let dir = TempDir::new("img2img");
    let out = arg_in(&dir, "out.png");
    let (init, mask) = (arg(folder("init.png")), arg(folder("mask.png")));
    let sd1 = arg(folder("tiny-sd1"));
    let mut args = base(&sd1, "euler-ancestral", &out);
    args.extend(["--init-image", &init, "--strength", "0.6"]);
    let stdout = run_ok(&args);
    assert!(stdout.contains("6 model calls"), "{stdout}");
    assert!(max_difference(&out, &arg(folder("img2img-euler-ancestral-0.png"))) <= 2);
    let (_, _, text) = read_png(&out);
    assert!(text.unwrap().contains("Denoising strength: 0.6"));

    // --mask alone makes strength 1.0, as diffusers' inpainting pipeline.
    let inpaint = arg(folder("tiny-sd1-inpaint"));
    let mut args = base(&inpaint, "ddim", &out);
    args.extend(["--init-image", &init, "--mask", &mask]);
    run_ok(&args);
    assert!(max_difference(&out, &arg(folder("inpaint-tiny-sd1-inpaint-0.png"))) <= 2);
}

#[test]
fn single_files_and_mixing_load_from_the_command_line() {
    let dir = TempDir::new("single");
    let out = arg_in(&dir, "out.png");
    let file = arg(fixture("tiny-sd1.safetensors"));
    let configs = arg(folder("tiny-sd1"));
    let mut args = base(&file, "pndm", &out);
    args.extend(["--config", &configs]);
    run_ok(&args);
    let reference = arg(folder("txt2img-pndm-0.png"));
    assert!(max_difference(&out, &reference) <= 2);

    // Mixing a model with itself leaves it as it is, at any scale.
    let mut args = base(&configs, "pndm", &out);
    let mix = format!("{configs}:0.7");
    args.extend(["--mix", &mix]);
    run_ok(&args);
    assert!(max_difference(&out, &reference) <= 2);
}

#[test]
fn bad_arguments_are_named_and_leave_no_file() {
    let dir = TempDir::new("errors");
    let out = arg_in(&dir, "out.png");
    let model = arg(folder("tiny-sd1"));
    let init = arg(folder("init.png"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--width", "60"],
            "--width: 60 is not a positive multiple of 8",
        ),
        (vec!["--steps", "0"], "--steps"),
        // Passes the 1..=1000 range, but leading spacing with steps_offset 1 reaches t = 1000.
        (
            vec!["--steps", "1000"],
            "--steps: 1000 steps do not fit this model's schedule",
        ),
        (vec!["--batch-size", "0"], "--batch-size"),
        (
            vec!["--init-image", &init, "--strength", "1.5"],
            "--strength: 1.5 is not in [0, 1]",
        ),
        (
            vec!["--strength", "0.5"],
            "--strength: only meaningful with --init-image",
        ),
        (
            vec!["--init-image", "/no/such.png"],
            "--init-image /no/such.png",
        ),
        (
            vec!["--mix", "model-without-scale"],
            "--mix model-without-scale: expected MODEL:SCALE",
        ),
        (vec!["--clip-skip", "0"], "--clip-skip"),
    ];
    for (extra, expected) in cases {
        let stderr = run_err(&with(base(&model, "ddim", &out), &extra));
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
    }
    // Unknown schedulers list the valid names.
    let stderr = run_err(&base(&model, "euler-b", &out));
    assert!(
        stderr.contains("--scheduler") && stderr.contains("dpm-solver++"),
        "{stderr}"
    );
    // A mask of another size than the init image.
    let small_mask = arg_in(&dir, "mask.png");
    let pixels = vec![255u8; 32 * 32];
    {
        let file = std::fs::File::create(&small_mask).unwrap();
        let mut encoder = png::Encoder::new(file, 32, 32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&pixels)
            .unwrap();
    }
    let mut args = base(&model, "ddim", &out);
    args.extend(["--init-image", &init, "--mask", &small_mask]);
    let stderr = run_err(&args);
    assert!(stderr.contains("--mask: 32x32 does not match"), "{stderr}");
    // Missing models name the argument and the path.
    let stderr = run_err(&base("/no/such/model", "ddim", &out));
    assert!(stderr.contains("--model /no/such/model"), "{stderr}");
    // Corrupt weights: a truncated single file.
    let truncated = arg_in(&dir, "truncated.safetensors");
    let bytes = std::fs::read(arg(fixture("tiny-sd1.safetensors"))).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = run_err(&base(&truncated, "ddim", &out));
    assert!(stderr.contains("truncated.safetensors"), "{stderr}");
    assert_eq!(dir.entries(), ["mask.png", "truncated.safetensors"]);
}
