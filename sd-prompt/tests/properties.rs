//! Properties over generated prompts: the parser never panics, and text without emphasis syntax
//! comes back untouched.

use proptest::prelude::*;
use sd_prompt::{parse, Chunk, Error};

/// Strings dense in syntax characters, so brackets, numbers and escapes meet often.
fn syntax_heavy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("("),
            Just(")"),
            Just("["),
            Just("]"),
            Just(":"),
            Just("\\"),
            Just("BREAK"),
            Just(" "),
            Just(","),
            Just("."),
            Just("-"),
            Just("1"),
            Just("0.5"),
            Just("a"),
            Just("cat"),
            Just("é"),
            Just("🐱"),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn check_any(s: &str) -> Result<(), TestCaseError> {
    match parse(s) {
        Ok(chunks) => {
            prop_assert!(!chunks.is_empty());
            for chunk in &chunks {
                if let Chunk::Text(span) = chunk {
                    prop_assert!(span.weight.is_finite());
                }
            }
        }
        Err(Error::WeightOutOfRange { .. }) => {}
        Err(other) => prop_assert!(false, "unexpected error {other:?} for {s:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_parses_or_gives_a_typed_error(s in any::<String>()) {
        check_any(&s)?;
    }

    #[test]
    fn syntax_heavy_strings_parse_or_give_a_typed_error(s in syntax_heavy()) {
        check_any(&s)?;
    }

    #[test]
    fn text_without_syntax_is_one_unit_span(s in "[^()\\[\\]:\\\\]*") {
        prop_assume!(!s.contains("BREAK"));
        prop_assert_eq!(parse(&s).unwrap(), vec![Chunk::text(s.clone(), 1.0)]);
    }

    #[test]
    fn escaped_text_comes_back_unescaped(s in "[a-z ()\\[\\]]{0,30}") {
        let escaped: String = s
            .chars()
            .flat_map(|c| match c {
                '(' | ')' | '[' | ']' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        prop_assert_eq!(parse(&escaped).unwrap(), vec![Chunk::text(s.clone(), 1.0)]);
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    // 1.1^200 is about 1.9e8: still an f32.
    let chunks = parse(&nested(200)).unwrap();
    let expected = (0..200).fold(1.0f64, |w, _| w * 1.1) as f32;
    assert_eq!(chunks, vec![Chunk::text("a", expected)]);
    // 1.1^20000 is beyond even f64: a typed error, not a crash.
    assert!(matches!(
        parse(&nested(20_000)),
        Err(Error::WeightOutOfRange { .. })
    ));
    assert_eq!(
        parse(&"[".repeat(20_000)).unwrap(),
        vec![Chunk::text("", 1.0)]
    );
}
