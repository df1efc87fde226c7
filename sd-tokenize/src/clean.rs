//! The text cleanup of the original CLIP tokenizer (`basic_clean`, `whitespace_clean`, `lower`).

use crate::ftfy::fix_text;
use crate::html::python_unescape;

/// `whitespace_clean(basic_clean(text)).lower()` from CLIP's `simple_tokenizer.py`:
/// ftfy, `html.unescape` twice, whitespace runs to one space, trimmed, lowercased.
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = python_unescape(&fixed);
    let twice = python_unescape(&once);
    let mut out = String::with_capacity(twice.len());
    for word in twice.split(is_python_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    // Rust's to_lowercase follows the same Unicode rules as Python's str.lower, Final_Sigma included.
    out.to_lowercase()
}

/// Python's `str.isspace`: Unicode White_Space plus the four ASCII information separators.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_steps() {
        assert_eq!(clean("  Fish &amp;amp; Chips\t\n"), "fish & chips");
        assert_eq!(
            clean("\u{39F}\u{394}\u{39F}\u{3A3}"),
            "\u{3BF}\u{3B4}\u{3BF}\u{3C2}"
        );
        assert_eq!(clean("it’s ﬁne"), "it's fine");
        assert_eq!(clean("&nbsp;"), "");
    }
}
