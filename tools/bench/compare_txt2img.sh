#!/usr/bin/env bash
# Full-size text-to-image, sd-rs next to diffusers in one session on the same random SD 1.5 folder,
# same settings and seed: 512x512, 20 PNDM steps (21 UNet calls), guidance 7.5, f32, seed 0.
# Then sd-rs's --low-memory mode for its peak memory (2 steps: the peak does not depend on the count).
#
# Run from the repository root with nothing else heavy on the machine:
#   bash tools/bench/compare_txt2img.sh [PYTHON] [MODEL_DIR] [OUT_DIR]
# PYTHON defaults to the fixtures' venv (../venv/sd/bin/python), MODEL_DIR to /work/sd15-random
# (built by diffusers_txt2img.py on first use), OUT_DIR to /tmp/sd-bench.
set -euo pipefail
python=${1:-../venv/sd/bin/python}
model=${2:-/work/sd15-random}
out=${3:-/tmp/sd-bench}
mkdir -p "$out"
steps=${STEPS:-20}
size=${SIZE:-512}

cargo build --release -p sd-cli
"$python" tools/bench/diffusers_txt2img.py --build-only --model-dir "$model"

echo "== diffusers ($steps steps, ${size}x${size})"
"$python" tools/bench/diffusers_txt2img.py --model-dir "$model" --steps "$steps" \
    --width "$size" --height "$size" --seed 0 --out "$out/diffusers.json" \
    --image "$out/diffusers.png" > /dev/null
"$python" -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ['load_seconds','page_in_seconds','generate_seconds','text_encode_seconds','denoise_seconds','vae_decode_seconds','peak_rss_mib']}, 'unet s/call', r['unet_forward_seconds']['mean'])" "$out/diffusers.json"

echo "== sd-rs ($steps steps, ${size}x${size})"
/usr/bin/time -v target/release/sd generate "a photo of a cat" --model "$model" --steps "$steps" \
    --width "$size" --height "$size" --seed 0 --scheduler pndm -q -o "$out/sd-rs.png" \
    2> "$out/sd-rs.time" | tee "$out/sd-rs.txt"
grep -E "Maximum resident" "$out/sd-rs.time"

echo "== sd-rs --low-memory (2 steps)"
target/release/sd generate "a photo of a cat" --model "$model" --steps 2 --width "$size" \
    --height "$size" --seed 0 --scheduler pndm -q --low-memory -o "$out/sd-rs-low.png" \
    | tee "$out/sd-rs-low.txt"

echo "== same image? (max difference in 8-bit levels)"
"$python" -c "
import sys, numpy as np
from PIL import Image
a = np.asarray(Image.open(sys.argv[1]).convert('RGB')).astype(int)
b = np.asarray(Image.open(sys.argv[2]).convert('RGB')).astype(int)
d = np.abs(a - b)
print('max', d.max(), 'mean', round(float(d.mean()), 4), 'pixels > 2 levels', int((d.max(-1) > 2).sum()))
" "$out/diffusers.png" "$out/sd-rs.png"
