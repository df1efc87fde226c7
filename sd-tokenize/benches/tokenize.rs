//! Tokens per second of `ClipTokenizer::tokenize` (cleanup + pre-tokenizer + BPE) on a corpus of
//! long prompts: the fixture prompts plus synthetic 150-word prompts.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sd_tokenize::ClipTokenizer;
use std::time::Duration;

fn corpus() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tokenizer/clip_ids.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let mut prompts: Vec<String> = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_owned())
        .collect();
    let words = "masterpiece, best quality, highly detailed portrait of an elderly wizard, \
                 intricate robes, glowing runes, volumetric lighting, by greg rutkowski and \
                 alphonse mucha, trending on artstation, 8k, octane render, sharp focus";
    for i in 0..50 {
        prompts.push(format!("{words} {i}, {words}, seed {i}"));
    }
    prompts
}

fn bench(c: &mut Criterion) {
    let tokenizer = ClipTokenizer::default();
    let prompts = corpus();
    let tokens: usize = prompts
        .iter()
        .map(|p| tokenizer.tokenize(p).expect("ok").len())
        .sum();
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Elements(tokens as u64));
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("corpus", |b| {
        b.iter(|| {
            for p in &prompts {
                std::hint::black_box(tokenizer.tokenize(p).expect("ok"));
            }
        })
    });
    group.bench_function("encode_windows", |b| {
        b.iter(|| {
            for p in &prompts {
                std::hint::black_box(tokenizer.encode(p).expect("ok"));
            }
        })
    });
    group.finish();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("bundled_vocabulary", |b| b.iter(ClipTokenizer::bundled));
    group.bench_function("default_cached", |b| b.iter(ClipTokenizer::default));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
