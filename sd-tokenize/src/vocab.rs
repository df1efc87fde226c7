//! Where the vocabulary and merges come from: the bundled CLIP file, a diffusers `tokenizer/`
//! folder (`vocab.json` + `merges.txt`) or a Hugging Face `tokenizer.json`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::byte_level::{byte_to_char_table, vocab_order};
use crate::error::{Error, Result};

/// CLIP's BPE merges as OpenAI published them (MIT licence; see `vocab/README.md`).
static BUNDLED_GZ: &[u8] = include_bytes!("../vocab/bpe_simple_vocab_16e6.txt.gz");

/// Merges CLIP uses: lines 1..=48894 of the file (line 0 is a version header; the file holds more
/// merges than the 49,408-token vocabulary has room for).
const CLIP_MERGES: usize = 49152 - 256 - 2;

/// The start-of-text token's spelling in Hugging Face vocabularies.
pub const BOS_TEXT: &str = "<|startoftext|>";
/// The end-of-text token's spelling in Hugging Face vocabularies.
pub const EOS_TEXT: &str = "<|endoftext|>";

/// A vocabulary (token string → id) and its ranked merges.
pub struct VocabMerges {
    /// Token string → id.
    pub vocab: HashMap<String, u32>,
    /// Merges, best first.
    pub merges: Vec<(String, String)>,
    /// Names the origin in error messages.
    pub origin: String,
}

/// Builds the vocabulary the way CLIP's `SimpleTokenizer` does: the 256 byte characters, the same
/// with `</w>`, one token per merge, then start- and end-of-text (ids 49406, 49407).
pub fn bundled() -> Result<VocabMerges> {
    let origin = "bundled vocabulary (bpe_simple_vocab_16e6.txt.gz)";
    let bad = |reason: &str| Error::BadFile {
        path: PathBuf::from(origin),
        reason: reason.into(),
    };
    let mut text = String::new();
    flate2::read::GzDecoder::new(BUNDLED_GZ)
        .read_to_string(&mut text)
        .map_err(|e| bad(&e.to_string()))?;
    let mut merges = Vec::with_capacity(CLIP_MERGES);
    for line in text.split('\n').skip(1).take(CLIP_MERGES) {
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
            _ => return Err(bad(&format!("malformed merge line {line:?}"))),
        }
    }
    if merges.len() != CLIP_MERGES {
        return Err(bad("too few merges"));
    }
    let bytes = vocab_order(&byte_to_char_table());
    let mut tokens: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    tokens.extend(bytes.iter().map(|c| format!("{c}</w>")));
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push(BOS_TEXT.to_owned());
    tokens.push(EOS_TEXT.to_owned());
    let vocab = tokens.into_iter().zip(0u32..).collect();
    Ok(VocabMerges {
        vocab,
        merges,
        origin: origin.to_owned(),
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn bad_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a diffusers/transformers `vocab.json` (token → id) and `merges.txt` (one `a b` pair a
/// line, after an optional `#version` header).
pub fn from_vocab_merges(vocab_path: &Path, merges_path: &Path) -> Result<VocabMerges> {
    let vocab: HashMap<String, u32> = serde_json::from_str(&read(vocab_path)?)
        .map_err(|e| bad_file(vocab_path, format!("not a token → id JSON object: {e}")))?;
    let text = read(merges_path)?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
            _ => {
                return Err(bad_file(
                    merges_path,
                    format!("line {}: expected two symbols", n + 1),
                ))
            }
        }
    }
    Ok(VocabMerges {
        vocab,
        merges,
        origin: merges_path.display().to_string(),
    })
}

/// Reads the BPE model of a Hugging Face `tokenizer.json` (`model.vocab`, `model.merges` as
/// `"a b"` strings or `["a", "b"]` pairs); added tokens count as vocabulary too.
pub fn from_tokenizer_json(path: &Path) -> Result<VocabMerges> {
    let json: serde_json::Value =
        serde_json::from_str(&read(path)?).map_err(|e| bad_file(path, format!("not JSON: {e}")))?;
    let model = json
        .get("model")
        .ok_or_else(|| bad_file(path, "no \"model\""))?;
    if let Some(kind) = model.get("type").and_then(|t| t.as_str()) {
        if kind != "BPE" {
            return Err(bad_file(
                path,
                format!("model type {kind:?}, expected \"BPE\""),
            ));
        }
    }
    let vocab_json = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| bad_file(path, "no \"model.vocab\" object"))?;
    let mut vocab = HashMap::with_capacity(vocab_json.len());
    for (token, id) in vocab_json {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad_file(path, format!("token {token:?} has no valid id")))?;
        vocab.insert(token.clone(), id);
    }
    for added in json
        .get("added_tokens")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        let content = added.get("content").and_then(|c| c.as_str());
        let id = added
            .get("id")
            .and_then(|i| i.as_u64())
            .and_then(|i| u32::try_from(i).ok());
        if let (Some(content), Some(id)) = (content, id) {
            vocab.entry(content.to_owned()).or_insert(id);
        }
    }
    let merges_json = model
        .get("merges")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad_file(path, "no \"model.merges\" array"))?;
    let mut merges = Vec::with_capacity(merges_json.len());
    for (n, m) in merges_json.iter().enumerate() {
        let pair = match m {
            serde_json::Value::String(s) => {
                let mut it = s.split(' ');
                match (it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), None) => Some((a.to_owned(), b.to_owned())),
                    _ => None,
                }
            }
            serde_json::Value::Array(v) => match v.as_slice() {
                [serde_json::Value::String(a), serde_json::Value::String(b)] => {
                    Some((a.clone(), b.clone()))
                }
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| bad_file(path, format!("merge {n} is not a pair")))?);
    }
    Ok(VocabMerges {
        vocab,
        merges,
        origin: path.display().to_string(),
    })
}

/// The `pad_token` a tokenizer folder names in `special_tokens_map.json` or
/// `tokenizer_config.json`, if any (a string, or an object with `content`).
pub fn pad_token(dir: &Path) -> Result<Option<String>> {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&read(&path)?)
            .map_err(|e| bad_file(&path, format!("not JSON: {e}")))?;
        let pad = match json.get("pad_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(obj) => obj
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
            None => None,
        };
        if pad.is_some() {
            return Ok(pad);
        }
    }
    Ok(None)
}
