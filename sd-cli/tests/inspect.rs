//! `sd inspect`, run as a user runs it, on the committed fixtures.
//!
//! fixtures/checkpoint/meta.json (tools/fixtures/checkpoint.py) says each single file is made
//! from a diffusers folder under fixtures/pipeline/, and the script proves diffusers' converters
//! turn the file back into that folder's exact state dict. So the expected parameter counts are
//! summed here from the folder's own `.safetensors` files, read with candle alone.

mod common;

use std::path::Path;

use common::{fixture, folder, root, sd, TempDir};

use candle_core::Device;
use serde_json::Value;

fn inspect_json(path: &Path) -> Value {
    let out = sd(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// `sd inspect PATH` fails; its stderr.
fn inspect_error(path: &Path) -> String {
    let out = sd(&["inspect", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{}: {err}", path.display());
    assert!(out.stdout.is_empty(), "nothing on stdout: {err}");
    err
}

/// The `tensors` meta.json records for a fixture file.
fn meta_tensors(file: &str) -> u64 {
    let text = std::fs::read_to_string(fixture("meta.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    meta["files"][file]["tensors"].as_u64().unwrap()
}

/// Parameters of one network of a diffusers folder, as stored: (elements, tensors). The
/// `position_ids` buffer some text encoders carry is not a parameter.
fn folder_network(name: &str, file: &str) -> (u64, u64) {
    let tensors = candle_core::safetensors::load(folder(name).join(file), &Device::Cpu).unwrap();
    let weights: Vec<_> = tensors
        .iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .collect();
    let elements = weights.iter().map(|(_, t)| t.elem_count() as u64).sum();
    (elements, weights.len() as u64)
}

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
const TEXT: &str = "text_encoder/model.safetensors";

fn assert_counts_of_folder(v: &Value, name: &str) {
    for (component, file) in [("unet", UNET), ("vae", VAE), ("text_encoder", TEXT)] {
        let (parameters, _) = folder_network(name, file);
        assert_eq!(
            v["components"][component]["parameters"].as_u64(),
            Some(parameters),
            "{name} {component}: {v}"
        );
    }
    let total: u64 = [UNET, VAE, TEXT]
        .iter()
        .map(|f| folder_network(name, f).0)
        .sum();
    assert_eq!(v["parameters"].as_u64(), Some(total));
}

#[test]
fn sd1_safetensors_kind_dtypes_and_exact_parameter_counts() {
    let v = inspect_json(&fixture("tiny-sd1.safetensors"));
    assert_eq!(v["family"], "sd1");
    assert_eq!(v["inpainting"], false);
    assert_eq!(v["prediction"], "epsilon");
    assert_eq!(v["prediction_guessed"], false);
    assert_eq!(v["kind"], "SD 1.x, epsilon");
    assert_eq!(v["format"], "safetensors");
    assert_eq!(
        v["tensors"].as_u64(),
        Some(meta_tensors("tiny-sd1.safetensors"))
    );
    assert_counts_of_folder(&v, "tiny-sd1");
    // The script writes the UNet and VAE in f32 and the text encoder in f16, as the folder has them.
    let (_, unet_tensors) = folder_network("tiny-sd1", UNET);
    let (_, text_tensors) = folder_network("tiny-sd1", TEXT);
    assert_eq!(
        v["components"]["unet"]["dtypes"],
        serde_json::json!({ "f32": unet_tensors })
    );
    assert_eq!(
        v["components"]["text_encoder"]["dtypes"],
        serde_json::json!({ "f16": text_tensors })
    );
    assert_eq!(v["ema"], false);
    assert_eq!(v["ema_tensors"], 0);
    assert_eq!(v["unknown_key_count"], 0);
    let ignored: Vec<&str> = v["ignored_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(ignored.contains(&"alphas_cumprod"), "{ignored:?}");
}

#[test]
fn sd2_ckpt_is_a_zip_pickle_guessed_v_prediction() {
    let v = inspect_json(&fixture("tiny-sd2.ckpt"));
    assert_eq!(v["family"], "sd2");
    assert_eq!(v["inpainting"], false);
    assert_eq!(v["prediction"], "v_prediction");
    assert_eq!(
        v["prediction_guessed"], true,
        "a single file has no scheduler"
    );
    assert_eq!(v["format"], "ckpt_zip");
    assert_eq!(v["tensors"].as_u64(), Some(meta_tensors("tiny-sd2.ckpt")));
    // OpenCLIP's stacked in_proj counts once, as the folder's q, k and v together.
    assert_counts_of_folder(&v, "tiny-sd2");

    let out = sd(&["inspect", fixture("tiny-sd2.ckpt").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("kind:          SD 2.x, v-prediction (guessed"),
        "{text}"
    );
    assert!(
        text.contains("PyTorch pickle (zip format), 717 tensors"),
        "{text}"
    );
}

#[test]
fn text_report_has_human_and_exact_counts() {
    let out = sd(&["inspect", fixture("tiny-sd1.safetensors").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (unet, _) = folder_network("tiny-sd1", UNET);
    let (text_encoder, text_tensors) = folder_network("tiny-sd1", TEXT);
    let human = |n: u64| format!("{:.1} k", n as f64 / 1e3);
    let line = |title: &str| {
        text.lines()
            .find(|l| l.starts_with(title))
            .unwrap_or_else(|| panic!("no {title} line: {text}"))
            .to_string()
    };
    let unet_line = line("UNet:");
    assert!(
        unet_line.contains(&format!("{} parameters ({unet})", human(unet))),
        "{unet_line}"
    );
    let text_line = line("text encoder:");
    assert!(
        text_line.contains(&format!("({text_encoder})"))
            && text_line.contains(&format!("f16 x{text_tensors}")),
        "{text_line}"
    );
    assert_eq!(line("kind:"), "kind:          SD 1.x, epsilon");
    assert_eq!(line("ema:"), "ema:           no");
    assert_eq!(line("unknown:"), "unknown:       0 keys");
}

#[test]
fn unknown_keys_are_listed_twenty_then_counted() {
    let dir = TempDir::new("unknown");
    let mut tensors =
        candle_core::safetensors::load(fixture("tiny-sd1.safetensors"), &Device::Cpu).unwrap();
    let one = candle_core::Tensor::new(1f32, &Device::Cpu).unwrap();
    for i in 0..25 {
        tensors.insert(format!("lora_unet_block_{i:02}.alpha"), one.clone());
    }
    let path = dir.0.join("with-lora.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let v = inspect_json(&path);
    assert_eq!(v["unknown_key_count"], 25);
    assert_eq!(v["unknown_keys"][0], "lora_unet_block_00.alpha");
    assert_counts_of_folder(&v, "tiny-sd1");

    let out = sd(&["inspect", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("unknown:       25 keys\n"), "{text}");
    assert!(text.contains("  lora_unet_block_19.alpha\n"), "{text}");
    assert!(!text.contains("lora_unet_block_20"), "{text}");
    assert!(text.ends_with("  ... and 5 more\n"), "{text}");
}

#[test]
fn diffusers_folder_gives_the_same_facts_as_its_single_file() {
    let v = inspect_json(&folder("tiny-sd1"));
    assert_eq!(v["format"], "diffusers_folder");
    assert_eq!(v["family"], "sd1");
    assert_counts_of_folder(&v, "tiny-sd1");
    let file = inspect_json(&fixture("tiny-sd1.safetensors"));
    assert_eq!(v["components"], file["components"]);

    let sd2 = inspect_json(&folder("tiny-sd2"));
    assert_eq!(sd2["prediction"], "v_prediction");
    assert_eq!(
        sd2["prediction_guessed"], false,
        "read from scheduler_config.json"
    );
    let inpaint = inspect_json(&folder("tiny-sd1-inpaint"));
    assert_eq!(inpaint["inpainting"], true);
    assert_eq!(inpaint["kind"], "SD 1.x inpainting, epsilon");
}

#[test]
fn malicious_pickle_is_refused_naming_the_global() {
    let err = inspect_error(&fixture("malicious.ckpt"));
    assert!(err.contains("malicious.ckpt"), "{err}");
    // tools/fixtures/checkpoint.py: the object's __reduce__ calls os.system (posix.system).
    assert!(err.contains("posix.system"), "{err}");
    assert!(!err.contains("this pickle ran code"), "{err}");
}

#[test]
fn errors_name_the_file() {
    let missing = root().join("fixtures/checkpoint/no-such-model.safetensors");
    let err = inspect_error(&missing);
    assert!(err.contains("no-such-model.safetensors"), "{err}");

    let dir = TempDir::new("errors");
    for file in ["tiny-sd1.safetensors", "tiny-sd2.ckpt"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let cut = dir.0.join(format!("cut-{file}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = inspect_error(&cut);
        assert!(err.contains(&format!("cut-{file}")), "{err}");
    }

    // A UNet alone in diffusers names (fixtures/checkpoint/meta.json) is no single-file model.
    let err = inspect_error(&fixture("unet-b.safetensors"));
    assert!(
        err.contains("unet-b.safetensors") && err.contains("not a Stable Diffusion"),
        "{err}"
    );

    let err = inspect_error(&dir.0);
    assert!(
        err.contains(dir.0.to_str().unwrap()) && err.contains("single"),
        "{err}"
    );
}
