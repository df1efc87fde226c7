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
        // Tests write the same output more than once; the overwrite rule has its own test.
        "--force",
        "-o",
        out,
    ]
}

/// `base` without `--force`.
fn base_unforced<'a>(model: &'a str, scheduler: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = base(model, scheduler, out);
    args.retain(|a| *a != "--force");
    args
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

/// Pixels, size and the `parameters` text of a PNG file.
fn read_png(path: &str) -> (Vec<u8>, (u32, u32), Option<String>) {
    let bytes = std::fs::read(path).unwrap();
    let image = sd_pipeline::image_crate::load_from_memory(&bytes)
        .unwrap()
        .to_rgb8();
    let text = sd_pipeline::png::read_parameters(&bytes).unwrap();
    (image.as_raw().clone(), image.dimensions(), text)
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
    let huge = format!("1{}", "0".repeat(30));
    let nested_huge_weights = format!("((blurry:{huge}):{huge})");
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
        // The model at fault is the one mixed in, not --model.
        (
            vec!["--mix", "/no/such/other:0.5"],
            "--mix /no/such/other:0.5: /no/such/other",
        ),
        // Emphasis errors name the prompt they come from.
        (
            // (The weight syntax takes plain decimals, as A1111's: 1e30 would be text.)
            vec!["--negative-prompt", &nested_huge_weights],
            "--negative-prompt: the weight of",
        ),
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
    write_grey_png(&small_mask, 32, 32);
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

#[test]
fn outputs_never_replace_what_the_user_did_not_mean() {
    let dir = TempDir::new("targets");
    let model = arg(folder("tiny-sd1"));
    // An existing file needs --force, and is left as it was without it.
    let existing = arg_in(&dir, "old.png");
    std::fs::write(&existing, b"old").unwrap();
    let stderr = run_err(&base_unforced(&model, "ddim", &existing));
    assert!(
        stderr.contains(&format!(
            "-o {existing}: already exists (--force replaces it)"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"old");
    // A batch checks every numbered name before any work.
    let batch = arg_in(&dir, "b.png");
    std::fs::write(dir.path("b-1.png"), b"old").unwrap();
    let stderr = run_err(&with(
        base_unforced(&model, "ddim", &batch),
        &["--batch-size", "2"],
    ));
    assert!(stderr.contains("b-1.png: already exists"), "{stderr}");
    // Read-only files are never replaced, even with --force (and even for root).
    let read_only = arg_in(&dir, "ro.png");
    std::fs::write(&read_only, b"old").unwrap();
    let mut perm = std::fs::metadata(&read_only).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&read_only, perm).unwrap();
    let stderr = run_err(&base(&model, "ddim", &read_only));
    assert!(
        stderr.contains("is read-only; not replacing it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&read_only).unwrap(), b"old");
    // Links, FIFOs and devices stay what they are.
    let link = arg_in(&dir, "link.png");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let stderr = run_err(&base(&model, "ddim", &link));
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let fifo = arg_in(&dir, "fifo.png");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let stderr = run_err(&base(&model, "ddim", &fifo));
        assert!(stderr.contains("is a FIFO, not a regular file"), "{stderr}");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
    let stderr = run_err(&base(&model, "ddim", "/dev/null"));
    assert!(stderr.contains("-o /dev/null: is a device"), "{stderr}");
}

#[test]
fn dash_writes_the_png_to_standard_output() {
    let model = arg(folder("tiny-sd1"));
    let out = sd(&base(&model, "pndm", "-"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = TempDir::new("stdout");
    let file = arg_in(&dir, "from-stdout.png");
    std::fs::write(&file, &out.stdout).unwrap();
    assert!(max_difference(&file, &arg(folder("txt2img-pndm-0.png"))) <= 2);
    // The report goes to standard error, so the PNG stays clean.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("wrote standard output"), "{report}");
    // One PNG only.
    let stderr = run_err(&with(base(&model, "pndm", "-"), &["--batch-size", "2"]));
    assert!(
        stderr.contains("-o -: standard output takes one PNG"),
        "{stderr}"
    );
}

#[test]
fn overflowing_numbers_are_refused_never_a_black_image() {
    let dir = TempDir::new("overflow");
    let out = arg_in(&dir, "out.png");
    let model = arg(folder("tiny-sd1"));
    let stderr = run_err(&with(
        base(&model, "ddim", &out),
        &["--guidance-scale", "1e39"],
    ));
    assert!(
        stderr.contains("--guidance-scale: 1e39 is not a finite number within f32's range"),
        "{stderr}"
    );
    let mix = format!("{model}:1e39");
    let stderr = run_err(&with(base(&model, "ddim", &out), &["--mix", &mix]));
    assert!(stderr.contains("within f32's range"), "{stderr}");
    // A weight f32 can hold whose products overflow: caught on the latents, no image.
    let mut huge_weight = base(&model, "ddim", &out);
    huge_weight[1] = "a photo of a (cat:340282350000000000000000000000000000000)";
    let stderr = run_err(&huge_weight);
    assert!(
        stderr.contains("the final latents hold") && stderr.contains("non-finite values"),
        "{stderr}"
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn sizes_follow_the_help() {
    let dir = TempDir::new("sizes");
    let out = arg_in(&dir, "out.png");
    let model = arg(folder("tiny-sd1"));
    // --width alone: a square.
    let mut args = base(&model, "ddim", &out);
    let at = args.iter().position(|a| *a == "--height").unwrap();
    args.drain(at..at + 2);
    args = with(args, &["--width", "32", "--steps", "2"]);
    run_ok(&args);
    assert_eq!(read_png(&out).1, (32, 32));
    // A 1x1 init image is blamed, not --width.
    let tiny = arg_in(&dir, "tiny.png");
    write_grey_png(&tiny, 1, 1);
    let mut args = base(&model, "ddim", &out);
    args.retain(|a| !["--width", "--height", "64"].contains(a));
    args.extend(["--init-image", &tiny]);
    let stderr = run_err(&args);
    assert!(
        stderr.contains("--init-image: 1x1 is smaller than 8 pixels"),
        "{stderr}"
    );
}

#[test]
fn hostile_images_and_config_paths_are_refused_first() {
    let dir = TempDir::new("hostile");
    let out = arg_in(&dir, "out.png");
    let model = arg(folder("tiny-sd1"));
    // A PNG header claiming 20000 x 20000: refused before anything is decoded.
    let bomb = arg_in(&dir, "bomb.png");
    {
        // 400 MB of zeros compress to a few hundred KB.
        use std::io::Write;
        let file = std::fs::File::create(&bomb).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 20000, 20000);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_compression(png::Compression::Fast);
        let mut stream = encoder
            .write_header()
            .unwrap()
            .into_stream_writer()
            .unwrap();
        let row = vec![0u8; 20000];
        for _ in 0..20000 {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 4 << 20);
    let stderr = run_err(&with(base(&model, "ddim", &out), &["--init-image", &bomb]));
    assert!(
        stderr.contains(&format!(
            "--init-image {bomb}: the image is 20000x20000; at most 8192"
        )),
        "{stderr}"
    );
    // --config: a missing path, a file, a folder without configs.
    let file = arg(fixture("tiny-sd1.safetensors"));
    let empty = arg_in(&dir, "empty");
    std::fs::create_dir(&empty).unwrap();
    let cases = [
        ("/no/such/configs".to_string(), "no such folder"),
        (file.clone(), "is a file; give a diffusers folder"),
        (empty.clone(), "has none of unet/config.json"),
    ];
    for (config, expected) in &cases {
        let stderr = run_err(&with(base(&file, "ddim", &out), &["--config", config]));
        assert!(
            stderr.contains(&format!("--config: {config}: {expected}")),
            "{config}: {stderr}"
        );
    }
    // A device as the model is not "missing".
    let stderr = run_err(&base("/dev/null", "ddim", &out));
    assert!(
        stderr.contains("/dev/null: is neither a regular file nor a folder"),
        "{stderr}"
    );
    let mut names = dir.entries();
    names.retain(|n| n != "bomb.png" && n != "empty");
    assert!(names.is_empty(), "{names:?}");
}

fn write_grey_png(path: &str, w: u32, h: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, w, h);
    encoder.set_color(png::ColorType::Grayscale);
    let pixels = vec![128u8; (w * h) as usize];
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}
