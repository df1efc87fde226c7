//! One `step` of every scheduler on a 1x4x64x64 f32 latent (SD's 512x512 latent), CPU.

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use sd_scheduler::{build, SchedulerConfig, SchedulerKind};

fn step(c: &mut Criterion) {
    let device = Device::Cpu;
    let sample = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &device).expect("sample");
    let model_output = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &device).expect("model output");
    let noise = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &device).expect("noise");
    let config = SchedulerConfig::default();
    let mut group = c.benchmark_group("step_1x4x64x64");
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(300));
    for kind in SchedulerKind::ALL {
        // A mid-loop step: multistep schedulers have history, as in a real run.
        let mut scheduler = build(kind, &config, 20).expect("scheduler");
        for i in 0..4 {
            scheduler
                .step(i, &model_output, &sample, Some(&noise))
                .expect("warm-up step");
        }
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                // Re-stepping index 4 keeps the history at the same length for every iteration.
                scheduler
                    .step(4, &model_output, &sample, Some(&noise))
                    .expect("step")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
