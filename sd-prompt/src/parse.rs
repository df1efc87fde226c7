//! From prompt text to weighted chunks: the lexer grammar (`prompt.pest`) cuts the text into
//! pieces, then a bracket stack pairs them, as A1111's `parse_prompt_attention` does.

use pest::iterators::Pair;
use pest::Parser;

use crate::chunk::{Chunk, Span};
use crate::error::{Error, Result};

/// The lexer generated from `prompt.pest` (its doc comment holds the syntax and the rules).
#[derive(pest_derive::Parser)]
#[grammar = "prompt.pest"]
struct PromptGrammar;

/// `(x)` multiplies by 1.1 (A1111's `round_bracket_multiplier`).
pub const ROUND_FACTOR: f64 = 1.1;
/// `[x]` divides by 1.1 (A1111's `square_bracket_multiplier`).
pub const SQUARE_FACTOR: f64 = 1.0 / 1.1;

/// One lexical piece after escapes are resolved: text, or a window break.
enum Item {
    Text(String),
    Break,
}

/// A weight applied to the items `start..end`.
struct Group {
    start: usize,
    end: usize,
    factor: f64,
    /// A bracket pair without a number of its own: a suffix number on an enclosing group with
    /// the same content replaces its factor (rule 1 of the grammar).
    bare: bool,
}

/// Parses a prompt into weighted text and breaks.
///
/// Every string is accepted (see the lenient rules in the grammar's doc comment). Adjacent text
/// of equal weight is merged, so a prompt without emphasis syntax is one span holding exactly the
/// input with weight 1; the empty prompt is one empty span. Whitespace around `BREAK` is dropped.
///
/// # Errors
/// [`Error::WeightOutOfRange`] when nested weights multiply beyond `f32` (e.g. `((a:1e30):1e30)`
/// spelled out in digits).
pub fn parse(prompt: &str) -> Result<Vec<Chunk>> {
    let pieces: Vec<Pair<'_, Rule>> = PromptGrammar::parse(Rule::prompt, prompt)
        .map_err(syntax_error)?
        .flat_map(Pair::into_inner)
        .filter(|p| p.as_rule() != Rule::EOI)
        .collect();
    let mut pairing = Pairing::default();
    let mut i = 0;
    while i < pieces.len() {
        let next = pieces.get(i + 1);
        let took_suffix = pairing.piece(&pieces[i], next);
        i += if took_suffix { 2 } else { 1 };
    }
    pairing.finish()
}

/// The bracket stacks and everything seen so far.
#[derive(Default)]
struct Pairing {
    items: Vec<Item>,
    groups: Vec<Group>,
    /// Item index where each open `(` began, innermost last.
    round: Vec<usize>,
    /// Item index where each open `[` began, innermost last.
    square: Vec<usize>,
}

impl Pairing {
    /// Takes one piece; returns whether it also used `next` (a suffix weight).
    fn piece(&mut self, piece: &Pair<'_, Rule>, next: Option<&Pair<'_, Rule>>) -> bool {
        match piece.as_rule() {
            Rule::escape => {
                let escaped = piece.as_str().get(1..).unwrap_or_default();
                self.text(escaped);
            }
            Rule::brk => self.items.push(Item::Break),
            Rule::weighted_word => self.weighted_word(piece),
            Rule::weight_close => return self.weight_close(piece, next),
            Rule::open_round => self.round.push(self.items.len()),
            Rule::open_square => self.square.push(self.items.len()),
            Rule::close_round if !self.round.is_empty() => {
                return self.close(Bracket::Round, None, next);
            }
            Rule::close_square if !self.square.is_empty() => {
                return self.close(Bracket::Square, None, next);
            }
            // Words, gaps, stray characters, unmatched closers and suffixes not after a closer.
            _ => self.text(piece.as_str()),
        }
        false
    }

    fn text(&mut self, text: &str) {
        self.items.push(Item::Text(text.to_owned()));
    }

    /// sd-fused `word:w`: a group of one item.
    fn weighted_word(&mut self, piece: &Pair<'_, Rule>) {
        let mut inner = piece.clone().into_inner();
        let word = inner.next().map(|p| p.as_str()).unwrap_or_default();
        match inner.next().and_then(|p| weight(p.as_str())) {
            Some(factor) => {
                let start = self.items.len();
                self.text(word);
                self.groups.push(Group {
                    start,
                    end: start + 1,
                    factor,
                    bare: false,
                });
            }
            None => self.text(piece.as_str()),
        }
    }

    /// A1111 `:w)`.
    fn weight_close(&mut self, piece: &Pair<'_, Rule>, next: Option<&Pair<'_, Rule>>) -> bool {
        let number = piece.clone().into_inner().next().map(|p| p.as_str());
        match (self.round.is_empty(), number.and_then(weight)) {
            // A1111 too reads `:w)` with no `(` open as text.
            (true, _) => self.text(piece.as_str()),
            (false, Some(w)) => return self.close(Bracket::Round, Some(w), next),
            // Digits too many for an f64: the number is text and the `)` still closes.
            (false, None) => {
                let s = piece.as_str();
                self.text(s.strip_suffix(')').unwrap_or(s));
                return self.close(Bracket::Round, None, next);
            }
        }
        false
    }

    /// Closes the innermost open bracket of `kind` (the caller checked one is open) with its own
    /// number `explicit`, if any, then takes a following `:w` suffix.
    fn close(
        &mut self,
        kind: Bracket,
        explicit: Option<f64>,
        next: Option<&Pair<'_, Rule>>,
    ) -> bool {
        let stack = match kind {
            Bracket::Round => &mut self.round,
            Bracket::Square => &mut self.square,
        };
        let Some(start) = stack.pop() else {
            return false;
        };
        let end = self.items.len();
        let (mut factor, mut bare) = match (explicit, kind) {
            (Some(w), _) => (w, false),
            (None, Bracket::Round) => (ROUND_FACTOR, true),
            (None, Bracket::Square) => (SQUARE_FACTOR, true),
        };
        let suffix = next
            .filter(|p| p.as_rule() == Rule::suffix)
            .and_then(|p| p.clone().into_inner().next())
            .and_then(|p| weight(p.as_str()));
        if let Some(s) = suffix {
            if bare {
                // Rule 1: the number replaces the implicit factor of this group and of the bare
                // groups stacked directly inside it. Those closed last, all ending here.
                factor = s;
                bare = false;
                for inner in self.groups.iter_mut().rev() {
                    if inner.end != end {
                        break;
                    }
                    if inner.start == start && inner.bare {
                        inner.factor = 1.0;
                    }
                }
            } else {
                // Rule 2: two numbers on one group multiply, as `((a:3)):2` does.
                factor *= s;
            }
        }
        self.groups.push(Group {
            start,
            end,
            factor,
            bare,
        });
        suffix.is_some()
    }

    /// Applies unclosed brackets to the end (round first, as A1111), multiplies, merges.
    fn finish(mut self) -> Result<Vec<Chunk>> {
        let end = self.items.len();
        for (starts, factor) in [(&self.round, ROUND_FACTOR), (&self.square, SQUARE_FACTOR)] {
            for &start in starts {
                self.groups.push(Group {
                    start,
                    end,
                    factor,
                    bare: true,
                });
            }
        }
        // Multiplied in closing order, in f64, like A1111's Python floats.
        let mut weights = vec![1.0f64; end];
        for g in &self.groups {
            for w in &mut weights[g.start..g.end] {
                *w *= g.factor;
            }
        }
        let mut merged: Vec<(Option<String>, f64)> = Vec::new();
        for (item, w) in self.items.into_iter().zip(weights) {
            match (item, merged.last_mut()) {
                (Item::Text(t), Some((Some(prev), pw))) if *pw == w => prev.push_str(&t),
                (Item::Text(t), _) => merged.push((Some(t), w)),
                (Item::Break, _) => merged.push((None, 1.0)),
            }
        }
        trim_around_breaks(&mut merged);
        let mut chunks = Vec::with_capacity(merged.len());
        for (text, w) in merged {
            match text {
                None => chunks.push(Chunk::Break),
                Some(t) if t.is_empty() => {}
                Some(text) => {
                    let weight = w as f32;
                    if !weight.is_finite() {
                        return Err(Error::WeightOutOfRange { text, weight: w });
                    }
                    chunks.push(Chunk::Text(Span { text, weight }));
                }
            }
        }
        if chunks.is_empty() {
            chunks.push(Chunk::text("", 1.0));
        }
        Ok(chunks)
    }
}

#[derive(Clone, Copy)]
enum Bracket {
    Round,
    Square,
}

/// A1111's `\s*\bBREAK\b\s*` swallows the whitespace around the word.
fn trim_around_breaks(merged: &mut [(Option<String>, f64)]) {
    for i in 0..merged.len() {
        if merged[i].0.is_some() {
            continue;
        }
        if let Some((Some(t), _)) = i.checked_sub(1).and_then(|j| merged.get_mut(j)) {
            t.truncate(t.trim_end().len());
        }
        if let Some((Some(t), _)) = merged.get_mut(i + 1) {
            *t = t.trim_start().to_owned();
        }
    }
}

/// A weight number, or `None` when it is too long for an f64 (then it is read as text).
fn weight(number: &str) -> Option<f64> {
    number.parse::<f64>().ok().filter(|w| w.is_finite())
}

fn syntax_error(e: pest::error::Error<Rule>) -> Error {
    let (line, column) = match e.line_col {
        pest::error::LineColLocation::Pos(p) | pest::error::LineColLocation::Span(p, _) => p,
    };
    Error::Syntax {
        line,
        column,
        message: e.variant.message().into_owned(),
    }
}
