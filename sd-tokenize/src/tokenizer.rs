//! [`ClipTokenizer`]: cleanup, pre-tokenizer, byte-level BPE, windows.

use std::path::Path;
use std::sync::OnceLock;

use fancy_regex::Regex;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Model;

use crate::byte_level::{self, byte_to_char_table};
use crate::clean::clean;
use crate::error::{Error, Result};
use crate::vocab::{self, VocabMerges, BOS_TEXT, EOS_TEXT};
use crate::windows::{split_windows, Framing, Padding, PromptPiece, Window};

/// CLIP's pre-tokenizer: contractions, letter runs, single digits, runs of anything else.
///
/// The original compiles it with `re.IGNORECASE` (Python's `regex` module). On lowercased text
/// that changes two things, both kept here: `'ſ` counts as the contraction `'s`, and U+0345
/// (combining ypogegrammeni, a mark whose case variants are letters) matches no alternative at
/// all, so the original silently drops it. Scoping `(?i)` to the contractions and leaving U+0345
/// out of the last class reproduces both; a case-insensitive `\p{L}` in Rust would instead treat
/// U+0345 as a letter.
const PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

/// Words the BPE cache remembers (prompt vocabularies are small; this bounds memory).
const CACHE_WORDS: usize = 50_000;

/// The original CLIP tokenizer (OpenAI's `simple_tokenizer.py`, open_clip's `SimpleTokenizer`).
///
/// `Default` uses the bundled vocabulary and SD 1.x padding.
#[derive(Clone)]
pub struct ClipTokenizer {
    bpe: BPE,
    bytes: [char; 256],
    pattern: Regex,
    framing: Framing,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.bpe.get_vocab_size())
            .field("framing", &self.framing)
            .finish()
    }
}

impl Default for ClipTokenizer {
    /// The bundled CLIP vocabulary with eos padding (SD 1.x). Built once per process (about a
    /// third of a second), then cloned.
    fn default() -> Self {
        static BUNDLED: OnceLock<ClipTokenizer> = OnceLock::new();
        // The bundled data is fixed and checked by the tests, so this cannot fail at run time.
        #[allow(clippy::expect_used)]
        BUNDLED
            .get_or_init(|| Self::bundled().expect("the bundled CLIP vocabulary builds"))
            .clone()
    }
}

impl ClipTokenizer {
    /// The bundled CLIP vocabulary with eos padding (SD 1.x); `Default` without the `expect`.
    pub fn bundled() -> Result<Self> {
        Self::build(vocab::bundled()?)
    }

    /// Reads a model's `tokenizer/` folder: `vocab.json` + `merges.txt` if present, else
    /// `tokenizer.json`. A `pad_token` in `special_tokens_map.json` / `tokenizer_config.json`
    /// picks the padding (`!`, id 0, as in SD 2.x → [`Padding::Zero`]).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let (vocab_json, merges_txt) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let tokenizer_json = dir.join("tokenizer.json");
        let tokenizer = if vocab_json.is_file() && merges_txt.is_file() {
            Self::from_vocab_merges(&vocab_json, &merges_txt)?
        } else if tokenizer_json.is_file() {
            Self::from_tokenizer_json(&tokenizer_json)?
        } else {
            return Err(Error::NoTokenizerFiles {
                dir: dir.to_owned(),
            });
        };
        tokenizer.with_padding_of(dir)
    }

    /// Like [`from_dir`](Self::from_dir), but a folder without vocabulary files (only
    /// `tokenizer_config.json`, say) gets the bundled CLIP vocabulary, still padded as its
    /// config says. A missing folder also gives the bundled vocabulary with eos padding.
    pub fn for_model_dir(dir: &Path) -> Result<Self> {
        match Self::from_dir(dir) {
            Err(Error::NoTokenizerFiles { .. }) => Self::default().with_padding_of(dir),
            other => other,
        }
    }

    /// Applies the padding named by the `pad_token` of `dir`'s config files, if any.
    fn with_padding_of(mut self, dir: &Path) -> Result<Self> {
        if let Some(pad) = vocab::pad_token(dir)? {
            match self.bpe.token_to_id(&pad) {
                Some(0) => self.framing.padding = Padding::Zero,
                Some(id) if id == self.framing.eos => self.framing.padding = Padding::Eos,
                _ => {}
            }
        }
        Ok(self)
    }

    /// Reads `vocab.json` and `merges.txt` (eos padding).
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        Self::build(vocab::from_vocab_merges(vocab, merges)?)
    }

    /// Reads a Hugging Face `tokenizer.json` (eos padding).
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        Self::build(vocab::from_tokenizer_json(path)?)
    }

    fn build(source: VocabMerges) -> Result<Self> {
        let special = |text: &str| {
            source.vocab.get(text).copied().ok_or_else(|| Error::Bpe {
                source_name: source.origin.clone(),
                reason: format!("the vocabulary has no {text}"),
            })
        };
        let (bos, eos) = (special(BOS_TEXT)?, special(EOS_TEXT)?);
        let comma = source.vocab.get(",</w>").copied();
        let vocab: Vocab = source.vocab.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, source.merges)
            .end_of_word_suffix("</w>".to_owned())
            .cache_capacity(CACHE_WORDS)
            .build()
            .map_err(|e| Error::Bpe {
                source_name: source.origin.clone(),
                reason: e.to_string(),
            })?;
        let pattern = Regex::new(PATTERN).map_err(|e| Error::Bpe {
            source_name: source.origin.clone(),
            reason: format!("pre-tokenizer pattern: {e}"),
        })?;
        Ok(Self {
            bpe,
            bytes: byte_to_char_table(),
            pattern,
            framing: Framing {
                bos,
                eos,
                comma,
                padding: Padding::Eos,
            },
        })
    }

    /// The same tokenizer with another padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.framing.padding = padding;
        self
    }

    /// The padding in use.
    pub fn padding(&self) -> Padding {
        self.framing.padding
    }

    /// Start-of-text id (49406 in CLIP's vocabulary).
    pub fn bos(&self) -> u32 {
        self.framing.bos
    }

    /// End-of-text id (49407 in CLIP's vocabulary).
    pub fn eos(&self) -> u32 {
        self.framing.eos
    }

    /// Number of tokens in the vocabulary (49,408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.bpe.get_vocab_size()
    }

    /// Cleans `text` as CLIP does and returns its BPE ids, without bos/eos or padding.
    /// Text spelling a special token (`<|endoftext|>`) is ordinary text: it never yields bos/eos.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = clean(text);
        let mut ids = Vec::with_capacity(cleaned.len() / 3 + 1);
        let mut word = String::new();
        for piece in self.pattern.find_iter(&cleaned) {
            // The pattern has no look-around or backreference, so matching cannot fail.
            let Ok(piece) = piece else { continue };
            byte_level::encode(&self.bytes, piece.as_str(), &mut word);
            let tokens = self.bpe.tokenize(&word).map_err(|e| Error::Tokenize {
                word: word.clone(),
                reason: e.to_string(),
            })?;
            ids.extend(tokens.iter().map(|t| t.id));
        }
        Ok(ids)
    }

    /// The vocabulary string of `id`, such as `"cat</w>"` (byte-level characters, so a space
    /// inside a token shows as `Ġ`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.bpe.id_to_token(id)
    }

    /// The id of a vocabulary string such as `",</w>"`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.bpe.token_to_id(text)
    }

    /// [`tokenize`](Self::tokenize), then [`windows`](Self::windows) with every weight 1.0.
    pub fn encode(&self, text: &str) -> Result<Vec<Window>> {
        let pieces: Vec<PromptPiece> = self
            .tokenize(text)?
            .into_iter()
            .map(|id| PromptPiece::Token { id, weight: 1.0 })
            .collect();
        Ok(self.windows(&pieces))
    }

    /// Splits weighted tokens into 77-token windows, A1111's way (see [`crate::windows`]).
    pub fn windows(&self, pieces: &[PromptPiece]) -> Vec<Window> {
        split_windows(pieces, &self.framing)
    }
}
