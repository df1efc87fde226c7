//! `sd tokenize`, run as a user runs it. Expected ids are open_clip's `SimpleTokenizer` output
//! (a 320, masterpiece 12066, blurry 21977, cat 2368, portrait 5352, of 539, female 3970,
//! zombie 11819, `,` 267, digital 2794, art 794); weights are A1111's f64 products as f32.

mod common;

use std::io::Read;
use std::path::Path;

use common::{sd, TempDir};

use serde_json::Value;

const BOS: u64 = 49406;
const EOS: u64 = 49407;

fn json(args: &[&str]) -> Value {
    let out = sd(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn ids(v: &Value, window: usize) -> Vec<u64> {
    v["input_ids"][window]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn weights(v: &Value, window: usize) -> Vec<f64> {
    v["weights"][window]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_weights(got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), 77);
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        // JSON holds the f32 in its shortest form; compare as f32.
        assert_eq!(*g as f32, *e as f32, "weight {i}: {got:?}");
    }
    assert!(got[expected.len()..].iter().all(|&w| w == 1.0));
}

#[test]
fn json_has_the_ids_and_weights_of_an_a1111_prompt() {
    let v = json(&["tokenize", "--json", "a ((masterpiece)) [blurry] (cat:1.3)"]);
    assert_eq!(v["input_ids"].as_array().unwrap().len(), 1);
    let ids = ids(&v, 0);
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[..6], [BOS, 320, 12066, 21977, 2368, EOS]);
    assert!(ids[6..].iter().all(|&id| id == EOS), "SD 1.x pads with eos");
    assert_weights(&weights(&v, 0), &[1.0, 1.0, 1.1 * 1.1, 1.0 / 1.1, 1.3, 1.0]);
    assert_eq!(v["token_count"], 4);
    assert_eq!(v["padding"], "eos");
    assert_eq!(v["tokens"][0][2], "masterpiece</w>");
}

#[test]
fn several_arguments_are_one_prompt_and_negative_weights_pass_through() {
    let v = json(&[
        "tokenize",
        "--json",
        "portrait of female",
        "(zombie):-1,",
        "digital art",
    ]);
    assert_eq!(
        ids(&v, 0)[..9],
        [BOS, 5352, 539, 3970, 11819, 267, 2794, 794, EOS]
    );
    assert_weights(
        &weights(&v, 0),
        &[1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0],
    );
}

#[test]
fn break_and_long_prompts_give_more_windows() {
    let v = json(&["tokenize", "--json", "a cat BREAK (cat)"]);
    assert_eq!(ids(&v, 0)[..4], [BOS, 320, 2368, EOS]);
    assert_eq!(ids(&v, 1)[..3], [BOS, 2368, EOS]);
    assert_weights(&weights(&v, 1), &[1.0, 1.1, 1.0]);
    assert_eq!(v["window_token_counts"], serde_json::json!([2, 1]));

    let long = "cat ".repeat(80);
    let v = json(&["tokenize", "--json", &long]);
    assert_eq!(v["window_token_counts"], serde_json::json!([75, 5]));
}

#[test]
fn table_shows_tokens_ids_weights_and_the_count() {
    let out = sd(&["tokenize", "a ((masterpiece)) [blurry] (cat:1.3)"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("window 1 of 1: 4 of 75 tokens\n"),
        "{text}"
    );
    let row = |token: &str, id: &str, weight: &str| {
        text.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() == 4 && cols[1] == token && cols[2] == id && cols[3] == weight
        })
    };
    assert!(row("masterpiece</w>", "12066", "1.21"), "{text}");
    assert!(row("blurry</w>", "21977", "0.90909094"), "{text}");
    assert!(row("cat</w>", "2368", "1.3"), "{text}");
    assert!(
        text.contains("padding: 71 x <|endoftext|> (49407)"),
        "{text}"
    );
    assert!(text.ends_with("4 tokens in 1 window of 75\n"), "{text}");
}

/// Writes `tokenizer/vocab.json` + `merges.txt` as a diffusers model folder has them, from the
/// BPE file sd-tokenize bundles (the vocabulary is built from it as CLIP builds its own).
fn write_model(dir: &Path) {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sd-tokenize/vocab/bpe_simple_vocab_16e6.txt.gz"
    ))
    .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let merges: Vec<&str> = text.split('\n').skip(1).take(49152 - 256 - 2).collect();
    // CLIP's vocabulary: the 256 byte characters, the same with `</w>`, one token per merge,
    // then the two special tokens.
    let bytes = byte_chars();
    let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(id, t)| (t, Value::from(id)))
        .collect();
    let tok = dir.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    std::fs::write(tok.join("vocab.json"), serde_json::to_string(&map).unwrap()).unwrap();
    let mut merges_txt = String::from("#version: 0.2\n");
    for m in merges {
        merges_txt.push_str(m);
        merges_txt.push('\n');
    }
    std::fs::write(tok.join("merges.txt"), merges_txt).unwrap();
}

/// GPT-2's byte-to-character table, in CLIP's vocabulary order.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~')).collect();
    printable.extend(u32::from('¡')..=u32::from('¬'));
    printable.extend(u32::from('®')..=u32::from('ÿ'));
    let mut chars: Vec<char> = printable
        .iter()
        .map(|&b| char::from_u32(b).unwrap())
        .collect();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars.push(char::from_u32(256 + n).unwrap());
            n += 1;
        }
    }
    chars
}

#[test]
fn model_folder_tokenizer_and_its_padding() {
    let dir = TempDir::new("sd1");
    write_model(&dir.0);
    let model = dir.0.to_str().unwrap();
    let bundled = json(&["tokenize", "--json", "a photo of a (cat:1.2)"]);
    let sd1 = json(&[
        "tokenize",
        "--json",
        "--model",
        model,
        "a photo of a (cat:1.2)",
    ]);
    assert_eq!(sd1["input_ids"], bundled["input_ids"]);
    assert_eq!(sd1["weights"], bundled["weights"]);
    assert_eq!(sd1["padding"], "eos");

    // SD 2.x: the tokenizer config names `!` (id 0) as the pad token.
    std::fs::write(
        dir.0.join("tokenizer/tokenizer_config.json"),
        r#"{"pad_token": "!", "model_max_length": 77}"#,
    )
    .unwrap();
    let sd2 = json(&[
        "tokenize",
        "--json",
        "--model",
        model,
        "a photo of a (cat:1.2)",
    ]);
    let ids = ids(&sd2, 0);
    assert_eq!(ids[..7], [BOS, 320, 1125, 539, 320, 2368, EOS]);
    assert!(
        ids[7..].iter().all(|&id| id == 0),
        "SD 2.x pads with 0: {ids:?}"
    );
    assert_eq!(sd2["padding"], "zero");
    assert_weights(&weights(&sd2, 0), &[1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.0]);
}

#[test]
fn errors_name_the_argument() {
    let out = sd(&["tokenize", "--model", "/nonexistent/model", "cat"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--model /nonexistent/model"), "{err}");

    let dir = TempDir::new("empty");
    let out = sd(&["tokenize", "--model", dir.0.to_str().unwrap(), "cat"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--model") && err.contains("no tokenizer files"),
        "{err}"
    );

    let out = sd(&["tokenize"]);
    assert!(!out.status.success(), "a prompt is required");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROMPT"));
}
