"""A full-size random kohya-ss LoRA for the random SD 1.5 folder, to time applying one.

Targets what kohya's sd-scripts `networks/lora.py` targets by default: every Linear and 1x1
Conv2d inside the UNet's `Transformer2DModel` blocks, and every Linear of the text encoder's
`CLIPAttention` / `CLIPMLP`. Weights are float16 (as shared files are), `lora_down` ~ N(0, 1/rank),
`lora_up` ~ N(0, 0.01), alpha = rank / 2, seeded. Shapes come from the folder's configs
(models built on the meta device, so nothing is allocated).

    /work/venv/bin/python tools/bench/random_lora.py --model-dir /work/sd15-random \
        --rank 32 --out /work/lora-r32.safetensors
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file


def targets(model, block_classes):
    """(module path, module) of each Linear / 1x1 Conv2d inside a block of `block_classes`."""
    found = []
    for name, block in model.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_name, child in block.named_modules():
            linear = isinstance(child, torch.nn.Linear)
            conv1 = isinstance(child, torch.nn.Conv2d) and child.kernel_size == (1, 1)
            if linear or conv1:
                found.append((f"{name}.{child_name}", child))
    return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", default="/work/sd15-random")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/work/lora-r32.safetensors")
    a = p.parse_args()
    if os.path.abspath(a.out).startswith(os.path.abspath(os.path.dirname(__file__) + "/../..")):
        raise SystemExit("--out: write outside the repository")

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            json.load(open(os.path.join(a.model_dir, "unet/config.json"))))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(a.model_dir, "text_encoder")))

    g = torch.Generator().manual_seed(a.seed)
    r = a.rank
    out = {}
    modules = (
        [("lora_unet_", n, m) for n, m in targets(unet, {"Transformer2DModel"})]
        + [("lora_te_", n, m) for n, m in targets(te, {"CLIPAttention", "CLIPMLP"})]
    )
    for prefix, name, module in modules:
        key = prefix + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down_shape, up_shape = (r, module.in_features), (module.out_features, r)
        else:
            down_shape, up_shape = (r, module.in_channels, 1, 1), (module.out_channels, r, 1, 1)
        out[f"{key}.lora_down.weight"] = (torch.randn(down_shape, generator=g) / r ** 0.5).half()
        out[f"{key}.lora_up.weight"] = (torch.randn(up_shape, generator=g) * 0.01).half()
        out[f"{key}.alpha"] = torch.tensor(r / 2).half()
    save_file(out, a.out)
    values = sum(t.numel() for t in out.values())
    print(json.dumps({"out": a.out, "rank": r, "modules": len(modules), "values": values,
                      "bytes": os.path.getsize(a.out)}))


if __name__ == "__main__":
    main()
