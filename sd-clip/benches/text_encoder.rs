//! One forward of a full-size text encoder (SD 1.5: ViT-L/14 text tower, and SD 2.x), batch
//! 2 x 77 (a CFG pair), random weights made here.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use sd_clip::{expected_tensors, ClipTextConfig, ClipTextModel};

/// xorshift64*: seeded weights without an RNG dependency.
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Weights of the right shapes: std ~0.02 matrices (as transformers' init), norms near (1, 0).
fn random_model(config: &ClipTextConfig, dtype: DType) -> ClipTextModel {
    let mut rng = Rng(0x5D_C11F);
    let device = Device::Cpu;
    let tensors: HashMap<String, Tensor> = expected_tensors(config)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let (scale, offset) = if name.contains("norm") && name.ends_with("weight") {
                (0.05, 1.0)
            } else {
                (0.035, 0.0) // uniform(-a, a) has std a / sqrt(3) = 0.02
            };
            let data: Vec<f32> = (0..n).map(|_| offset + scale * rng.next()).collect();
            (name, Tensor::from_vec(data, shape, &device).unwrap())
        })
        .collect();
    let vb = VarBuilder::from_tensors(tensors, dtype, &device);
    ClipTextModel::new(config, vb).unwrap()
}

fn input_ids(device: &Device) -> Tensor {
    let mut rng = Rng(7);
    let mut ids = Vec::with_capacity(2 * 77);
    for _ in 0..2 {
        ids.push(49406u32);
        ids.extend((0..20).map(|_| ((rng.next() + 1.0) * 20000.0) as u32));
        ids.resize(ids.len() + 56, 49407);
    }
    Tensor::from_vec(ids, (2, 77), device).unwrap()
}

fn bench(c: &mut Criterion) {
    let ids = input_ids(&Device::Cpu);
    let mut group = c.benchmark_group("clip_text_forward_2x77");
    group.sample_size(10);
    for (name, config) in [
        ("sd15", ClipTextConfig::sd1()),
        ("sd2", ClipTextConfig::sd2()),
    ] {
        let model = random_model(&config, DType::F32);
        group.bench_function(format!("{name}_f32"), |b| {
            b.iter(|| model.forward(&ids).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
