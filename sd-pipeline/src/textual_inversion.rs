//! Textual-inversion embeddings in a pipeline, A1111's way: each file's name is a word that,
//! written in a prompt, stands for the file's `n` vectors (taking `n` token slots of a window).
//!
//! The vectors become extra rows of the text encoder's token table, with ids from the
//! vocabulary size up; a prompt's tokens are scanned for each name's BPE ids (the longest
//! name first, as A1111's `find_embedding_at_position`) and those ids are replaced by the
//! embedding's slots.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use sd_clip::ClipTextConfig;
use sd_tokenize::{ClipTokenizer, PromptPiece};

use crate::checkpoint::{NamedTensors, TextualInversion};
use crate::error::{Error, Result};

/// One embedding's place in the token table and the ids that trigger it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    trigger: Vec<u32>,
    first_id: u32,
    count: u32,
}

/// The embeddings a pipeline was built with.
#[derive(Debug, Clone, Default)]
pub struct Embeddings {
    /// Longest trigger first.
    entries: Vec<Entry>,
    /// `[total vectors, width]` in f32, the rows appended to the token table.
    rows: Option<Tensor>,
}

impl Embeddings {
    /// Reads `paths` for a text encoder of `config`, triggered by words as `tokenizer` splits
    /// them.
    ///
    /// # Errors
    /// A file that is no embedding, whose width is not the text encoder's, or whose name is
    /// another file's or yields no tokens: the message names the file.
    pub fn load(
        paths: &[PathBuf],
        tokenizer: &ClipTokenizer,
        config: &ClipTextConfig,
    ) -> Result<Self> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut rows = Vec::new();
        let mut next_id = config.vocab_size as u32;
        for path in paths {
            let fail = |message: String| Error::Embedding {
                path: path.clone(),
                message,
            };
            let embedding = TextualInversion::open(path)?;
            if embedding.width() != config.hidden_size {
                return Err(fail(format!(
                    "its vectors are {} wide; this model's text encoder takes {} ({})",
                    embedding.width(),
                    config.hidden_size,
                    match embedding.width() {
                        768 => "an SD 1.x embedding",
                        1024 => "an SD 2.x embedding",
                        _ => "trained for another model",
                    }
                )));
            }
            let name = embedding.name().to_string();
            if let Some(other) = entries.iter().find(|e| e.name == name) {
                return Err(fail(format!(
                    "the name {} is taken by another embedding file ({})",
                    other.name, name
                )));
            }
            let trigger = tokenizer.tokenize(&name)?;
            if trigger.is_empty() {
                return Err(fail(format!("its name {name:?} has no tokens to match")));
            }
            let count = embedding.len() as u32;
            entries.push(Entry {
                name,
                trigger,
                first_id: next_id,
                count,
            });
            next_id += count;
            rows.push(embedding.vectors().clone());
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.trigger.len()));
        let rows = match rows.is_empty() {
            true => None,
            false => Some(Tensor::cat(&rows, 0)?),
        };
        Ok(Self { entries, rows })
    }

    /// Whether no embedding was loaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The trigger words, with their vector counts.
    pub fn names(&self) -> Vec<(String, usize)> {
        let mut names: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.count as usize))
            .collect();
        names.sort();
        names
    }

    /// `ids` (one emphasis span's tokens) as prompt pieces of `weight`, with each embedding's
    /// trigger replaced by its slots.
    pub fn pieces(&self, ids: &[u32], weight: f32) -> Vec<PromptPiece> {
        let mut pieces = Vec::with_capacity(ids.len());
        let mut i = 0;
        while i < ids.len() {
            let found = self
                .entries
                .iter()
                .find(|e| ids[i..].starts_with(&e.trigger));
            match found {
                Some(e) => {
                    pieces.push(PromptPiece::Embedding {
                        first_id: e.first_id,
                        count: e.count,
                        weight,
                    });
                    i += e.trigger.len();
                }
                None => {
                    pieces.push(PromptPiece::Token { id: ids[i], weight });
                    i += 1;
                }
            }
        }
        pieces
    }

    /// The text encoder's weights and config with the embeddings' rows appended to the token
    /// table (in the table's dtype); unchanged when there are none.
    pub(crate) fn extend(
        &self,
        tensors: &mut NamedTensors,
        config: &ClipTextConfig,
    ) -> Result<ClipTextConfig> {
        let Some(rows) = &self.rows else {
            return Ok(config.clone());
        };
        let key = tensors
            .keys()
            .find(|k| k.ends_with("embeddings.token_embedding.weight"))
            .cloned()
            .ok_or_else(|| {
                Error::model(
                    "text_encoder",
                    "no embeddings.token_embedding.weight to add the embeddings to",
                )
            })?;
        let table = &tensors[&key];
        let dtype = match table.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => table.dtype(),
            _ => DType::F32,
        };
        let table = Tensor::cat(&[table.to_dtype(dtype)?, rows.to_dtype(dtype)?], 0)?;
        let mut config = config.clone();
        config.vocab_size = table.dim(0)?;
        tensors.insert(key, table);
        Ok(config)
    }
}
