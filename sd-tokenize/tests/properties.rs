//! Properties over arbitrary text: no panic, well-formed windows, no injected bos/eos.

use proptest::prelude::*;
use sd_tokenize::{ClipTokenizer, Padding, BOS, EOS, WINDOW_LEN};
use std::sync::OnceLock;

fn tokenizer() -> &'static ClipTokenizer {
    static T: OnceLock<ClipTokenizer> = OnceLock::new();
    T.get_or_init(ClipTokenizer::default)
}

fn check(text: &str) {
    let t = tokenizer();
    let ids = t.tokenize(text).unwrap();
    assert!(!ids.contains(&BOS) && !ids.contains(&EOS));
    let windows = t.encode(text).unwrap();
    assert!(!windows.is_empty());
    let mut seen = 0;
    for w in &windows {
        assert_eq!(w.ids.len(), WINDOW_LEN);
        assert_eq!(w.weights.len(), WINDOW_LEN);
        assert_eq!(w.ids[0], BOS);
        let eos = w.ids.iter().position(|&i| i == EOS).unwrap();
        seen += eos - 1;
    }
    assert_eq!(seen, ids.len(), "every token lands in exactly one window");
    let zero = t.clone().with_padding(Padding::Zero).encode(text).unwrap();
    for (a, b) in windows.iter().zip(&zero) {
        let eos = a.ids.iter().position(|&i| i == EOS).unwrap();
        assert_eq!(a.ids[..=eos], b.ids[..=eos]);
        assert!(b.ids[eos + 1..].iter().all(|&i| i == 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_string(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn entity_and_markup_soup(text in r"([&#;<>|'’ ,xX0-9a-zA-Z\t\n\r\u{80}-\u{9F}\u{FB00}-\u{FB06}\u{FF01}-\u{FFEF}Σ]|&amp;|<\|endoftext\|>|\u{1B}\[){0,120}") {
        check(&text);
    }
}
