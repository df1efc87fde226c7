//! HTML character references, decoded the two ways the CLIP cleanup decodes them: Python's
//! `html.unescape` (lenient: `&amp` without `;`, longest-prefix names) and ftfy's `unescape_html`
//! (only `;`-terminated names, plus all-caps forms such as `&EACUTE;`).
//!
//! The entity names come from a table generated from Python's `html.entities.html5` and ftfy's
//! `chardata.HTML_ENTITIES` by `tools/fixtures/tokenizer.py` (`data/html_entities.txt.gz`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

static TABLE_GZ: &[u8] = include_bytes!("../data/html_entities.txt.gz");

/// Windows-1252 for bytes 0x80..=0x9F, with the five unassigned bytes passing through as the C1
/// code point of the same number (what Python's `html` table and ftfy's "sloppy" codec both do).
pub const CP1252_C1: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Longest name Python's reference pattern takes after `&` (`[^\t\n\f <&#;]{1,32}`).
const MAX_NAME_CHARS: usize = 32;
/// Longest name ftfy's pattern takes (`&#?[0-9A-Za-z]{1,24};`).
const FTFY_MAX_NAME: usize = 24;

struct Entities {
    /// `html.entities.html5`: names with and without the final `;`.
    html5: HashMap<String, String>,
    /// ftfy's extra all-caps names (with `;`).
    upper: HashMap<String, String>,
}

fn entities() -> &'static Entities {
    static ENTITIES: OnceLock<Entities> = OnceLock::new();
    ENTITIES.get_or_init(|| {
        parse_table(TABLE_GZ).unwrap_or_else(|| Entities {
            html5: HashMap::new(),
            upper: HashMap::new(),
        })
    })
}

/// Lines `h|u <TAB> name <TAB> hex code points`; `None` if the bundled file is damaged (a test
/// checks it is not).
fn parse_table(gz: &[u8]) -> Option<Entities> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .ok()?;
    let mut e = Entities {
        html5: HashMap::with_capacity(2300),
        upper: HashMap::new(),
    };
    for line in text.lines() {
        let mut parts = line.split('\t');
        let (kind, name, value) = (parts.next()?, parts.next()?, parts.next()?);
        let value: Option<String> = value
            .split(' ')
            .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
            .collect();
        let map = if kind == "h" {
            &mut e.html5
        } else {
            &mut e.upper
        };
        map.insert(name.to_owned(), value?);
    }
    Some(e)
}

/// Number of entities in the bundled table (html5 names, ftfy's extra names).
#[cfg(test)]
fn table_sizes() -> (usize, usize) {
    let e = entities();
    (e.html5.len(), e.upper.len())
}

/// Python's `html.unescape`.
pub fn python_unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match charref(after, &mut out) {
            Some(used) => rest = &after[used..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes the reference that starts right after an `&`, appending its text to `out`; returns the
/// bytes it used, or `None` when Python's pattern does not match here.
fn charref(after: &str, out: &mut String) -> Option<usize> {
    if let Some(num) = after.strip_prefix('#') {
        let (digits, radix, skip) = match num.as_bytes().first() {
            Some(b'x' | b'X') => (leading(&num[1..], |b| b.is_ascii_hexdigit()), 16, 2),
            _ => (leading(num, |b| b.is_ascii_digit()), 10, 1),
        };
        if digits == 0 {
            return None;
        }
        let start = skip;
        let text = &after[start..start + digits];
        // Python's int() has no overflow; anything past U+10FFFF decodes the same way.
        let value = text.bytes().try_fold(0u32, |acc, b| {
            let d = (b as char).to_digit(radix)?;
            acc.checked_mul(radix)?.checked_add(d)
        });
        let semi = usize::from(after[start + digits..].starts_with(';'));
        push_numeric(value.unwrap_or(u32::MAX), out);
        return Some(start + digits + semi);
    }
    let mut end = 0;
    for (count, (i, c)) in after.char_indices().enumerate() {
        if count == MAX_NAME_CHARS
            || matches!(c, '\t' | '\n' | '\x0C' | ' ' | '<' | '&' | '#' | ';')
        {
            break;
        }
        end = i + c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    if after[end..].starts_with(';') {
        end += 1;
    }
    let name = &after[..end];
    let html5 = &entities().html5;
    if let Some(v) = html5.get(name) {
        out.push_str(v);
        return Some(end);
    }
    // The longest prefix of at least two characters that is a name wins; the rest stays text.
    let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in bounds.iter().rev() {
        if let Some(v) = html5.get(&name[..cut]) {
            out.push_str(v);
            out.push_str(&name[cut..]);
            return Some(end);
        }
    }
    out.push('&');
    out.push_str(name);
    Some(end)
}

fn leading(s: &str, pred: impl Fn(u8) -> bool) -> usize {
    s.bytes().take_while(|&b| pred(b)).count()
}

/// Python's rules for a numeric reference: C1 numbers read as Windows-1252, surrogates and
/// out-of-range numbers become U+FFFD, non-characters and most controls vanish.
fn push_numeric(num: u32, out: &mut String) {
    match num {
        0 => out.push('\u{FFFD}'),
        0x0D => out.push('\r'),
        0x80..=0x9F => out.push(CP1252_C1[(num - 0x80) as usize]),
        0xD800..=0xDFFF | 0x110000.. => out.push('\u{FFFD}'),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => {}
        n if n & 0xFFFE == 0xFFFE => {}
        n => out.extend(char::from_u32(n)),
    }
}

/// ftfy's `unescape_html`: `&name;` for HTML5 names and ftfy's all-caps names, and numeric
/// references only when Python decodes them whole (semicolon consumed).
pub fn ftfy_unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let e = entities();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let hash = usize::from(after.starts_with('#'));
        let run = leading(&after[hash..], |b| b.is_ascii_alphanumeric());
        let end = hash + run;
        if !(1..=FTFY_MAX_NAME).contains(&run) || !after[end..].starts_with(';') {
            out.push('&');
            rest = after;
            continue;
        }
        let key = &after[..end + 1];
        if let Some(v) = e.html5.get(key).or_else(|| e.upper.get(key)) {
            out.push_str(v);
        } else if hash == 1 {
            let whole = &rest[amp..amp + 1 + end + 1];
            let decoded = python_unescape(whole);
            out.push_str(if decoded.contains(';') {
                whole
            } else {
                &decoded
            });
        } else {
            out.push('&');
            out.push_str(key);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_is_whole() {
        // Python 3.11: len(html.entities.html5) == 2231.
        let (html5, upper) = table_sizes();
        assert_eq!(html5, 2231);
        assert!(upper > 100, "{upper}");
    }

    #[test]
    fn python_rules() {
        // Each expected string is what Python 3.11's html.unescape returns.
        assert_eq!(python_unescape("&amp;amp;"), "&amp;");
        assert_eq!(python_unescape("&amp &lt"), "& <");
        assert_eq!(python_unescape("&notit; &notin;"), "¬it; ∉");
        assert_eq!(python_unescape("&copy2024"), "©2024");
        assert_eq!(
            python_unescape("&#0;&#13;&#150;&#x110000;&#xD800;&#1;&#xFFFF;"),
            "\u{FFFD}\r–\u{FFFD}\u{FFFD}"
        );
        assert_eq!(python_unescape("&#9731 x&#x41;"), "☃ xA");
        assert_eq!(python_unescape("&; & &#; &bogus;"), "&; & &#; &bogus;");
        assert_eq!(python_unescape("&EACUTE;"), "&EACUTE;");
    }

    #[test]
    fn ftfy_rules() {
        // ftfy 6.3 docstring examples.
        assert_eq!(ftfy_unescape("&lt;tag&gt;"), "<tag>");
        assert_eq!(ftfy_unescape("P&EACUTE;REZ"), "PÉREZ");
        assert_eq!(ftfy_unescape("BUNDESSTRA&SZLIG;E"), "BUNDESSTRASSE");
        assert_eq!(
            ftfy_unescape("&ntilde; &Ntilde; &NTILDE; &nTILDE;"),
            "ñ Ñ Ñ &nTILDE;"
        );
        assert_eq!(ftfy_unescape("&amp &not this &#39;"), "&amp &not this '");
    }
}
