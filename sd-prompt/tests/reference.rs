//! Both weighting functions against torch: `fixtures/prompt/weighting.json`, made by
//! `tools/fixtures/prompt_weighting.py` (A1111's `process_tokens` arithmetic, and
//! `scaled_dot_product_attention` with weighted values, in float32).

use sd_prompt::{emphasize_a1111, value_weighted_attention};
use serde_json::Value;

/// DESIGN.md's f32 tolerance: relative L2 error.
const TOLERANCE: f64 = 1e-4;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/prompt/weighting.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn rel_l2(got: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(got.len(), expected.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &e) in got.iter().zip(expected) {
        num += (f64::from(g) - f64::from(e)).powi(2);
        den += f64::from(e).powi(2);
    }
    (num / den).sqrt()
}

#[test]
fn a1111_matches_torch() {
    let f = fixture();
    let cases = f["a1111"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let channels = case["channels"].as_u64().unwrap() as usize;
        let out =
            emphasize_a1111(&floats(&case["z"]), &floats(&case["weights"]), channels).unwrap();
        let err = rel_l2(&out, &floats(&case["expected"]));
        println!("{}: relative L2 {err:e}", case["name"]);
        assert!(err < TOLERANCE, "{}: relative L2 {err:e}", case["name"]);
    }
}

#[test]
fn value_weighted_attention_matches_torch() {
    let f = fixture();
    let cases = f["attention"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let d = case["head_dim"].as_u64().unwrap() as usize;
        let out = value_weighted_attention(
            &floats(&case["q"]),
            &floats(&case["k"]),
            &floats(&case["v"]),
            &floats(&case["weights"]),
            d,
        )
        .unwrap();
        let err = rel_l2(&out, &floats(&case["expected"]));
        println!("{}: relative L2 {err:e}", case["name"]);
        assert!(err < TOLERANCE, "{}: relative L2 {err:e}", case["name"]);
    }
}
