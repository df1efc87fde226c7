//! The part of ftfy's `fix_text` (ftfy 6.3, default settings) that the CLIP cleanup relies on.
//!
//! `fix_text` cuts the text into lines and repeats, on each line until nothing changes: unescape
//! HTML (skipped from the first line holding a `<` onwards, as that looks like real HTML), mojibake
//! repair, C1 controls as Windows-1252, Latin ligatures, character width, curly quotes, line breaks,
//! terminal escapes, control characters, NFC. Mojibake repair (`fix_encoding`) is left out: it needs
//! ftfy's statistical badness model and a dozen legacy codecs, and prompts rarely carry mojibake.

use std::borrow::Cow;

use std::sync::OnceLock;

use fancy_regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::html::{ftfy_unescape, CP1252_C1};

/// ftfy's `max_decode_length`: a line longer than this is fixed in pieces of this many characters.
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// `ftfy.fix_text(text)` without mojibake repair.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let end = rest
            .char_indices()
            .nth(MAX_SEGMENT_CHARS)
            .map_or(line_end, |(i, _)| i.min(line_end));
        let segment = &rest[..end];
        // ftfy keeps the switched-off setting for all later lines too.
        unescape &= !segment.contains('<');
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    // Printable ASCII without `&` (or `\r`, or controls) is a fixed point of every fixer: skip the
    // passes for the common prompt.
    let untouched =
        |b: u8| matches!(b, b' '..=b'~' | b'\t' | b'\n' | 0x0C) && (b != b'&' || !unescape);
    if segment.bytes().all(untouched) {
        return segment.to_owned();
    }
    let mut text = segment.to_owned();
    loop {
        let unescaped = if unescape {
            ftfy_unescape(&text)
        } else {
            Cow::Borrowed(text.as_str())
        };
        let mut next = String::with_capacity(unescaped.len());
        for c in unescaped.chars() {
            let c = match c {
                '\u{80}'..='\u{9F}' => CP1252_C1[c as usize - 0x80],
                c => c,
            };
            if let Some(letters) = latin_ligature(c) {
                next.push_str(letters);
            } else if let Some(c) = standard_width(c) {
                next.push(c);
            } else if ('\u{FF5F}'..='\u{FFEF}').contains(&c) {
                // Half-width katakana and hangul, full-width signs: ftfy's table is NFKC here.
                next.extend(std::iter::once(c).nfkc());
            } else {
                next.push(uncurl(c));
            }
        }
        let next = fix_line_breaks(&next);
        let mut next = remove_terminal_escapes(&next).into_owned();
        next.retain(|c| !is_removed_control(c));
        let next: String = next.nfc().collect();
        if next == text {
            return text;
        }
        text = next;
    }
}

/// ftfy's `LIGATURES` table: Latin typographic ligatures and legacy digraph letters.
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{132}' => "IJ",
        '\u{133}' => "ij",
        '\u{149}' => "\u{2BC}n",
        '\u{1F1}' => "DZ",
        '\u{1F2}' => "Dz",
        '\u{1F3}' => "dz",
        '\u{1C4}' => "D\u{17D}",
        '\u{1C5}' => "D\u{17E}",
        '\u{1C6}' => "d\u{17E}",
        '\u{1C7}' => "LJ",
        '\u{1C8}' => "Lj",
        '\u{1C9}' => "lj",
        '\u{1CA}' => "NJ",
        '\u{1CB}' => "Nj",
        '\u{1CC}' => "nj",
        '\u{FB00}' => "ff",
        '\u{FB01}' => "fi",
        '\u{FB02}' => "fl",
        '\u{FB03}' => "ffi",
        '\u{FB04}' => "ffl",
        '\u{FB05}' => "\u{17F}t",
        '\u{FB06}' => "st",
        _ => return None,
    })
}

/// The common case of ftfy's `WIDTH_MAP` without a normalisation call: full-width ASCII.
fn standard_width(c: char) -> Option<char> {
    match c {
        '\u{3000}' => Some(' '),
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21),
        _ => None,
    }
}

/// ftfy's `uncurl_quotes`.
fn uncurl(c: char) -> char {
    match c {
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        c => c,
    }
}

fn fix_line_breaks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// ftfy's `remove_terminal_escapes`: ANSI sequences such as `ESC[1;31m`.
fn remove_terminal_escapes(s: &str) -> Cow<'_, str> {
    static ANSI: OnceLock<Option<Regex>> = OnceLock::new();
    if !s.contains('\x1B') {
        return Cow::Borrowed(s);
    }
    match ANSI.get_or_init(|| Regex::new(r"\x1B\[(?:\d|;)*[a-zA-Z]").ok()) {
        Some(re) => re.replace_all(s, ""),
        None => Cow::Borrowed(s),
    }
}

/// ftfy's `remove_control_chars`: C0 controls other than whitespace, DEL, deprecated Arabic
/// format controls, the byte order mark and interlinear annotation marks.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{B}' | '\u{E}'..='\u{1F}' | '\u{7F}'
        | '\u{206A}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_docstring_examples() {
        // Expected strings are ftfy 6.3's own doctest outputs.
        assert_eq!(
            fix_text("Broken text&hellip; it&#x2019;s \u{FB02}ubberi\u{FB01}c!"),
            "Broken text\u{2026} it's flubberific!"
        );
        assert_eq!(
            fix_text("\u{FF2C}\u{FF2F}\u{FF35}\u{FF24}\u{3000}\u{FF2E}"),
            "LOUD N"
        );
        assert_eq!(
            fix_text("\u{FF35}\u{FF80}\u{FF70}\u{FF9D}"),
            "U\u{30BF}\u{30FC}\u{30F3}"
        );
        assert_eq!(fix_text("\u{1B}[36;44mI'm blue\u{1B}[0m"), "I'm blue");
        assert_eq!(
            fix_text("\u{201C}here\u{2019}s a test\u{201D}"),
            "\"here's a test\""
        );
    }

    #[test]
    fn html_is_left_alone_after_a_tag() {
        // fix_text("a < b\n&EACUTE;") keeps the entity: the first line switched unescaping off.
        assert_eq!(fix_text("a < b\n&EACUTE;"), "a < b\n&EACUTE;");
        assert_eq!(fix_text("&EACUTE;\na < b"), "\u{C9}\na < b");
    }
}
