//! GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode`), which CLIP's BPE
//! runs on: the vocabulary is written in these characters, never in raw bytes.

/// The character each byte stands for: printable Latin-1 bytes stand for themselves, the other 68
/// (controls, space, soft hyphen…) take the code points from U+0100 upwards, in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for (byte, slot) in table.iter_mut().enumerate() {
        let b = byte as u32;
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let code = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        // Every code here is below U+0144, so it is always a valid scalar value.
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// The 256 byte characters in the order the CLIP vocabulary lists them: printable bytes first
/// (in byte order), then the remapped ones (as `bytes_to_unicode().values()` yields them).
pub fn vocab_order(table: &[char; 256]) -> Vec<char> {
    let mut printable: Vec<char> = Vec::with_capacity(256);
    let mut remapped: Vec<char> = Vec::new();
    for (byte, &c) in table.iter().enumerate() {
        if c as u32 == byte as u32 {
            printable.push(c);
        } else {
            remapped.push(c);
        }
    }
    printable.extend(remapped);
    printable
}

/// `text`'s UTF-8 bytes, each replaced by its character.
pub fn encode(table: &[char; 256], text: &str, out: &mut String) {
    out.clear();
    out.extend(text.bytes().map(|b| table[b as usize]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_gpt2_table() {
        let t = byte_to_char_table();
        // Values from open_clip's bytes_to_unicode(): space is U+0120 ("Ġ"), 0x00 is U+0100.
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], '\u{143}');
        let order = vocab_order(&t);
        assert_eq!(order[0], '!');
        assert_eq!(order[187], '\u{FF}');
        assert_eq!(order[188], '\u{100}');
        assert_eq!(order.len(), 256);
    }
}
