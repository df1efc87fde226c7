//! A1111's windowing (`modules/sd_hijack_clip.py`, `tokenize_line`, comma_padding_backtrack = 20),
//! with expected windows worked out by hand from its rules.

use sd_tokenize::{ClipTokenizer, Padding, PromptPiece, Window, BOS, EOS, WINDOW_LEN};

const CAT: u32 = 2368; // "cat</w>"
const DOG: u32 = 1929; // "dog</w>"
const COMMA: u32 = 267; // ",</w>"

fn tok(id: u32) -> PromptPiece {
    PromptPiece::Token { id, weight: 1.0 }
}

fn pieces(ids: &[u32]) -> Vec<PromptPiece> {
    ids.iter().map(|&id| tok(id)).collect()
}

/// The window A1111 writes for `tokens`: bos, tokens, eos, then `pad` up to 77.
fn expected(tokens: &[u32], pad: u32) -> Vec<u32> {
    let mut ids = vec![BOS];
    ids.extend_from_slice(tokens);
    ids.push(EOS);
    ids.resize(WINDOW_LEN, pad);
    ids
}

fn ids(windows: &[Window]) -> Vec<Vec<u32>> {
    windows.iter().map(|w| w.ids.clone()).collect()
}

#[test]
fn vocabulary_ids_used_here() {
    let t = ClipTokenizer::default();
    assert_eq!(t.token_text(CAT).as_deref(), Some("cat</w>"));
    assert_eq!(t.token_text(DOG).as_deref(), Some("dog</w>"));
    assert_eq!(t.token_text(COMMA).as_deref(), Some(",</w>"));
    assert_eq!(t.tokenize("cat, dog").unwrap(), vec![CAT, COMMA, DOG]);
}

#[test]
fn up_to_75_tokens_is_one_window() {
    let t = ClipTokenizer::default();
    let w = t.windows(&pieces(&[CAT; 75]));
    assert_eq!(ids(&w), vec![expected(&[CAT; 75], EOS)]);
    let w = t.encode(&"cat ".repeat(75)).unwrap();
    assert_eq!(ids(&w), vec![expected(&[CAT; 75], EOS)]);
}

#[test]
fn the_76th_token_opens_a_second_window() {
    let t = ClipTokenizer::default();
    let w = t.windows(&pieces(&[CAT; 76]));
    assert_eq!(
        ids(&w),
        vec![expected(&[CAT; 75], EOS), expected(&[CAT], EOS)]
    );
}

#[test]
fn exactly_150_tokens_is_two_full_windows() {
    let t = ClipTokenizer::default();
    let w = t.encode(&"cat ".repeat(150)).unwrap();
    assert_eq!(ids(&w), vec![expected(&[CAT; 75], EOS); 2]);
}

#[test]
fn a_full_window_breaks_after_a_recent_comma() {
    let t = ClipTokenizer::default();
    // 70 cats, a comma (index 70), 10 dogs: the window fills at the 5th dog, the comma is 5 back,
    // so the 4 dogs already placed move on with the rest.
    let mut input = vec![CAT; 70];
    input.push(COMMA);
    input.extend([DOG; 10]);
    let mut first = vec![CAT; 70];
    first.push(COMMA);
    let w = t.windows(&pieces(&input));
    assert_eq!(
        ids(&w),
        vec![expected(&first, EOS), expected(&[DOG; 10], EOS)]
    );
}

#[test]
fn a_comma_more_than_20_back_is_ignored() {
    let t = ClipTokenizer::default();
    for (comma_at, backs_off) in [(54, false), (55, true), (74, true)] {
        let mut input = vec![CAT; comma_at];
        input.push(COMMA);
        input.resize(80, DOG);
        let w = t.windows(&pieces(&input));
        let first_len = if backs_off { comma_at + 1 } else { 75 };
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0].ids,
            expected(&input[..first_len], EOS),
            "comma at {comma_at}"
        );
        assert_eq!(
            w[1].ids,
            expected(&input[first_len..], EOS),
            "comma at {comma_at}"
        );
    }
}

#[test]
fn a_comma_as_76th_token_starts_the_next_window() {
    let t = ClipTokenizer::default();
    let mut input = vec![CAT; 75];
    input.extend([COMMA, DOG]);
    let w = t.windows(&pieces(&input));
    assert_eq!(
        ids(&w),
        vec![expected(&[CAT; 75], EOS), expected(&[COMMA, DOG], EOS)]
    );
}

#[test]
fn weights_travel_with_their_tokens() {
    let t = ClipTokenizer::default();
    let mut input: Vec<PromptPiece> = (0..70).map(|_| tok(CAT)).collect();
    input.push(tok(COMMA));
    input.extend((0..10).map(|i| PromptPiece::Token {
        id: DOG,
        weight: 1.5 + i as f32,
    }));
    let w = t.windows(&input);
    assert_eq!(w.len(), 2);
    assert!(w[0].weights.iter().all(|&x| x == 1.0));
    let mut want = vec![1.0];
    want.extend((0..10).map(|i| 1.5 + i as f32));
    want.resize(WINDOW_LEN, 1.0);
    assert_eq!(w[1].weights, want);
}

#[test]
fn break_starts_a_new_window() {
    let t = ClipTokenizer::default();
    let empty = expected(&[], EOS);
    let cases: [(Vec<PromptPiece>, Vec<Vec<u32>>); 5] = [
        (
            vec![tok(CAT), PromptPiece::Break, tok(DOG)],
            vec![expected(&[CAT], EOS), expected(&[DOG], EOS)],
        ),
        // A leading BREAK closes an empty window, as A1111 does.
        (
            vec![PromptPiece::Break, tok(CAT)],
            vec![empty.clone(), expected(&[CAT], EOS)],
        ),
        // A trailing BREAK adds nothing: the last window is kept only if it has tokens.
        (
            vec![tok(CAT), PromptPiece::Break],
            vec![expected(&[CAT], EOS)],
        ),
        (vec![PromptPiece::Break], vec![empty.clone()]),
        (
            vec![PromptPiece::Break, PromptPiece::Break],
            vec![empty.clone(), empty.clone()],
        ),
    ];
    for (input, want) in cases {
        assert_eq!(ids(&t.windows(&input)), want, "{input:?}");
    }
}

#[test]
fn break_forgets_the_comma() {
    let t = ClipTokenizer::default();
    // The comma before the BREAK must not pull tokens back once the next window fills.
    let mut input = pieces(&[CAT, COMMA]);
    input.push(PromptPiece::Break);
    input.extend(pieces(&[DOG; 76]));
    let w = t.windows(&input);
    assert_eq!(
        ids(&w),
        vec![
            expected(&[CAT, COMMA], EOS),
            expected(&[DOG; 75], EOS),
            expected(&[DOG], EOS)
        ]
    );
}

#[test]
fn empty_prompt_is_one_window() {
    let t = ClipTokenizer::default();
    assert_eq!(ids(&t.encode("").unwrap()), vec![expected(&[], EOS)]);
    assert_eq!(ids(&t.windows(&[])), vec![expected(&[], EOS)]);
    let zero = ClipTokenizer::default().with_padding(Padding::Zero);
    assert_eq!(ids(&zero.encode("   ").unwrap()), vec![expected(&[], 0)]);
}

#[test]
fn zero_padding_keeps_eos_after_the_last_token() {
    let t = ClipTokenizer::default().with_padding(Padding::Zero);
    assert_eq!(t.padding(), Padding::Zero);
    let w = t.encode("a photo of a cat").unwrap();
    assert_eq!(ids(&w), vec![expected(&[320, 1125, 539, 320, CAT], 0)]);
    let w = t.windows(&pieces(&[CAT; 76]));
    assert_eq!(ids(&w), vec![expected(&[CAT; 75], 0), expected(&[CAT], 0)]);
    assert!(
        w[0].ids.iter().all(|&i| i != 0),
        "a full window has no padding"
    );
}

#[test]
fn an_embedding_is_never_split_across_windows() {
    let t = ClipTokenizer::default();
    const EMB: u32 = 49408; // the first id past the vocabulary
    let mut p = pieces(&[CAT; 73]);
    p.push(PromptPiece::Embedding {
        first_id: EMB,
        count: 3,
        weight: 1.2,
    });
    p.push(tok(DOG));
    let w = t.windows(&p);
    // 73 + 3 > 75: the window closes at 73 and the three slots open the next one.
    assert_eq!(
        ids(&w),
        vec![
            expected(&[CAT; 73], EOS),
            expected(&[EMB, EMB + 1, EMB + 2, DOG], EOS)
        ]
    );
    assert_eq!(&w[1].weights[1..5], &[1.2, 1.2, 1.2, 1.0]);

    // Exactly filling a window keeps it whole there.
    let mut p = pieces(&[CAT; 72]);
    p.push(PromptPiece::Embedding {
        first_id: EMB,
        count: 3,
        weight: 1.0,
    });
    let w = t.windows(&p);
    let mut full = vec![CAT; 72];
    full.extend([EMB, EMB + 1, EMB + 2]);
    assert_eq!(ids(&w), vec![expected(&full, EOS)]);
}
