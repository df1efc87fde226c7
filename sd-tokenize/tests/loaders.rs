//! The file loaders, fed files written from the bundled vocabulary (a second copy of the full
//! vocabulary is not committed) and broken files.

use std::io::Read;
use std::path::PathBuf;

use sd_tokenize::{ClipTokenizer, Error, Padding};

const PROMPTS: [&str; 4] = [
    "a photo of a cat",
    "photo of a couch, photorealistic",
    "caf&eacute; \u{FB01}sh it\u{2019}s \u{3A3}\u{391}\u{3A3} \u{1F44D}\u{1F3FD}",
    "<|endoftext|> 1234 supercalifragilisticexpialidocious",
];

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sd-tokenize-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Token → id pairs of a vocabulary.
type Vocab = Vec<(String, u32)>;
/// Ranked merges.
type Merges = Vec<(String, String)>;

/// The bundled vocabulary as token → id pairs, and its 48,894 merges.
fn bundled() -> (Vocab, Merges) {
    let t = ClipTokenizer::default();
    let vocab = (0..t.vocab_size() as u32)
        .map(|id| (t.token_text(id).unwrap(), id))
        .collect();
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/vocab/bpe_simple_vocab_16e6.txt.gz"
    ))
    .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let merges = text
        .split('\n')
        .skip(1)
        .take(48894)
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_owned(), b.to_owned())
        })
        .collect();
    (vocab, merges)
}

fn write_diffusers(dir: &std::path::Path) {
    let (vocab, merges) = bundled();
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.into_iter().map(|(t, id)| (t, id.into())).collect();
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&map).unwrap()).unwrap();
    let mut text = String::from("#version: 0.2\n");
    for (a, b) in merges {
        text.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(dir.join("merges.txt"), text).unwrap();
}

fn write_tokenizer_json(dir: &std::path::Path, pairs: bool) {
    let (vocab, merges) = bundled();
    let specials: Vec<serde_json::Value> = vocab[49406..]
        .iter()
        .map(|(t, id)| serde_json::json!({"id": id, "content": t, "special": true}))
        .collect();
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.into_iter().map(|(t, id)| (t, id.into())).collect();
    let merges: Vec<serde_json::Value> = merges
        .into_iter()
        .map(|(a, b)| {
            if pairs {
                serde_json::json!([a, b])
            } else {
                format!("{a} {b}").into()
            }
        })
        .collect();
    let json = serde_json::json!({
        "added_tokens": specials,
        "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": map, "merges": merges},
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
}

fn assert_same_as_bundled(t: &ClipTokenizer) {
    let bundled = ClipTokenizer::default();
    assert_eq!(t.vocab_size(), 49408);
    assert_eq!((t.bos(), t.eos()), (49406, 49407));
    for p in PROMPTS {
        assert_eq!(t.tokenize(p).unwrap(), bundled.tokenize(p).unwrap(), "{p}");
        assert_eq!(t.encode(p).unwrap(), bundled.encode(p).unwrap(), "{p}");
    }
}

#[test]
fn diffusers_vocab_and_merges() {
    let dir = TempDir::new("diffusers");
    write_diffusers(&dir.0);
    let t = ClipTokenizer::from_vocab_merges(&dir.0.join("vocab.json"), &dir.0.join("merges.txt"))
        .unwrap();
    assert_same_as_bundled(&t);
    let t = ClipTokenizer::from_dir(&dir.0).unwrap();
    assert_same_as_bundled(&t);
    assert_eq!(t.padding(), Padding::Eos);
}

#[test]
fn hf_tokenizer_json_both_merge_spellings() {
    for pairs in [false, true] {
        let dir = TempDir::new(if pairs { "json-pairs" } else { "json-strings" });
        write_tokenizer_json(&dir.0, pairs);
        assert_same_as_bundled(
            &ClipTokenizer::from_tokenizer_json(&dir.0.join("tokenizer.json")).unwrap(),
        );
        assert_same_as_bundled(&ClipTokenizer::from_dir(&dir.0).unwrap());
    }
}

#[test]
fn pad_token_in_the_folder_picks_the_padding() {
    // SD 2.x's tokenizer folder: special_tokens_map.json names "!" (id 0) as pad token.
    let dir = TempDir::new("sd2");
    write_diffusers(&dir.0);
    std::fs::write(
        dir.0.join("special_tokens_map.json"),
        r#"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!"}"#,
    )
    .unwrap();
    let t = ClipTokenizer::from_dir(&dir.0).unwrap();
    assert_eq!(t.padding(), Padding::Zero);
    assert_eq!(*t.encode("cat").unwrap()[0].ids.last().unwrap(), 0);
    // SD 1.x's: tokenizer_config.json with the pad token as an object naming <|endoftext|>.
    std::fs::remove_file(dir.0.join("special_tokens_map.json")).unwrap();
    std::fs::write(
        dir.0.join("tokenizer_config.json"),
        r#"{"pad_token": {"content": "<|endoftext|>", "lstrip": false}}"#,
    )
    .unwrap();
    assert_eq!(
        ClipTokenizer::from_dir(&dir.0).unwrap().padding(),
        Padding::Eos
    );
}

#[test]
fn a_model_folder_without_vocabulary_files_uses_the_bundled_one_with_its_padding() {
    // The pipeline fixtures keep only tokenizer_config.json: SD 2.x's names "!" as pad token.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pipeline");
    let sd2 = ClipTokenizer::for_model_dir(&root.join("tiny-sd2/tokenizer")).unwrap();
    assert_eq!(sd2.padding(), Padding::Zero);
    let sd1 = ClipTokenizer::for_model_dir(&root.join("tiny-sd1/tokenizer")).unwrap();
    assert_eq!(sd1.padding(), Padding::Eos);
    assert_same_as_bundled(&sd1);
    // No folder at all: the bundled vocabulary, eos padding.
    let none = ClipTokenizer::for_model_dir(&root.join("no-such-folder")).unwrap();
    assert_eq!(none.padding(), Padding::Eos);
    // A folder with vocabulary files still reads them (and a broken one still fails).
    let dir = TempDir::new("model-dir");
    write_diffusers(&dir.0);
    assert_same_as_bundled(&ClipTokenizer::for_model_dir(&dir.0).unwrap());
    std::fs::write(dir.0.join("vocab.json"), "not json").unwrap();
    assert!(ClipTokenizer::for_model_dir(&dir.0).is_err());
}

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new("errors");
    let err = ClipTokenizer::from_dir(&dir.0).unwrap_err();
    assert!(matches!(err, Error::NoTokenizerFiles { .. }), "{err}");
    assert!(err.to_string().contains(&*dir.0.to_string_lossy()), "{err}");

    let vocab = dir.0.join("vocab.json");
    let merges = dir.0.join("merges.txt");
    std::fs::write(&vocab, r#"{"a": 0, "b": 1, "ab</w>": 2, "a</w>": 3, "b</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6}"#).unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("merges.txt"), "{err}");

    std::fs::write(&merges, "#version: 0.2\na b\nthree symbols here\n").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(
        err.to_string().contains("merges.txt") && err.to_string().contains("line 3"),
        "{err}"
    );

    // A merge whose symbols the vocabulary lacks.
    std::fs::write(&merges, "#version: 0.2\na b\nx y\n").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(
        matches!(err, Error::Bpe { .. }) && err.to_string().contains("merges.txt"),
        "{err}"
    );

    // The tiny vocabulary works once its merges are consistent.
    std::fs::write(&merges, "#version: 0.2\na b</w>\n").unwrap();
    let t = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap();
    assert_eq!(t.tokenize("ab a").unwrap(), vec![2, 3]);

    std::fs::write(&vocab, "{not json").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(
        matches!(err, Error::BadFile { .. }) && err.to_string().contains("vocab.json"),
        "{err}"
    );

    std::fs::write(&vocab, r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("<|startoftext|>"), "{err}");

    let json = dir.0.join("tokenizer.json");
    std::fs::write(&json, r#"{"model": {"type": "WordPiece", "vocab": {}}}"#).unwrap();
    let err = ClipTokenizer::from_tokenizer_json(&json).unwrap_err();
    assert!(
        err.to_string().contains("tokenizer.json") && err.to_string().contains("WordPiece"),
        "{err}"
    );
    std::fs::write(
        &json,
        r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_tokenizer_json(&json).unwrap_err();
    assert!(err.to_string().contains("merge 0"), "{err}");
    let err = ClipTokenizer::from_tokenizer_json(&dir.0.join("missing.json")).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("missing.json"),
        "{err}"
    );
}
