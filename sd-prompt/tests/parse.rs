//! The grammar's rules, case by case. Expected weights are the f64 products A1111 computes
//! (`1.1 * 1.1`, `1 / 1.1`, ...) rounded to f32, as A1111 hands them to torch.

use sd_prompt::{parse, Chunk, Error};

fn t(text: &str, weight: f64) -> Chunk {
    Chunk::text(text, weight as f32)
}

fn check(prompt: &str, expected: &[Chunk]) {
    assert_eq!(parse(prompt).unwrap(), expected, "prompt {prompt:?}");
}

#[test]
fn a1111_brackets_multiply() {
    check(
        "a ((masterpiece)) [blurry] (cat:1.3)",
        &[
            t("a ", 1.0),
            t("masterpiece", 1.1 * 1.1),
            t(" ", 1.0),
            t("blurry", 1.0 / 1.1),
            t(" ", 1.0),
            t("cat", 1.3),
        ],
    );
    check("(((a)))", &[t("a", 1.1 * 1.1 * 1.1)]);
    check("[[a]]", &[t("a", (1.0 / 1.1) * (1.0 / 1.1))]);
    check("(a [b])", &[t("a ", 1.1), t("b", (1.0 / 1.1) * 1.1)]);
    check("(a:2 )", &[t("a", 2.0)]);
    check("( a b : 1.5 )", &[t(" a b ", 1.5)]);
    check(
        "(long words, commas:0.25)",
        &[t("long words, commas", 0.25)],
    );
}

#[test]
fn sd_fused_suffixes() {
    check(
        "portrait of female (zombie):-1, digital art",
        &[
            t("portrait of female ", 1.0),
            t("zombie", -1.0),
            t(", digital art", 1.0),
        ],
    );
    check("word:0.5", &[t("word", 0.5)]);
    check(
        "a red fox:1.5 here",
        &[t("a red ", 1.0), t("fox", 1.5), t(" here", 1.0)],
    );
    check("(a):0", &[t("a", 0.0)]);
    check("(a):250", &[t("a", 250.0)]);
    check("[a]:0.5", &[t("a", 0.5)]);
    check("1girl:+1.2, x", &[t("1girl", 1.2), t(", x", 1.0)]);
    check("cat:.5", &[t("cat", 0.5)]);
}

#[test]
fn explicit_number_wins_over_the_brackets_it_is_attached_to() {
    check("(red fox):1.5", &[t("red fox", 1.5)]);
    check("((word)):2", &[t("word", 2.0)]);
    check("(((word))):2", &[t("word", 2.0)]);
    check("([word]):2", &[t("word", 2.0)]);
}

#[test]
fn enclosing_groups_and_second_numbers_multiply() {
    check("((a:2))", &[t("a", 2.0 * 1.1)]);
    check("((a):3)", &[t("a", 1.1 * 3.0)]);
    check("(a:3):2", &[t("a", 3.0 * 2.0)]);
    // `:3)` is A1111's close of the outer group, so this is `((a):3)` (1.1 x 3), then `:2`.
    check("((a):3):2", &[t("a", 1.1 * 3.0 * 2.0)]);
    check("((a:3)):2", &[t("a", 3.0 * 2.0)]);
    check("(x (a)):2", &[t("x ", 2.0), t("a", 1.1 * 2.0)]);
    // Not directly stacked: the space is content of the outer group only.
    check("( (a)):2", &[t(" ", 2.0), t("a", 1.1 * 2.0)]);
    check("(b:2, cat:3)", &[t("b", 2.0 * 3.0), t(", cat", 3.0)]);
}

#[test]
fn malformed_input_is_read_leniently() {
    // Unclosed openers apply to the end; round brackets are applied before square ones.
    check("a (unbalanced", &[t("a ", 1.0), t("unbalanced", 1.1)]);
    check(
        "a (b [c",
        &[t("a ", 1.0), t("b ", 1.1), t("c", 1.1 * (1.0 / 1.1))],
    );
    // Unmatched closers are text.
    check("a) b] c", &[t("a) b] c", 1.0)]);
    check("(a))", &[t("a", 1.1), t(")", 1.0)]);
    // A `:` without a valid number is text.
    check("(a):", &[t("a", 1.1), t(":", 1.0)]);
    check("(x:1.2.3)", &[t("x:1.2.3", 1.1)]);
    check("(x:)", &[t("x:", 1.1)]);
    check("(x:abc)", &[t("x:abc", 1.1)]);
    check("(a) :2", &[t("a", 1.1), t(" :2", 1.0)]);
    check("a:2)", &[t("a:2)", 1.0)]);
    check("):2", &[t("):2", 1.0)]);
    // Numbers too long for an f64 are text; the `)` still closes.
    let huge = format!("1{}", "0".repeat(400));
    check(&format!("(a:{huge})"), &[t(&format!("a:{huge}"), 1.1)]);
    // Crossed brackets: each kind pairs on its own stack.
    check(
        "(a[b)c]",
        &[t("a", 1.1), t("b", 1.1 * (1.0 / 1.1)), t("c", 1.0 / 1.1)],
    );
}

#[test]
fn colons_in_ordinary_text_stay_text() {
    for prompt in [
        "16:9 aspect",
        "at 12:30pm",
        "v1.5:2.0.1",
        "ratio 4:3.",
        "a::b",
        "x:1:2",
    ] {
        check(prompt, &[t(prompt, 1.0)]);
    }
}

#[test]
fn escapes_and_backslashes() {
    check(r"\(a\) \[b\]", &[t("(a) [b]", 1.0)]);
    check(r"(\(a\))", &[t("(a)", 1.1)]);
    check(r"a\\b", &[t(r"a\b", 1.0)]);
    // A backslash before anything else is kept (A1111 drops it).
    check(r"a\b \", &[t(r"a\b \", 1.0)]);
}

#[test]
fn break_starts_a_window_and_eats_its_whitespace() {
    check("a BREAK b", &[t("a", 1.0), Chunk::Break, t("b", 1.0)]);
    check("a,BREAK,b", &[t("a,", 1.0), Chunk::Break, t(",b", 1.0)]);
    check("(a BREAK b)", &[t("a", 1.1), Chunk::Break, t("b", 1.1)]);
    check("BREAK", &[Chunk::Break]);
    check(
        "a BREAK BREAK b",
        &[t("a", 1.0), Chunk::Break, Chunk::Break, t("b", 1.0)],
    );
    // Only the whole word, in capitals.
    check(
        "BREAKfast break XBREAK",
        &[t("BREAKfast break XBREAK", 1.0)],
    );
}

#[test]
fn empty_prompts_give_one_empty_span() {
    for prompt in ["", "()", "(", "[[", "(:1.5)"] {
        check(prompt, &[t("", 1.0)]);
    }
}

#[test]
fn weights_beyond_f32_are_an_error() {
    let big = "100000000000000000000"; // 1e20, squared 1e40 > f32::MAX
    let err = parse(&format!("x (a:{big}):{big}")).unwrap_err();
    match err {
        Error::WeightOutOfRange { text, weight } => {
            assert_eq!(text, "a");
            assert!((weight - 1e40).abs() < 1e26);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unicode_text_passes_through() {
    check(
        "café (naïve):1.5 🐱",
        &[t("café ", 1.0), t("naïve", 1.5), t(" 🐱", 1.0)],
    );
    check("(ねこ:1.2)", &[t("ねこ", 1.2)]);
}
