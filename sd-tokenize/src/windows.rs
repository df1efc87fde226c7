//! Long prompts as 77-token windows, AUTOMATIC1111's way (`sd_hijack_clip.py`, `tokenize_line`).
//!
//! Tokens fill windows of [`TOKENS_PER_WINDOW`]; each window is written `bos, tokens, eos` and padded
//! to [`WINDOW_LEN`]. When a window is full and the next token is not a comma, but a comma was
//! among the window's last [`COMMA_BACKTRACK`] tokens, the tokens after that comma move to the next
//! window, so a clause is not cut in half. A textual-inversion embedding's slots are never split:
//! when they do not fit in the current window, it is closed and they start the next. `BREAK` closes the current window even when it is empty;
//! at the end, the last window is kept only if it holds tokens or is the only one (an empty prompt
//! gives one window of bos, eos, padding).

/// Length of one window: bos, 75 tokens, eos.
pub const WINDOW_LEN: usize = 77;
/// Prompt tokens that fit in one window.
pub const TOKENS_PER_WINDOW: usize = 75;
/// How far back (in tokens) a full window looks for a comma to break at (A1111's default
/// `comma_padding_backtrack`).
pub const COMMA_BACKTRACK: usize = 20;

/// What fills a window after its eos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// The eos id again (SD 1.x, `openai/clip-vit-large-patch14`).
    #[default]
    Eos,
    /// Id 0 (SD 2.x, OpenCLIP ViT-H: its tokenizer pads with `!`).
    Zero,
}

/// One unit of a weighted prompt, as the emphasis parser hands it over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromptPiece {
    /// A token id with its emphasis weight.
    Token {
        /// The BPE id.
        id: u32,
        /// Its weight (1.0 = no emphasis).
        weight: f32,
    },
    /// A1111's `BREAK`: start a new window here.
    Break,
    /// A textual-inversion embedding: `count` consecutive ids from `first_id` (ids past the
    /// vocabulary, which the text encoder maps to the embedding's vectors), kept in one window.
    Embedding {
        /// The id of its first vector.
        first_id: u32,
        /// How many vectors (token slots), at most [`TOKENS_PER_WINDOW`].
        count: u32,
        /// The weight of every slot.
        weight: f32,
    },
}

/// One window: [`WINDOW_LEN`] ids and a weight for each (bos, eos and padding weigh 1.0).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Token ids: bos, up to 75 prompt tokens, eos, padding.
    pub ids: Vec<u32>,
    /// One weight per id.
    pub weights: Vec<f32>,
}

/// The ids a window is framed and padded with.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Start-of-text id.
    pub bos: u32,
    /// End-of-text id.
    pub eos: u32,
    /// The comma token (`,</w>`), if the vocabulary has one: where long windows prefer to break.
    pub comma: Option<u32>,
    /// What follows the eos.
    pub padding: Padding,
}

/// Splits weighted tokens into windows (see the module docs for the rules).
pub fn split_windows(pieces: &[PromptPiece], framing: &Framing) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut current: Vec<(u32, f32)> = Vec::with_capacity(TOKENS_PER_WINDOW);
    // Index in `current` of the last comma, if any since the window started.
    let mut last_comma: Option<usize> = None;
    for piece in pieces {
        let (id, weight) = match *piece {
            PromptPiece::Break => {
                windows.push(frame(&current, framing));
                current.clear();
                last_comma = None;
                continue;
            }
            PromptPiece::Token { id, weight } => (id, weight),
            PromptPiece::Embedding {
                first_id,
                count,
                weight,
            } => {
                let count = (count as usize).min(TOKENS_PER_WINDOW);
                if current.len() + count > TOKENS_PER_WINDOW {
                    windows.push(frame(&current, framing));
                    current.clear();
                    last_comma = None;
                }
                current.extend((0..count as u32).map(|i| (first_id + i, weight)));
                continue;
            }
        };
        if Some(id) == framing.comma {
            last_comma = Some(current.len());
        } else if let Some(comma) = last_comma {
            if current.len() == TOKENS_PER_WINDOW && current.len() - comma <= COMMA_BACKTRACK {
                let moved = current.split_off(comma + 1);
                windows.push(frame(&current, framing));
                current = moved;
                last_comma = None;
            }
        }
        if current.len() == TOKENS_PER_WINDOW {
            windows.push(frame(&current, framing));
            current.clear();
            last_comma = None;
        }
        current.push((id, weight));
    }
    if !current.is_empty() || windows.is_empty() {
        windows.push(frame(&current, framing));
    }
    windows
}

fn frame(tokens: &[(u32, f32)], framing: &Framing) -> Window {
    let pad = match framing.padding {
        Padding::Eos => framing.eos,
        Padding::Zero => 0,
    };
    let mut ids = Vec::with_capacity(WINDOW_LEN);
    let mut weights = Vec::with_capacity(WINDOW_LEN);
    ids.push(framing.bos);
    weights.push(1.0);
    for &(id, w) in tokens {
        ids.push(id);
        weights.push(w);
    }
    ids.push(framing.eos);
    weights.push(1.0);
    ids.resize(WINDOW_LEN, pad);
    weights.resize(WINDOW_LEN, 1.0);
    Window { ids, weights }
}
