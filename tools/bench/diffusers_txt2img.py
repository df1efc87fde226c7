"""Times diffusers' StableDiffusionPipeline text-to-image on the CPU, on a full-size SD 1.5-shaped
pipeline with random weights, so the Rust pipeline can be timed next to it on the same folder.

1. Builds the model folder once (default /work/sd15-random, outside the repository, ~4.3 GB in
   float32; skipped when the folder is already there and complete): UNet2DConditionModel, AutoencoderKL
   and CLIPTextModel with SD 1.5's configs and the default torch initialisation, each seeded with
   torch.manual_seed(0); PNDMScheduler from SD 1.5's scheduler_config.json; the real CLIP tokenizer
   (vocab.json + merges.txt built from open_clip's BPE file, as tools/fixtures/pipeline.py does).
   The build runs in a child process, so it does not count towards the timed run's peak RSS.
2. Loads the folder with StableDiffusionPipeline.from_pretrained in float32 and generates one image
   ("a photo of a cat", negative "", guidance 7.5, torch.Generator("cpu").manual_seed(0)), timing
   the load, reading the memory-mapped weights in, text encoding, every UNet forward and denoising
   step, and the VAE decode. Prints one JSON
   object on stdout (and writes it to --out FILE if asked).

Run from the repository root:
  /work/venv-sd/bin/python tools/bench/diffusers_txt2img.py                       # 512², 20 steps, 2 threads
  /work/venv-sd/bin/python tools/bench/diffusers_txt2img.py --steps 2 --width 256 --height 256
  /work/venv-sd/bin/python tools/bench/diffusers_txt2img.py --build-only          # just the folder
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MODEL_DIR = "/work/sd15-random"
MARKER = "bench_build.json"  # written last: present, with every file it lists at its size = complete
SEED = 0

SCHEDULER_NAMES = {
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
}

# SD 1.5's scheduler/scheduler_config.json, as on the hub.
SD15_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# SD 1.5's unet/config.json. Set explicitly: UNet2DConditionModel()'s own defaults differ in
# cross_attention_dim (1280) and sample_size (None).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

# SD 1.5's vae/config.json.
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# SD 1.5's text_encoder/config.json (openai/clip-vit-large-patch14's text tower), token ids included.
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    attention_dropout=0.0,
    dropout=0.0,
    initializer_factor=1.0,
    initializer_range=0.02,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

REQUIRED = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
]


def file_sizes(folder):
    sizes = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, folder)
            if rel != MARKER:
                sizes[rel] = os.path.getsize(p)
    return dict(sorted(sizes.items()))


def is_complete(folder):
    marker = os.path.join(folder, MARKER)
    if not os.path.isfile(marker):
        return False
    try:
        recorded = json.load(open(marker))["files"]
    except (ValueError, KeyError):
        return False
    if not all(r in recorded for r in REQUIRED):
        return False
    for rel, size in recorded.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return False
    return True


def load_write_clip_tokenizer():
    """write_clip_tokenizer from tools/fixtures/pipeline.py (importing it has no side effects)."""
    path = os.path.join(ROOT, "tools", "fixtures", "pipeline.py")
    spec = importlib.util.spec_from_file_location("sd_fixtures_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_clip_tokenizer


def check_weights(name, model):
    """Every parameter finite; returns the largest |w| (default init: well under 10)."""
    import torch

    biggest = 0.0
    count = 0
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise SystemExit(f"{name}: {pname} has non-finite values")
            biggest = max(biggest, p.abs().max().item())
            count += p.numel()
    return {"parameters": count, "max_abs": biggest}


def build(folder):
    import torch
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    start = time.perf_counter()
    tmp = f"{folder}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_clip_tokenizer = load_write_clip_tokenizer()
    tok_src = os.path.join(tmp, "_tok")
    write_clip_tokenizer(tok_src)

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**SD15_UNET)
    torch.manual_seed(SEED)
    vae = AutoencoderKL(**SD15_VAE)
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    stats = {n: check_weights(n, m) for n, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    for m in (unet, vae, text_encoder):
        assert all(p.dtype == torch.float32 for p in m.parameters())
        m.eval()

    tokenizer = CLIPTokenizer(
        os.path.join(tok_src, "vocab.json"),
        os.path.join(tok_src, "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    # transformers 5 saves only tokenizer.json + tokenizer_config.json: add the vocab.json + merges.txt
    # that SD 1.5's tokenizer/ folder has (and that sd-tokenize reads first).
    for f in ("vocab.json", "merges.txt"):
        shutil.move(os.path.join(tok_src, f), os.path.join(tmp, "tokenizer", f))
    shutil.rmtree(tok_src)
    del pipe, unet, vae, text_encoder

    for rel in file_sizes(tmp):  # safetensors files come out 0600; let other users' runs read them
        os.chmod(os.path.join(tmp, rel), 0o644)
    missing = [r for r in REQUIRED if not os.path.isfile(os.path.join(tmp, r))]
    if missing:
        raise SystemExit(f"build: missing {missing} in {tmp}")
    seconds = time.perf_counter() - start
    marker = {
        "seed": SEED,
        "build_seconds": round(seconds, 1),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        "weights": stats,
        "files": file_sizes(tmp),
    }
    with open(os.path.join(tmp, MARKER), "w") as f:
        json.dump(marker, f, indent=1)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    print(f"built {folder} in {seconds:.1f} s", file=sys.stderr)
    return seconds


def ensure_model(folder, rebuild):
    """Builds the folder in a child process (keeps this process's peak RSS to the timed run)."""
    if not rebuild and is_complete(folder):
        return None
    if os.path.exists(folder) and not rebuild:
        raise SystemExit(f"{folder} exists but is not a complete build (no {MARKER} or sizes differ): "
                         "pass --rebuild to replace it, or another --model-dir")
    cmd = [sys.executable, os.path.abspath(__file__), "--build-only", "--model-dir", folder]
    if rebuild:
        cmd.append("--rebuild")
    subprocess.run(cmd, check=True)
    return json.load(open(os.path.join(folder, MARKER)))["build_seconds"]


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def rss_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def summary(xs):
    if not xs:
        return None
    out = {"count": len(xs), "mean": statistics.fmean(xs), "median": statistics.median(xs),
           "min": min(xs), "max": max(xs), "first": xs[0]}
    if len(xs) > 1:
        out["mean_after_first"] = statistics.fmean(xs[1:])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def bench(args, build_seconds):
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model_dir, dtype=torch.float32)
    load_seconds = time.perf_counter() - t0
    # from_pretrained leaves the weights memory-mapped: without this, the first text-encoder call and
    # UNet forward would pay for reading them in. Timed separately (load_seconds + page_in_seconds =
    # weights in memory, ready to run).
    page_in_seconds = None
    if not args.no_page_in:
        t0 = time.perf_counter()
        with torch.no_grad():
            for model in (pipe.text_encoder, pipe.unet, pipe.vae):
                for t in list(model.parameters()) + list(model.buffers()):
                    t.sum()
        page_in_seconds = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler != "pndm":
        cls = getattr(diffusers, SCHEDULER_NAMES[args.scheduler])
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    rss_before_generate = rss_mib()

    timings = {"text": [], "unet": [], "decode": [], "steps": []}
    starts = {}

    def pre(key):
        def hook(module, inputs):
            starts[key] = time.perf_counter()
        return hook

    def post(key):
        def hook(module, inputs, output):
            timings[key].append(time.perf_counter() - starts[key])
        return hook

    pipe.text_encoder.register_forward_pre_hook(pre("text"))
    pipe.text_encoder.register_forward_hook(post("text"))
    pipe.unet.register_forward_pre_hook(pre("unet"))
    pipe.unet.register_forward_hook(post("unet"))
    unet_first_start = []
    pipe.unet.register_forward_pre_hook(lambda m, i: unet_first_start.append(time.perf_counter()))

    vae_decode = pipe.vae.decode

    def timed_decode(*a, **kw):
        t = time.perf_counter()
        out = vae_decode(*a, **kw)
        timings["decode"].append(time.perf_counter() - t)
        return out

    pipe.vae.decode = timed_decode

    step_ends = []
    latents_finite = []

    def on_step_end(p, i, t, kwargs):
        step_ends.append(time.perf_counter())
        latents_finite.append(bool(torch.isfinite(kwargs["latents"]).all()))
        return {}

    generator = torch.Generator("cpu").manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = pipe(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            width=args.width,
            height=args.height,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    generate_seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    images = out.images
    finite = bool(np.isfinite(images).all()) and all(latents_finite)
    if args.image:
        pipe.numpy_to_pil(images)[0].save(args.image)

    # One loop iteration = CFG UNet forward (batch 2) + guidance + scheduler step. PNDM with
    # skip_prk_steps runs steps + 1 iterations (its first PLMS step is repeated).
    step_seconds = [b - a for a, b in zip([unet_first_start[0]] + step_ends[:-1], step_ends)]
    denoise_seconds = step_ends[-1] - unet_first_start[0]
    text_seconds = sum(timings["text"])
    decode_seconds = sum(timings["decode"])
    r = lambda x: round(x, 4)
    report = {
        "tool": "tools/bench/diffusers_txt2img.py",
        "model_dir": os.path.abspath(args.model_dir),
        "built_this_run": build_seconds is not None,
        "build_seconds": build_seconds,
        "settings": {
            "prompt": args.prompt, "negative_prompt": args.negative_prompt, "steps": args.steps,
            "width": args.width, "height": args.height, "guidance_scale": args.guidance, "seed": args.seed,
            "scheduler": args.scheduler, "scheduler_class": type(pipe.scheduler).__name__,
            "dtype": "float32", "device": "cpu",
        },
        "load_seconds": r(load_seconds),
        "page_in_seconds": r(page_in_seconds) if page_in_seconds is not None else None,
        "generate_seconds": r(generate_seconds),
        "text_encode_seconds": r(text_seconds),
        "text_encoder_calls": len(timings["text"]),
        "denoise_seconds": r(denoise_seconds),
        "loop_iterations": len(step_ends),
        "seconds_per_step": summary(step_seconds),
        "unet_forward_seconds": summary(timings["unet"]),
        "vae_decode_seconds": r(decode_seconds),
        "other_seconds": r(generate_seconds - text_seconds - denoise_seconds - decode_seconds),
        "step_seconds": [r(s) for s in step_seconds],
        "peak_rss_mib": round(peak_rss, 1),
        "rss_before_generate_mib": rss_before_generate,
        "output": {
            "shape": list(images.shape), "finite": finite, "mean": r(float(images.mean())),
            "std": r(float(images.std())), "min": r(float(images.min())), "max": r(float(images.max())),
            "image": os.path.abspath(args.image) if args.image else None,
        },
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "threads": {
            "requested": args.threads, "torch_num_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
        },
        "cpu": {
            "model": cpu_model(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if not finite:
        print("error: the output has non-finite values", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, help=f"random SD 1.5 folder (default {DEFAULT_MODEL_DIR})")
    ap.add_argument("--build-only", action="store_true", help="build the folder (if needed) and exit")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the folder even if it is complete")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="a photo of a cat")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--scheduler", choices=list(SCHEDULER_NAMES), default="pndm")
    ap.add_argument("--no-page-in", action="store_true",
                    help="do not read the memory-mapped weights in before generating")
    ap.add_argument("--out", help="also write the JSON report here")
    ap.add_argument("--image", help="save the generated image (PNG) here")
    args = ap.parse_args()

    folder = os.path.abspath(args.model_dir)
    if folder == ROOT or folder.startswith(ROOT + os.sep):
        raise SystemExit(f"--model-dir {folder} is inside the repository; put it outside (default {DEFAULT_MODEL_DIR})")
    args.model_dir = folder

    if args.build_only:
        if args.rebuild or not is_complete(folder):
            if os.path.exists(folder) and not args.rebuild:
                raise SystemExit(f"{folder} exists but is not a complete build: pass --rebuild to replace it")
            import torch
            torch.set_num_threads(args.threads)
            build(folder)
        else:
            print(f"{folder} is complete; nothing to build", file=sys.stderr)
        return
    build_seconds = ensure_model(folder, args.rebuild)
    bench(args, build_seconds)


if __name__ == "__main__":
    main()
