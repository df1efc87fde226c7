"""Times PyTorch on the CPU for the components of a full-size, random-weight SD 1.5 model, so the
Rust numbers can be put next to PyTorch's from the same machine and run.

Components (--components, comma-separated; default unet,vae,gemm):
  unet  one UNet2DConditionModel forward with CFG batch 2: sample [2,4,S/8,S/8], timestep 999,
        encoder_hidden_states [2,77,768] (both seeded randn), for every --sizes S and --dtypes
        (f32; bf16 = unet.to(torch.bfloat16) with bf16 inputs, after all f32 timings).
  vae   AutoencoderKL.decode of a latent [1,4,S/8,S/8] (seeded randn / scaling_factor, as
        diffusers' pipeline does), f32 only.
  gemm  torch.mm 2048^3 (--gemm-n) in f32 and bf16, and numpy f32 if numpy is there: GFLOP/s =
        2 n^3 / seconds, best of 5 after a warm-up.
UNet and VAE: one warm-up call, then --runs timed calls under torch.inference_mode(); min and
median reported. diffusers' default attention processor (SDPA) and torch's mkldnn defaults are kept.

The weights come from the random SD 1.5 folder that diffusers_txt2img.py builds (default
/work/sd15-random, the same folder the Rust side loads); --build creates it if missing, with that
script's code, in a child process. --init-from-config skips the folder and constructs the models
from the same SD 1.5 configs after torch.manual_seed(0) (for smoke tests only).

Run from the repository root:
  /work/venv/bin/python tools/bench/torch_components.py --build --json torch_components.json
  /work/venv/bin/python tools/bench/torch_components.py --init-from-config --sizes 64 --runs 1 \\
      --gemm-n 512                                                   # smoke test, no folder
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusers_txt2img as txt2img  # noqa: E402  (no side effects on import)

DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def timed(fn, runs, warmup=1):
    """Calls fn warmup times untimed, then runs times; returns the list of seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def record(results, key, seconds):
    results[f"{key}_seconds_min"] = round(min(seconds), 4)
    results[f"{key}_seconds_median"] = round(statistics.median(seconds), 4)
    results[f"{key}_seconds_all"] = [round(s, 4) for s in seconds]


def load_model(args, name, results):
    """UNet ('unet') or VAE ('vae') in float32, from the folder or (smoke tests) from the configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cls, config = {"unet": (UNet2DConditionModel, txt2img.SD15_UNET),
                   "vae": (AutoencoderKL, txt2img.SD15_VAE)}[name]
    t0 = time.perf_counter()
    if args.init_from_config:
        torch.manual_seed(txt2img.SEED)
        model = cls(**config)
    else:
        model = cls.from_pretrained(args.model_dir, subfolder=name, torch_dtype=torch.float32)
    results[f"load_{name}_seconds"] = round(time.perf_counter() - t0, 3)
    # from_pretrained may leave the weights memory-mapped: read them in, so the warm-up call is
    # not the only one that pays for it.
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.sum()
    results[f"page_in_{name}_seconds"] = round(time.perf_counter() - t0, 3)
    return model.eval()


def check_finite(out, what):
    import torch

    if not torch.isfinite(out).all():
        raise SystemExit(f"error: {what} has non-finite values")


def bench_unet(args, results):
    import diffusers
    import torch

    unet = load_model(args, "unet", results)
    procs = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    results["unet_attn_processors"] = procs
    results["unet_parameters"] = sum(p.numel() for p in unet.parameters())
    for tag in sorted(args.dtypes, key=list(DTYPES).index):  # f32 first: the bf16 cast is in place
        dtype = getattr(torch, DTYPES[tag])
        level = diffusers.logging.get_verbosity()
        diffusers.logging.set_verbosity_error()  # silences "cast with torch_dtype instead" (no fp32 modules here)
        unet.to(dtype)
        diffusers.logging.set_verbosity(level)
        for size in args.sizes:
            g = torch.Generator().manual_seed(0)
            sample = torch.randn(2, 4, size // 8, size // 8, generator=g).to(dtype)
            context = torch.randn(2, 77, 768, generator=g).to(dtype)
            timestep = torch.tensor(999)
            outs = []

            def call():
                with torch.inference_mode():
                    outs.append(unet(sample, timestep, encoder_hidden_states=context).sample)

            record(results, f"unet_{tag}_{size}", timed(call, args.runs))
            check_finite(outs[-1], f"unet {tag} {size}")
            print(f"  unet {tag:4} {size:4}²  min {results[f'unet_{tag}_{size}_seconds_min']:.3f} s", file=sys.stderr)
    del unet


def bench_vae(args, results):
    import torch

    vae = load_model(args, "vae", results)
    results["vae_parameters"] = sum(p.numel() for p in vae.parameters())
    for size in args.sizes:
        g = torch.Generator().manual_seed(0)
        latent = torch.randn(1, 4, size // 8, size // 8, generator=g) / vae.config.scaling_factor
        outs = []

        def call():
            with torch.inference_mode():
                outs.append(vae.decode(latent).sample)

        record(results, f"vae_decode_f32_{size}", timed(call, args.runs))
        check_finite(outs[-1], f"vae decode {size}")
        print(f"  vae  f32  {size:4}²  min {results[f'vae_decode_f32_{size}_seconds_min']:.3f} s", file=sys.stderr)
    del vae


def bench_gemm(args, results):
    import torch

    n = args.gemm_n
    flops = 2 * n ** 3
    g = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    cases = [("torch_f32", lambda: torch.mm(a32, b32))]
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    cases.append(("torch_bf16", lambda: torch.mm(a16, b16)))
    try:
        import numpy as np

        na, nb = a32.numpy(), b32.numpy()
        cases.append(("numpy_f32", lambda: na @ nb))
        results["numpy_version"] = np.__version__
    except ImportError:
        pass
    for name, fn in cases:
        best = min(timed(fn, 5))
        results[f"gemm_{name}_{n}_seconds_min"] = round(best, 5)
        results[f"gemm_{name}_{n}_gflops"] = round(flops / best / 1e9, 1)


def print_table(results):
    rows = [(k[: -len("_seconds_min")], results[k], results[k.replace("_min", "_median")])
            for k in results if k.endswith("_seconds_min") and not k.startswith("gemm_")]
    if rows:
        print(f"{'component':28} {'min s':>9} {'median s':>9}")
        for name, lo, med in rows:
            print(f"{name:28} {lo:9.3f} {med:9.3f}")
    for k in results:
        if k.endswith("_gflops"):
            print(f"{k[:-len('_gflops')]:28} {results[k]:9.1f} GFLOP/s")
    for k in ("load_unet_seconds", "page_in_unet_seconds", "load_vae_seconds", "page_in_vae_seconds"):
        if k in results:
            print(f"{k:28} {results[k]:9.3f}")
    print(f"{'peak_rss_mib':28} {results['peak_rss_mib']:9.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model-dir", default=txt2img.DEFAULT_MODEL_DIR,
                    help=f"random SD 1.5 folder (default {txt2img.DEFAULT_MODEL_DIR})")
    ap.add_argument("--build", action="store_true", help="build the folder first if it is missing")
    ap.add_argument("--init-from-config", action="store_true",
                    help="construct the models from the SD 1.5 configs (seed 0) instead: smoke tests only")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes (default 256 512)")
    ap.add_argument("--runs", type=int, default=2, help="timed calls after the warm-up (default 2)")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["f32", "bf16"], help="UNet dtypes")
    ap.add_argument("--components", default="unet,vae,gemm", help="comma-separated subset of unet,vae,gemm")
    ap.add_argument("--gemm-n", type=int, default=2048, help="GEMM size n (n x n x n, default 2048)")
    ap.add_argument("--json", metavar="OUT", help="write all results as JSON here")
    args = ap.parse_args()
    components = [c for c in args.components.split(",") if c]
    unknown = set(components) - {"unet", "vae", "gemm"}
    if unknown or any(s % 8 for s in args.sizes) or args.runs < 1:
        ap.error(f"bad --components {sorted(unknown)}, --sizes (multiples of 8) or --runs")
    args.model_dir = os.path.abspath(args.model_dir)

    needs_folder = not args.init_from_config and {"unet", "vae"} & set(components)
    build_seconds = None
    if needs_folder and not txt2img.is_complete(args.model_dir):
        if os.path.exists(args.model_dir):
            raise SystemExit(f"{args.model_dir} exists but is not a complete build: rebuild it with "
                             "tools/bench/diffusers_txt2img.py --build-only --rebuild, or pick another --model-dir")
        if not args.build:
            raise SystemExit(f"{args.model_dir} is missing: pass --build to create it "
                             "(~1 min, ~5 GB RAM, ~4.3 GB disk)")
        build_seconds = txt2img.ensure_model(args.model_dir, rebuild=False)  # child process

    # numpy's OpenBLAS has its own thread pool: match it to --threads unless set (before any import).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import torch
    import diffusers

    torch.set_num_threads(args.threads)
    results = {
        "tool": "tools/bench/torch_components.py",
        "model_source": "init-from-config (seed 0)" if args.init_from_config else args.model_dir,
        "build_seconds": build_seconds,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_model": txt2img.cpu_model(),
        "logical_cpus": os.cpu_count(),
        "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"],
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "sizes": args.sizes,
        "runs": args.runs,
    }
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {results['threads']} threads, "
          f"{results['cpu_model']}, capability {results['cpu_capability']}, "
          f"mkldnn {results['mkldnn_available']}, weights: {results['model_source']}")
    if "gemm" in components:
        bench_gemm(args, results)
    if "unet" in components:
        bench_unet(args, results)
    if "vae" in components:
        bench_vae(args, results)
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
