//! Each kernel at SD 1.5 shapes (512² image: 64² latents, CFG batch 2) next to the plain candle
//! composition it replaces, same inputs, same run.
//! `cargo bench -p sd-kernels` (or `-- attention` for one group).

use criterion::{criterion_group, criterion_main, Criterion};

use candle_core::{Device, Module, Tensor, D};
use sd_kernels::{
    activation, attention, norm, Conv2d, ConvAlgorithm, ConvGeometry, Epilogue, Linear, MatOperand,
    PackedMatrix, Precision, Side, Strided,
};

// As in the `sd` binary: large blocks on huge pages, freed ones kept for reuse.
#[global_allocator]
static ALLOC: sd_kernels::alloc::CachingAllocator = sd_kernels::alloc::CachingAllocator;

fn randn(dims: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, dims, &Device::Cpu).expect("randn")
}

fn gemm(c: &mut Criterion) {
    let n = 2048;
    let a: Vec<f32> = randn(&[n * n]).to_vec1().expect("vec");
    let b: Vec<f32> = randn(&[n * n]).to_vec1().expect("vec");
    let mut out = vec![0f32; n * n];
    let mut g = c.benchmark_group("gemm_2048");
    g.sample_size(10);
    for precision in [Precision::F32, Precision::Bf16] {
        let pa = PackedMatrix::pack(Strided::rows(&a, n, n), Side::Left, precision);
        g.bench_function(format!("sd-kernels {precision:?}"), |bch| {
            bch.iter(|| {
                sd_kernels::matmul(
                    MatOperand::Packed(&pa),
                    Strided::cols(&b, n, n).into(),
                    &mut out,
                    n,
                    &Epilogue::NONE,
                    precision,
                )
            })
        });
    }
    let (ta, tb) = (randn(&[n, n]), randn(&[n, n]));
    g.bench_function("candle F32", |bch| {
        bch.iter(|| ta.matmul(&tb).expect("matmul"))
    });
    g.finish();
}

/// Packing weights at load: a 1280x1280 linear (right operand) and a 1280-channel 3x3 conv
/// (left operand, depth 11520), read from row-major memory as safetensors stores them.
fn pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("pack_weights");
    g.sample_size(10);
    for (name, lines, depth, side) in [
        ("linear 1280x1280", 1280, 1280, Side::Right),
        ("conv 1280x11520", 1280, 11520, Side::Left),
    ] {
        let w: Vec<f32> = randn(&[lines * depth]).to_vec1().expect("vec");
        for precision in [Precision::F32, Precision::Bf16] {
            g.bench_function(format!("{name} {precision:?}"), |bch| {
                bch.iter(|| PackedMatrix::pack(Strided::rows(&w, lines, depth), side, precision))
            });
        }
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    // (batch, channels, side): SD 1.5's 3x3 resnet convs at 512² (64², 32², 16² latents), its
    // three smallest at 256² (16², 8², 4²: the last two weight-bound) and the VAE decoder's
    // 512-channel conv at 128².
    for (b, ch, side) in [
        (2, 320, 64),
        (2, 640, 32),
        (2, 1280, 16),
        (2, 640, 16),
        (2, 1280, 8),
        (2, 1280, 4),
        (1, 512, 128),
    ] {
        conv_case(c, b, ch, side);
    }
}

fn conv_case(c: &mut Criterion, b: usize, ch: usize, side: usize) {
    let mut g = c.benchmark_group(format!("conv3x3_{ch}_{side}x{side}_b{b}"));
    g.sample_size(10);
    let x = randn(&[b, ch, side, side]);
    let w = (randn(&[ch, ch, 3, 3]) * 0.02).expect("scale");
    let bias = randn(&[ch]);
    let geometry = ConvGeometry {
        stride: 1,
        padding: 1,
    };
    for precision in [Precision::F32, Precision::Bf16] {
        for algorithm in [
            ConvAlgorithm::Direct,
            ConvAlgorithm::WinogradF2,
            ConvAlgorithm::WinogradF4,
        ] {
            let mut conv = Conv2d::new(&w, Some(&bias), geometry, precision).expect("conv");
            conv.set_algorithm(algorithm);
            g.bench_function(format!("sd-kernels {precision:?} {algorithm:?}"), |b| {
                b.iter(|| conv.forward(&x, None).expect("forward"))
            });
        }
    }
    if side <= 64 {
        let reference = candle_nn::Conv2d::new(
            w.clone(),
            Some(bias.clone()),
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        );
        g.bench_function("candle F32", |b| {
            b.iter(|| reference.forward(&x).expect("conv"))
        });
    }
    g.finish();
}

fn linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_8192x320_to_2560");
    g.sample_size(10);
    let x = randn(&[2, 4096, 320]);
    let w = randn(&[2560, 320]);
    let bias = randn(&[2560]);
    for precision in [Precision::F32, Precision::Bf16] {
        let lin = Linear::new(&w, Some(&bias), precision).expect("linear");
        g.bench_function(format!("sd-kernels {precision:?}"), |b| {
            b.iter(|| lin.forward(&x, None).expect("forward"))
        });
    }
    let reference = candle_nn::Linear::new(w.clone(), Some(bias.clone()));
    g.bench_function("candle F32", |b| {
        b.iter(|| reference.forward(&x).expect("linear"))
    });
    g.finish();
}

fn attention_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("self_attention_2x4096x320_8_heads");
    g.sample_size(10);
    let (q, k, v) = (
        randn(&[2, 4096, 320]),
        randn(&[2, 4096, 320]),
        randn(&[2, 4096, 320]),
    );
    let scale = 1.0 / 40f32.sqrt();
    for precision in [Precision::F32, Precision::Bf16] {
        g.bench_function(format!("sd-kernels {precision:?}"), |b| {
            b.iter(|| attention(&q, &k, &v, 8, scale, None, precision).expect("attention"))
        });
    }
    g.bench_function("candle F32 (full [16, 4096, 4096] scores)", |b| {
        b.iter(|| {
            let split = |t: &Tensor| {
                t.reshape((2, 4096, 8, 40))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((16, 4096, 40))
            };
            let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
            let s = (q.matmul(&k.t()?.contiguous()?)? * scale as f64)?;
            let p = candle_nn::ops::softmax_last_dim(&s)?;
            p.matmul(&v)?
                .reshape((2, 8, 4096, 40))?
                .transpose(1, 2)?
                .contiguous()
        })
    });
    g.finish();
}

fn norms(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_norm_silu_2x320x64x64");
    g.sample_size(20);
    let x = randn(&[2, 320, 64, 64]);
    let (gamma, beta) = (vec![1.1f32; 320], vec![0.1f32; 320]);
    g.bench_function("sd-kernels", |b| {
        b.iter(|| norm::group_norm(&x, 32, &gamma, &beta, 1e-5, true).expect("gn"))
    });
    let gn = candle_nn::GroupNorm::new(
        Tensor::new(gamma.as_slice(), &Device::Cpu).expect("t"),
        Tensor::new(beta.as_slice(), &Device::Cpu).expect("t"),
        320,
        32,
        1e-5,
    )
    .expect("gn");
    g.bench_function("candle", |b| {
        b.iter(|| candle_nn::ops::silu(&gn.forward(&x).expect("gn")).expect("silu"))
    });
    g.finish();

    let mut g = c.benchmark_group("layer_norm_2x4096x320");
    g.sample_size(20);
    let x = randn(&[2, 4096, 320]);
    g.bench_function("sd-kernels", |b| {
        b.iter(|| norm::layer_norm(&x, &gamma, &beta, 1e-5).expect("ln"))
    });
    let ln = candle_nn::LayerNorm::new(
        Tensor::new(gamma.as_slice(), &Device::Cpu).expect("t"),
        Tensor::new(beta.as_slice(), &Device::Cpu).expect("t"),
        1e-5,
    );
    g.bench_function("candle", |b| b.iter(|| ln.forward(&x).expect("ln")));
    g.finish();

    let mut g = c.benchmark_group("geglu_2x4096x2560");
    g.sample_size(20);
    let x = randn(&[2, 4096, 2560]);
    g.bench_function("sd-kernels", |b| {
        b.iter(|| activation::geglu(&x).expect("geglu"))
    });
    g.bench_function("candle", |b| {
        b.iter(|| {
            let h = x.narrow(D::Minus1, 0, 1280)?;
            let gate = x.narrow(D::Minus1, 1280, 1280)?.gelu_erf()?;
            h * gate
        })
    });
    g.finish();
}

criterion_group!(benches, gemm, pack, conv, linear, attention_bench, norms);
criterion_main!(benches);
