"""A full-size random TAESD (diffusers `AutoencoderTiny` with the published config: 64 channels,
blocks 1-3-3-3 / 3-3-3-1, ~2.4 M parameters) for timing `--decoder taesd` / `--preview taesd`,
and PyTorch's decode time for it next to the full VAE's, on the same random latents.

    /work/venv/bin/python tools/bench/taesd_decode.py --out /work/taesd-random \
        --vae /work/sd15-random/vae --size 512 --threads 2

Writes the diffusers folder (config.json + diffusion_pytorch_model.safetensors, seeded with
torch.manual_seed(0), default torch initialisation) and prints one JSON line of timings (the
second of two calls, like the other benchmarks).
"""

import argparse
import json
import time

import torch
from diffusers import AutoencoderKL, AutoencoderTiny


def timed(fn):
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="folder to write (outside the repository)")
    p.add_argument("--vae", help="a diffusers vae/ folder to time next to TAESD")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    taesd = AutoencoderTiny().eval()
    taesd.save_pretrained(args.out, safe_serialization=True)
    latents = torch.randn(1, 4, args.size // 8, args.size // 8)
    report = {
        "size": args.size,
        "threads": args.threads,
        "torch": torch.__version__,
        "taesd_parameters": sum(p.numel() for p in taesd.parameters()),
    }
    with torch.no_grad():
        report["torch_taesd_decode_seconds"] = timed(lambda: taesd.decode(latents))
        if args.vae:
            vae = AutoencoderKL.from_pretrained(args.vae).eval()
            report["torch_vae_decode_seconds"] = timed(lambda: vae.decode(latents / 0.18215))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
