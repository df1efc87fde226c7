#!/usr/bin/env python3
"""Writes the hand-made seeds of fixtures/fuzz/<target>/ (standard library only).

    python3 fuzz/seeds.py          # from the repository root; rewrites ok-* and err-* seeds

Names say what the regression tests (sd-*/tests/fuzz_regressions.rs) expect:
  ok-*     valid input: must be accepted,
  err-*    hostile or broken input: must be refused with the crate's typed error,
  other    (cov-*: kept from fuzzing runs; crash-*: defects, see `crashes`) must not panic,
           either outcome.

Inputs are taken from fixtures/ (the checkpoint, prompt, tokenizer and image fixtures) or
built here, and kept small (a few KB) so libFuzzer mutates them fast.
"""

import collections
import json
import pickle
import re
import struct
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
OUT = FIX / "fuzz"


def put(target, name, data):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / name).write_bytes(data)


def clear(target):
    folder = OUT / target
    for f in folder.glob("*"):
        if f.name.startswith(("ok-", "err-")):
            f.unlink()


# --- prompt_parse: emphasis syntax (sd-prompt/tests/parse.rs cases and issue 15) ------------

PROMPTS_OK = {
    "a1111": "a ((masterpiece)) [blurry] (cat:1.3)",
    "nested": "(((a))) [[a]] (a [b]) (a:2 ) ( a b : 1.5 )",
    "sd-fused": "portrait of female (zombie):-1, digital art, word:0.5, cat:.5, 1girl:+1.2",
    "suffix-stack": "((word)):2 (((word))):2 ([word]):2 ((a):3):2 ((a:3)):2 (x (a)):2",
    "lenient": "a) b] (unclosed [also (a): (x:1.2.3) \\q 16:9 12:30pm v1.5:2.0.1",
    "escapes": "\\(literal\\) \\[square\\] back\\\\slash",
    "break": "a cat BREAK a dog BREAKFAST xBREAK BREAK",
    "plain": "a photo of a cat",
    "empty": "",
    "unicode": "一只可爱的猫 (猫:1.2) 😀:1.5 ΣΑΣ",
    "deep-open": "(" * 400 + "deep",
    "deep-closed": "(" * 200 + "deep" + ")" * 200,
    "deep-square": "[" * 200 + "x" + "]" * 200 + ":2",
    "big-finite-weight": "(word:340282340000000000000000000000000000000)",
    "zero-weights": "(a:0) (b:-0) (c:+0.) (d:.0)",
}
PROMPTS_ERR = {
    # Issue 15, item 3: a weight past f32's range, spelled in digits (no exponents in the grammar).
    "weight-overflow": "(word:3402823500000000000000000000000000000000)",
    "nested-overflow": "((a:1000000000000000000000000000000):1000000000000000000000000000000)",
    "negative-overflow": "(a:-99999999999999999999999999999999999999999)",
}

# --- tokenizer_encode: texts from fixtures/tokenizer/clip_ids.json ---------------------------

TOKENIZER_CASES = [0, 3, 12, 32, 42, 62, 79, 94, 98, 103, 110, 138, 151, 178, 199]


def slug(text, n):
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24]
    return f"{n:03d}-{s or 'x'}"


# --- safetensors ---------------------------------------------------------------------------

def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def read_safetensors_shapes(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: v["shape"] for k, v in header.items()}


# --- torch zip checkpoints, written opcode by opcode (protocol 2) -------------------------------

def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tensor(storage_type, key, numel, offset, shape, stride):
    pid = p_tuple([p_str("storage"), p_global("torch", storage_type), p_str(key), p_str("cpu"),
                   p_int(numel)]) + b"Q"
    hooks = p_global("collections", "OrderedDict") + b")R"
    args = p_tuple([pid, p_int(offset), p_tuple([p_int(d) for d in shape]),
                    p_tuple([p_int(s) for s in stride]), b"\x89", hooks])
    return p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def p_state_dict(tensors):
    """tensors: name -> pickled tensor; wrapped as {"state_dict": OrderedDict(...)}."""
    body = b"".join(p_str(k) + v for k, v in tensors.items())
    inner = p_global("collections", "OrderedDict") + b")R" + b"(" + body + b"u"
    return b"\x80\x02}(" + p_str("state_dict") + inner + b"u."


def torch_zip(pickled, records, compress=False):
    out = BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr("archive/data.pkl", pickled)
        for key, raw in records.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", b"3\n")
    return out.getvalue()


class _ShapeReader(pickle.Unpickler):
    """Reads a torch pickle's tensor shapes without torch: globals become stubs."""

    def find_class(self, module, name):
        if name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: ("tensor", list(size))
        if name == "_rebuild_parameter":
            return lambda tensor, *rest: tensor
        if name == "OrderedDict":
            return collections.OrderedDict
        return lambda *a, **k: None

    def persistent_load(self, pid):
        return pid


def read_ckpt_shapes(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        obj = _ShapeReader(BytesIO(z.read(name))).load()
    return {k: v[1] for k, v in obj["state_dict"].items() if isinstance(v, tuple)}


# --- which tensors detection reads (sd-pipeline/src/checkpoint/detect.rs) -----------------------

DETECTED = re.compile(
    r"(input_blocks\.0\.0\.weight|out_layers\.3\.weight|diffusion_model\.out\.2\.weight"
    r"|attn2\.to_k\.weight|proj_in\.weight|\.op\.weight|encoder\.conv_in\.weight"
    r"|block\.\d+\.conv2\.weight|decoder\.conv_out\.weight|decoder\.conv_in\.weight"
    r"|token_embedding\.weight|position_embedding\.weight|positional_embedding"
    r"|fc1\.weight|c_fc\.weight|attn\.in_proj_weight)$")


def detected_subset(shapes):
    """The keys detection reads, dims past the second set to 1 and the vocabulary cut to 64
    (detection reads dims 0 and 1 only), so a whole model fits in a few KB."""
    out = {}
    for k, s in shapes.items():
        if DETECTED.search(k):
            s = s[:2] + [1] * max(0, len(s) - 2)
            if k.endswith("token_embedding.weight"):
                s = [64] + s[1:]
            if k.endswith("attn.in_proj_weight"):
                s = [3 * s[1]] + s[1:]
            out[k] = s
    return out


# --- PNG -------------------------------------------------------------------------------------

def png(width, height, color_type, bit_depth, raw_rows, interlace=0, extra=b""):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b""))


def png_text(keyword, text):
    body = keyword.encode() + b"\0" + text.encode("latin-1")
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(
        ">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)


def p_long(n):
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little")
    return b"\x8a" + bytes([len(raw)]) + raw


def p_dims(dims):
    return p_tuple([p_long(d) if d > 65535 else p_int(d) for d in dims])


def p_view(shape, stride):
    """A float tensor viewing a one-element storage "0" with any shape and stride."""
    pid = p_tuple([p_str("storage"), p_global("torch", "FloatStorage"), p_str("0"), p_str("cpu"),
                   p_int(1)]) + b"Q"
    hooks = p_global("collections", "OrderedDict") + b")R"
    args = p_tuple([pid, p_int(0), p_dims(shape), p_dims(stride), b"\x89", hooks])
    return p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def crashes():
    """Defects found while writing the targets (issue 15's fuzzing part), as small inputs. Each
    crashes, aborts or exhausts memory before its fix; after it, each must not panic."""
    # A list memoized, then a list of two copies of it, 40 times: 300 bytes, 2^40 values once
    # every memo copy is made (pickle.rs clones memoized containers). Legacy layout: the first
    # pickle is read before the magic number is checked.
    bomb = b"\x80\x02]q\x00K\x01a"
    for i in range(1, 41):
        bomb += b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"lq" + bytes([i])
    put("ckpt_file", "crash-memo-doubling.ckpt", bomb + b".")
    # A stride-0 view of 2^40 floats over one stored float: passes the bounds check, then
    # `CkptFile::load` allocates 4 TiB (torch itself would keep it a view).
    put("ckpt_file", "crash-stride0-4tib.ckpt", torch_zip(
        p_state_dict({"w": p_view([1 << 40], [0])}), {"0": b"\0" * 4}))
    # Zero elements, but the dims multiply past usize first: overflow in `CkptFile::load`.
    put("ckpt_file", "crash-shape-overflow.ckpt", torch_zip(
        p_state_dict({"w": p_view([1 << 32, 1 << 32, 0], [0, 0, 0])}), {"0": b"\0" * 4}))
    # A UNet block index of usize::MAX: `max + 1` overflows in `detect_unet`.
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    huge = "model.diffusion_model.input_blocks.18446744073709551615.0.weight"
    put("checkpoint_detect", "crash-block-index-overflow.txt", f"{conv_in} 8 4 3 3\n{huge} 1\n")
    put("safetensors_file", "crash-block-index-overflow.safetensors", safetensors(
        {conv_in: ("F16", [8, 4, 1, 1], b"\0" * 64), huge: ("F16", [1], b"\0" * 2)}))


def layers_per_block(sd1):
    """Found by checkpoint_detect (a timeout): with no downsampler keys, one UNet block index n
    makes detection report n layers per block, and `NameTable::new` then loops over n layers
    (index 10^9: out of memory in 20 s, also from `sd inspect`). At 2 x 10^4 it still finishes
    (0.3 s). Detection now refuses block indices from 64 on, so the text input is `err-`; as a
    file, `sd inspect` reports the failed detection and succeeds, so that one is `cov-`."""
    n = 20_000
    keep = {k: s for k, s in sd1.items() if "input_blocks." not in k
            or k.endswith(("input_blocks.0.0.weight", "input_blocks.1.0.out_layers.3.weight"))}
    keep[f"model.diffusion_model.input_blocks.{n}.0.weight"] = [1]
    lines = [" ".join([k] + [str(d) for d in s]) for k, s in keep.items()]
    put("checkpoint_detect", f"err-layers-per-block-{n}.txt", "\n".join(lines) + "\n")
    put("safetensors_file", f"cov-layers-per-block-{n}.safetensors", safetensors(
        {k: ("F16", s, b"\0" * (2 * prod(s))) for k, s in keep.items()}))


def main():
    for t in ["prompt_parse", "tokenizer_encode", "safetensors_file", "ckpt_file",
              "checkpoint_detect", "png_image"]:
        (OUT / t).mkdir(parents=True, exist_ok=True)
        clear(t)

    for name, text in PROMPTS_OK.items():
        put("prompt_parse", f"ok-{name}.txt", text)
    for name, text in PROMPTS_ERR.items():
        put("prompt_parse", f"err-{name}.txt", text)

    cases = json.loads((FIX / "tokenizer/clip_ids.json").read_text())["cases"]
    for n in TOKENIZER_CASES:
        put("tokenizer_encode", f"ok-{slug(cases[n]['text'], n)}.txt", cases[n]["text"])
    put("tokenizer_encode", "ok-invalid-utf8.txt", b"caf\xe9 \xff\xfe \xed\xa0\x80 ok")

    # safetensors_file
    st = "safetensors_file"
    mixed = (FIX / "checkpoint/mixed.safetensors").read_bytes()
    put(st, "ok-mixed.safetensors", mixed)
    put(st, "ok-empty.safetensors", safetensors({}))
    put(st, "ok-metadata.safetensors",
        safetensors({"a": ("F32", [2], b"\0" * 8)}, {"format": "pt"}))
    sd1 = detected_subset(read_safetensors_shapes(FIX / "checkpoint/tiny-sd1.safetensors"))
    put(st, "ok-sd1-detected-keys.safetensors", safetensors(
        {k: ("F16", s, b"\0" * (2 * prod(s))) for k, s in sd1.items()}))
    put(st, "err-truncated-data.safetensors", mixed[:-100])
    put(st, "err-header-past-end.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    put(st, "err-bad-json.safetensors", struct.pack("<Q", 9) + b"{\"a\":[1,}")
    bad = safetensors({"a": ("F32", [2], b"\0" * 8), "b": ("F32", [2], b"\0" * 8)})
    put(st, "err-overlapping.safetensors", bad.replace(b"[8,16]", b"[4,12]"))
    put(st, "err-shape-vs-bytes.safetensors", safetensors({"a": ("F32", [3], b"\0" * 8)}))
    put(st, "err-fp8-dtype.safetensors", safetensors({"a": ("F8_E4M3", [2], b"\0" * 2)}))
    put(st, "err-short.safetensors", b"\x02\0\0\0\0\0\0")
    put(st, "err-unknown-bytes.safetensors", b"GIF89a not a weights file")

    # ckpt_file
    ck = "ckpt_file"
    zipped = (FIX / "checkpoint/mixed.ckpt").read_bytes()
    legacy = (FIX / "checkpoint/mixed-legacy.ckpt").read_bytes()
    put(ck, "ok-mixed.ckpt", zipped)
    put(ck, "ok-mixed-legacy.ckpt", legacy)
    put(ck, "err-malicious.ckpt", (FIX / "checkpoint/malicious.ckpt").read_bytes())
    sd2 = detected_subset(read_ckpt_shapes(FIX / "checkpoint/tiny-sd2.ckpt"))
    # Every tensor is a contiguous view at offset 0 of one shared storage, as big as the
    # largest of them.
    numel = max(prod(s) for s in sd2.values())
    tensors = {k: p_tensor("HalfStorage", "0", numel, 0, s, contiguous(s)) for k, s in sd2.items()}
    put(ck, "ok-sd2-detected-keys.ckpt", torch_zip(p_state_dict(tensors), {"0": b"\0" * 2 * numel}))
    one = {"w": p_tensor("FloatStorage", "0", 4, 0, [2, 2], [2, 1])}
    put(ck, "ok-one-tensor.ckpt", torch_zip(p_state_dict(one), {"0": b"\0" * 16}))
    put(ck, "err-compressed.ckpt", torch_zip(p_state_dict(one), {"0": b"\0" * 16}, True))
    put(ck, "err-missing-storage.ckpt", torch_zip(p_state_dict(one), {}))
    past = {"w": p_tensor("FloatStorage", "0", 4, 1, [2, 2], [2, 1])}
    put(ck, "err-past-storage.ckpt", torch_zip(p_state_dict(past), {"0": b"\0" * 16}))
    # Issue 15, item 2, at 200 deep instead of 30,000: refused, not a stack overflow.
    deep = b"\x80\x02" + b"]" * 200 + b"a" * 199 + b"."
    put(ck, "err-deep-lists.ckpt", torch_zip(deep, {}))
    put(ck, "err-deep-legacy.ckpt", deep)
    put(ck, "err-truncated-zip.ckpt", zipped[: len(zipped) // 2])
    put(ck, "err-truncated-legacy.ckpt", legacy[: len(legacy) // 2])
    put(ck, "err-no-data-pkl.ckpt", torch_zip(b"", {}).replace(b"data.pkl", b"dat4.pkl"))

    # checkpoint_detect: the detected keys as `name dim dim ...` lines
    cd = "checkpoint_detect"
    for name, shapes in [("sd1", sd1), ("sd2", sd2)]:
        lines = [" ".join([k] + [str(d) for d in s]) for k, s in shapes.items()]
        put(cd, f"ok-{name}.txt", "\n".join(lines) + "\n")
    inpaint = "\n".join(
        f"{k} 8 9 3 3" if k.endswith("input_blocks.0.0.weight") else " ".join(
            [k] + [str(d) for d in s]) for k, s in sd1.items())
    put(cd, "ok-sd1-inpainting.txt", inpaint + "\n")
    put(cd, "err-empty.txt", "")
    put(cd, "err-no-vae.txt", "\n".join(
        " ".join([k] + [str(d) for d in s]) for k, s in sd1.items()
        if not k.startswith("first_stage_model.")))
    put(cd, "err-conv-in-rank.txt", "model.diffusion_model.input_blocks.0.0.weight 8 4\n")

    # png_image
    pi = "png_image"
    put(pi, "ok-mask.png", (FIX / "pipeline/mask.png").read_bytes())
    put(pi, "ok-init.png", (FIX / "pipeline/init.png").read_bytes())
    put(pi, "ok-rgba.png", png(3, 2, 6, 8, b"".join(b"\0" + bytes(range(12)) for _ in range(2))))
    put(pi, "ok-grey16.png", png(2, 2, 0, 16, b"\0\x12\x34\xff\xff" * 2))
    put(pi, "ok-grey-alpha.png", png(2, 1, 4, 8, b"\0\x10\x20\x30\x40"))
    put(pi, "ok-palette.png", png(2, 1, 3, 8, b"\0\x00\x01", extra=(
        struct.pack(">I", 6) + b"PLTE" + b"\xff\0\0\0\xff\0"
        + struct.pack(">I", zlib.crc32(b"PLTE\xff\0\0\0\xff\0") & 0xFFFFFFFF))))
    put(pi, "ok-interlaced-1x1.png", png(1, 1, 2, 8, b"\0\x10\x20\x30", interlace=1))
    put(pi, "ok-a1111-parameters.png", png(1, 1, 2, 8, b"\0\0\0\0", extra=png_text(
        "parameters", "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
        "CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: v1-5")))
    # Issue 15, item 7: a header claiming 20000 x 20000, refused before decoding.
    put(pi, "err-bomb-header.png", png(20000, 20000, 2, 8, b"\0" * 61))
    init = (FIX / "pipeline/init.png").read_bytes()
    put(pi, "err-truncated.png", init[: len(init) // 2])
    put(pi, "err-bad-crc.png", init[:40] + bytes([init[40] ^ 0xFF]) + init[41:])
    put(pi, "err-zero-width.png", png(0, 1, 2, 8, b"\0"))
    put(pi, "err-not-an-image.png", b"GIF89a\x01\x00\x01\x00")
    put(pi, "err-short-rows.png", png(4, 4, 2, 8, b"\0\1\2"))

    crashes()
    layers_per_block(sd1)


def contiguous(shape):
    strides, n = [], 1
    for d in reversed(shape):
        strides.insert(0, n)
        n *= d
    return strides


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
