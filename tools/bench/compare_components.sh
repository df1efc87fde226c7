#!/usr/bin/env bash
# The issue's table, both columns from one run on this machine: PyTorch (torch_components.py)
# and sd-rs (`sd bench`) on the same random full-size SD 1.5 folder, CFG batch 2, 77 tokens.
#
#   bash tools/bench/compare_components.sh [PYTHON] [MODEL_DIR] [OUT_DIR]
# PYTHON defaults to /work/venv/bin/python, MODEL_DIR to /work/sd15-random (built on first use),
# OUT_DIR to /tmp/sd-components; TORCH_DTYPES (default "f32 bf16") picks PyTorch's UNet dtypes.
# ROUNDS (default 1) repeats the PyTorch-then-sd-rs sequence and keeps each cell's fastest time:
# on a shared machine whose speed drifts by a third within minutes, both columns then get the
# same chances. Run with nothing else heavy on the machine (~8 minutes a round).
set -euo pipefail
python=${1:-/work/venv/bin/python}
model=${2:-/work/sd15-random}
out=${3:-/tmp/sd-components}
mkdir -p "$out"

cargo build --release -p sd-cli
for round in $(seq 1 "${ROUNDS:-1}"); do
    # TORCH_DTYPES="f32" skips PyTorch's bf16 UNet: without AVX512-BF16 or AMX (e.g. AVX2-only
    # Zen 3) it takes minutes per call (142 s at 256² on an EPYC family 25).
    # shellcheck disable=SC2086
    "$python" tools/bench/torch_components.py --build --model-dir "$model" \
        --json "$out/torch-$round.json" --dtypes ${TORCH_DTYPES:-f32 bf16} > "$out/torch-$round.txt"
    for size in 256 512; do
        for dtype in f32 bf16; do
            target/release/sd bench --model "$model" --size "$size" --dtype "$dtype" --steps 2 \
                --json > "$out/sd-$size-$dtype-$round.json"
        done
    done
done

"$python" - "$out" <<'PY'
import glob, json, sys, os
out = sys.argv[1]
def fastest(paths):
    # Each number the fastest over the rounds (peak memory: the largest).
    runs = [json.load(open(p)) for p in sorted(paths)]
    merged = dict(runs[0])
    for k in merged:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if len(vals) == len(runs):
            merged[k] = max(vals) if "rss" in k else min(vals)
    merged["rounds"] = len(runs)
    return merged
t = fastest(glob.glob(os.path.join(out, "torch-*.json")))
r = {(s, d): fastest(glob.glob(os.path.join(out, f"sd-{s}-{d}-*.json"))) for s in (256, 512) for d in ("f32", "bf16")}
def row(name, torch_s, ours_s):
    ratio = f"{torch_s / ours_s:.2f}x" if torch_s and ours_s else "-"
    shown = f"{torch_s:.2f} s" if torch_s else "not run"
    print(f"| {name} | {shown} | {ours_s:.2f} s | {ratio} |")
print(f"torch {t.get('torch_version', '?')}, {t.get('threads', '?')} threads; sd-rs isa {r[(512, 'f32')]['isa']}; fastest of {t['rounds']} round(s)")
print("| | PyTorch | sd-rs | PyTorch / sd-rs |")
print("|---|---|---|---|")
for s in (256, 512):
    for d in ("f32", "bf16"):
        row(f"UNet call {s}² {d}", t.get(f"unet_{d}_{s}_seconds_min"), r[(s, d)]["unet_seconds_min"])
for s in (256, 512):
    row(f"VAE decode {s}² f32", t[f"vae_decode_f32_{s}_seconds_min"], r[(s, "f32")]["vae_decode_seconds"])
row("load f32 (PyTorch: UNet + VAE load and page-in; sd-rs: whole folder)",
    t["load_unet_seconds"] + t["page_in_unet_seconds"] + t["load_vae_seconds"] + t["page_in_vae_seconds"],
    r[(512, "f32")]["load_seconds"])
print(f"| peak RSS 512² | {t['peak_rss_mib']:.0f} MiB (UNet f32 + bf16 copy + VAE) | f32 {r[(512, 'f32')]['peak_rss_mib']:.0f} MiB, bf16 {r[(512, 'bf16')]['peak_rss_mib']:.0f} MiB (whole pipeline) | |")
for d in ("f32", "bf16"):
    key = f"gemm_torch_{d}_2048_gflops"
    if key in t:
        print(f"| GEMM 2048³ {d} (PyTorch) | {t[key]:.0f} GFLOP/s | see `cargo bench -p sd-kernels -- gemm` | |")
PY
