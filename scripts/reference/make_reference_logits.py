#!/usr/bin/env python3
"""Golden logits for the runtime tests, from transformers (the independent reference).

For every Hugging Face fixture under tests/fixtures/hf/ (or the folders named on the
command line) this writes, in tests/fixtures/reference/:

  <fixture>.json           prompt ids, shapes, greedy continuation with top-two margins
  <fixture>.logits.bin     float32 little-endian [positions][vocab]: logits of ONE full
                           forward over the prompt (transformers float32, slow path)
  <fixture>.eps1e-5.logits.bin  (Falcon Mamba only) the last EPS_ROWS positions of the
                           same forward with mixer_rms_eps = 1e-5: what a llama.cpp-made GGUF computes,
                           since llama.cpp normalises dt/B/C with layer_norm_rms_epsilon.

The greedy continuation re-runs a full forward over prompt + generated tokens at every
step (no cache): transformers' cache restarts the scan when a multi-token chunk is fed
on top of a state, so one-shot forwards are the only safe reference.

Run by hand (needs torch + transformers; CI only reads the committed outputs):
    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/reference/make_reference_logits.py
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = [
    "falcon-mamba-tiny",
    "falcon-mamba-small-bf16",
    "mamba-tiny-tied",
    "falcon-mamba-small-fp4",
    "falcon-mamba-small-nf4",
    "falcon-mamba-small-nf4-dq",
    "mamba-falcon-tok",
    "falcon3-mamba-instruct-tiny",
    "falcon3-mamba-base-tiny",
]
PROMPT = (
    "The quick brown fox jumps over the lazy dog. Mamba models keep a fixed-size "
    "state, so memory does not grow with the context."
)
MAX_PROMPT = 16
EPS_ROWS = 4  # the eps=1e-5 variant keeps only the last rows, to keep the repo small
GREEDY_STEPS = 32


def bnb_f32_state(folder: Path):
    """Every bitsandbytes-packed weight of `folder` dequantized exactly in
    float32 by bitsandbytes' pure-PyTorch path (transformers' own
    `dequantize()` goes through the fp16 compute dtype, which would round the
    weights)."""
    from safetensors.torch import load_file
    from bitsandbytes.backends.default import ops as bops

    sd = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    out = {}
    for key in sorted(sd):
        qs_key = next((k for k in sd if k.startswith(key + ".quant_state.bitsandbytes__")), None)
        if qs_key is None:
            continue
        qs = json.loads(bytes(sd[qs_key].numpy().tolist()).decode())
        absmax = sd[key + ".absmax"]
        if "nested_blocksize" in qs:
            absmax = bops._dequantize_blockwise_compute(
                absmax.reshape(-1),
                sd[key + ".nested_absmax"].float(),
                sd[key + ".nested_quant_map"].float(),
                qs["nested_blocksize"],
                torch.float32,
            ) + float(qs["nested_offset"])
        f = getattr(bops._dequantize_4bit_compute, "__wrapped__", bops._dequantize_4bit_compute)
        out[key] = f(
            sd[key].reshape(-1).view(torch.uint8),
            absmax.float(),
            sd[key + ".quant_map"].float(),
            qs["blocksize"],
            qs["shape"],
            torch.float32,
        ).contiguous()
    return out


def load(folder: Path, eps=None):
    cfg = AutoConfig.from_pretrained(folder)
    if eps is not None:
        cfg.mixer_rms_eps = eps
    if getattr(cfg, "quantization_config", None) is not None:
        # bitsandbytes 4-bit: the same architecture in float32 with the
        # exactly dequantized weights; every other tensor (fp16 in the file)
        # widened to float32.
        from safetensors.torch import load_file

        qcfg = cfg.quantization_config
        cfg.quantization_config = None
        del qcfg
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        sd = {}
        for f in sorted(folder.glob("*.safetensors")):
            sd.update(load_file(str(f)))
        dense = bnb_f32_state(folder)
        own = model.state_dict()
        new = {}
        for name in own:
            if name in dense:
                new[name] = dense[name]
            elif name in sd:
                new[name] = sd[name].float()
            elif name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            else:
                raise SystemExit(f"{folder}: {name} missing")
        model.load_state_dict(new, strict=False)
        model.eval()
        return model
    model = AutoModelForCausalLM.from_pretrained(folder, config=cfg, dtype=torch.float32)
    model.eval()
    return model


@torch.no_grad()
def full_logits(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


@torch.no_grad()
def greedy(model, ids, steps):
    seq = list(ids)
    toks, margins = [], []
    for _ in range(steps):
        last = full_logits(model, seq)[-1]
        order = np.argsort(-last, kind="stable")
        toks.append(int(order[0]))
        margins.append(float(last[order[0]] - last[order[1]]))
        seq.append(int(order[0]))
    return toks, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="*", help="HF fixture folders (default: tests/fixtures/hf/<each>)")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/reference"))
    args = ap.parse_args()
    folders = [Path(f) for f in args.folders] or [ROOT / "tests/fixtures/hf" / f for f in FIXTURES]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for folder in folders:
        if not (folder / "config.json").exists():
            print(f"skip {folder}: no config.json", file=sys.stderr)
            continue
        name = folder.name
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = tok.encode(PROMPT, add_special_tokens=False).ids[:MAX_PROMPT]
        model = load(folder)
        cfg = model.config
        logits = full_logits(model, ids)
        vocab = logits.shape[1]
        logits.astype("<f4").tofile(out / f"{name}.logits.bin")
        toks, margins = greedy(model, ids, GREEDY_STEPS)
        meta = {
            "fixture": name,
            "model_type": cfg.model_type,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "dtype": "float32",
            "prompt_text": PROMPT,
            "prompt_ids": ids,
            "positions": len(ids),
            "vocab": vocab,
            "logits_file": f"{name}.logits.bin",
            "logits_layout": "f32 little-endian, [positions][vocab], one full forward",
            "logits_std": float(logits.std()),
            "greedy_ids": toks,
            "greedy_margins": margins,
        }
        bnb = (folder / "expected-dequant.json").exists()
        if bnb:
            meta["source"] = (
                "bitsandbytes 4-bit checkpoint: transformers float32 forward on the weights "
                "dequantized in float32 by bitsandbytes pure-PyTorch path"
            )
        if cfg.model_type == "falcon_mamba":
            meta["mixer_rms_eps"] = float(getattr(cfg, "mixer_rms_eps", 1e-6))
        # llama.cpp cannot read bnb; a mixer eps of 1e-5 is already what llama.cpp computes.
        same_eps = abs(float(getattr(cfg, "mixer_rms_eps", 1e-6)) - 1e-5) < 1e-12
        if cfg.model_type == "falcon_mamba" and not bnb and not same_eps:
            eps_model = load(folder, eps=1e-5)
            eps_logits = full_logits(eps_model, ids)
            first = max(0, len(ids) - EPS_ROWS)
            eps_logits[first:].astype("<f4").tofile(out / f"{name}.eps1e-5.logits.bin")
            meta["logits_eps1e-5_file"] = f"{name}.eps1e-5.logits.bin"
            meta["logits_eps1e-5_first_position"] = first
            meta["eps1e-5_vs_eps_max_abs_diff"] = float(np.abs(eps_logits - logits).max())
        (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{name}: {len(ids)} positions x {vocab} vocab, std {meta['logits_std']:.4f}, "
              f"greedy {toks[:8]}...", file=sys.stderr)


if __name__ == "__main__":
    main()
