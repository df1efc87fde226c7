//! `sd generate --lora / --lora-dir / --embeddings-dir` and `sd inspect` on LoRA and embedding
//! files, run as a user runs them, against the images diffusers made (fixtures/lora/,
//! tools/fixtures/lora.py) on tiny-sd1.

mod common;

use std::path::PathBuf;

use common::{folder, root, s, sd, TempDir};
use serde_json::Value;

fn lora(name: &str) -> PathBuf {
    root().join("fixtures/lora").join(name)
}

/// The fixture cases' settings: 10 PNDM steps, scale 7.5, seed 42, 64x64.
fn generate<'a>(prompt: &'a str, negative: &'a str, model: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        prompt,
        "--model",
        model,
        "--negative-prompt",
        negative,
        "--steps",
        "10",
        "--seed",
        "42",
        "--width",
        "64",
        "--height",
        "64",
        "--scheduler",
        "pndm",
        "-q",
        "--force",
        "-o",
        out,
    ]
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = sd(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn max_difference(a: &PathBuf, b: &PathBuf) -> u8 {
    let a = sd_pipeline::image_crate::open(a).unwrap().to_rgb8();
    let b = sd_pipeline::image_crate::open(b).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    a.pixels()
        .zip(b.pixels())
        .flat_map(|(x, y)| x.0.into_iter().zip(y.0).map(|(p, q)| p.abs_diff(q)))
        .max()
        .unwrap()
}

#[test]
fn a_prompt_tag_finds_its_file_in_the_lora_folder() {
    let dir = TempDir::new("lora-tag");
    let out = dir.path("out.png");
    let model = folder("tiny-sd1");
    let lora_dir = lora("");
    let mut args = generate(
        "a photo of a cat <lora:kohya:0.5:0.8>",
        "blurry",
        s(&model),
        s(&out),
    );
    args.extend(["--lora-dir", s(&lora_dir)]);
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("lora: kohya (te 0.5, unet 0.8)"),
        "{stdout}"
    );
    let diff = max_difference(&out, &lora("kohya-te0.5-unet0.8.png"));
    assert!(diff <= 2, "{diff} levels from diffusers");

    // A tag whose file is not in the folder names the tag and the folder.
    let mut args = generate("a cat <lora:nosuch:1>", "", s(&model), s(&out));
    args.extend(["--lora-dir", s(&lora_dir)]);
    let (ok, _, stderr) = run(&args);
    assert!(!ok);
    assert!(
        stderr.contains("<lora:nosuch>") && stderr.contains("no nosuch.safetensors"),
        "{stderr}"
    );
}

#[test]
fn lora_arguments_take_a_multiplier() {
    let dir = TempDir::new("lora-arg");
    let out = dir.path("out.png");
    let model = folder("tiny-sd1");
    let peft = format!("{}:1", lora("peft.safetensors").display());
    let mut args = generate("a photo of a cat", "blurry", s(&model), s(&out));
    args.extend(["--lora", &peft, "--strict"]);
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("lora: peft (te 1, unet 1)"), "{stdout}");
    let diff = max_difference(&out, &lora("peft.png"));
    assert!(diff <= 2, "{diff} levels from diffusers");

    // A tag asking for other multipliers than the file was loaded at is refused.
    let mut args = generate("a cat <lora:peft:0.3>", "", s(&model), s(&out));
    args.extend(["--lora", &peft]);
    let (ok, _, stderr) = run(&args);
    assert!(!ok);
    assert!(
        stderr.contains("--prompt") || stderr.contains("prompt"),
        "{stderr}"
    );
    assert!(stderr.contains("<lora:peft:0.3:0.3>"), "{stderr}");
}

#[test]
fn embeddings_from_a_folder_match_diffusers() {
    let dir = TempDir::new("embeddings");
    let embeddings = dir.path("embeddings");
    std::fs::create_dir_all(&embeddings).unwrap();
    for name in ["tinyemb.pt", "negemb.safetensors", "dfemb.bin"] {
        std::fs::copy(lora(name), embeddings.join(name)).unwrap();
    }
    std::fs::write(embeddings.join("preview.png"), b"not read").unwrap();
    let out = dir.path("out.png");
    let model = folder("tiny-sd1");
    let mut args = generate(
        "a photo of tinyemb cat, dfemb",
        "blurry, negemb",
        s(&model),
        s(&out),
    );
    args.extend(["--embeddings-dir", s(&embeddings)]);
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("embeddings: dfemb (1 vectors), negemb (1 vectors), tinyemb (2 vectors)"),
        "{stdout}"
    );
    let diff = max_difference(&out, &lora("embeddings.png"));
    assert!(diff <= 2, "{diff} levels from diffusers");

    // A LoRA file in the embeddings folder is an error naming it.
    std::fs::copy(
        lora("kohya.safetensors"),
        embeddings.join("kohya.safetensors"),
    )
    .unwrap();
    let (ok, _, stderr) = run(&args);
    assert!(!ok);
    assert!(stderr.contains("kohya.safetensors"), "{stderr}");
}

#[test]
fn inspect_describes_lora_and_embedding_files() {
    let json = |path: PathBuf| -> Value {
        let (ok, stdout, stderr) = run(&["inspect", "--json", s(&path)]);
        assert!(ok, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let kohya = json(lora("kohya.safetensors"));
    assert_eq!(kohya["kind"], "lora");
    assert_eq!(kohya["styles"], serde_json::json!(["kohya-ss"]));
    assert!(
        kohya["algorithms"]["LoCon"].as_u64().unwrap() > 0,
        "{kohya}"
    );
    assert!(kohya["networks"]["unet"].as_u64().unwrap() > 0, "{kohya}");
    assert!(
        kohya["networks"]["text_encoder"].as_u64().unwrap() > 0,
        "{kohya}"
    );
    assert_eq!(kohya["unknown_key_count"], 0);

    let loha = json(lora("loha.safetensors"));
    assert!(loha["algorithms"]["LoHa"].as_u64().unwrap() > 0, "{loha}");
    let lokr = json(lora("lokr.pt"));
    assert!(lokr["algorithms"]["LoKr"].as_u64().unwrap() > 0, "{lokr}");

    let emb = json(lora("tinyemb.pt"));
    assert_eq!(emb["kind"], "textual_inversion");
    assert_eq!(emb["trigger"], "tinyemb");
    assert_eq!(
        (emb["vectors"].as_u64(), emb["width"].as_u64()),
        (Some(2), Some(8))
    );

    let (ok, text, _) = run(&["inspect", s(&lora("kohya.safetensors"))]);
    assert!(ok);
    assert!(
        text.contains("kind:          LoRA / LyCORIS (kohya-ss names"),
        "{text}"
    );
    assert!(
        text.contains("blocks:") && text.contains("unet down_blocks.0"),
        "{text}"
    );
}
