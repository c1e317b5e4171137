#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from the repository's
fixtures and a few hand-made inputs. Needs the `gguf` and `numpy` packages
(for a small vocabulary GGUF) and a built `mamba-gguf` binary (for a state
file; pass its path, default target/debug/mamba-gguf). Deterministic.

Usage: python3 fuzz/make_seeds.py [path/to/mamba-gguf]
"""
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIX = ROOT / "tests/fixtures"
CORPUS = FUZZ / "seeds"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def small_vocab_gguf():
    """A byte-level BPE vocabulary: the 256 byte tokens, a few merges, specials."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_tokens = [chr(c) for c in cs]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens = [">>TITLE<<", "<|endoftext|>"] + byte_tokens + [m.replace(" ", "") for m in merges]
    types = [3, 3] + [1] * (len(tokens) - 2)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "v.gguf"
        w = gguf.GGUFWriter(str(p), "mamba")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("falcon")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(1)
        w.add_chat_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return p.read_bytes()


def safetensors(tensors):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def main():
    exe = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/mamba-gguf"
    for f in sorted((FIX / "gguf").glob("*.gguf")):
        put("gguf_reader", f.name, f.read_bytes())
    v = small_vocab_gguf()
    put("gguf_reader", "small-vocab.gguf", v)
    put("gguf_tokenizer", "small-vocab.gguf", v)

    # llama.cpp's file, rebuilt byte for byte (not committed).
    subprocess.run(["cargo", "run", "--quiet", "--example", "llamacpp_fixtures"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as d:
        st = Path(d) / "s.state"
        subprocess.run(
            [str(exe), "run", "-m", str(FIX / "llamacpp/falcon-mamba-tiny-f32.gguf"),
             "-p", "The falcon", "-n", "0", "-t", "1", "--json", "--save-state", str(st)],
            check=True, stdout=subprocess.DEVNULL)
        put("state_file", "tiny.state", st.read_bytes())

    for name in ["falcon-mamba-small-bf16", "mamba-tiny-tied", "falcon3-mamba-instruct-tiny"]:
        put("convert_config", f"{name}-config", b"\x00" + (FIX / "hf" / name / "config.json").read_bytes())
        put("convert_config", f"{name}-tokcfg",
            b"\x01" + (FIX / "hf" / name / "tokenizer_config.json").read_bytes())

    f32 = np.arange(8, dtype=np.float32).tobytes()
    put("safetensors_header", "two.safetensors", safetensors({
        "backbone.embeddings.weight": ("F32", [2, 4], f32),
        "backbone.norm_f.weight": ("BF16", [4], np.arange(4, dtype=np.uint16).tobytes()),
    }))
    put("safetensors_header", "f16.safetensors", safetensors({
        "a": ("F16", [2, 2], np.ones(4, dtype=np.float16).tobytes()),
    }))

    # bnb_quant_state: [rows-1] [cols-1] [flags] + the quant_state JSON, as
    # bitsandbytes writes it (the fixtures' form), for shapes that match.
    def qs(kind, rows, cols, nested):
        st = {"quant_type": kind, "blocksize": 64, "dtype": "float16", "shape": [rows, cols]}
        if nested:
            st.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.246})
        return json.dumps(st).encode()
    for kind, flag in [("fp4", 0), ("nf4", 8)]:
        for rows, cols in [(4, 64), (3, 5), (16, 64)]:
            for nested in [False, True]:
                flags = flag | (1 if nested else 0)
                put("bnb_quant_state", f"{kind}-{rows}x{cols}{'-dq' if nested else ''}",
                    bytes([rows - 1, cols - 1, flags]) + qs(kind, rows, cols, nested))
    put("bnb_quant_state", "huge-shape",
        bytes([0, 0, 16]) + qs("nf4", 1 << 40, 1 << 40, False))

    chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
              "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\\n' }}{% endif %}")
    put("chat_template", "chatml", chatml + "\0system\tS\nuser\tU\nassistant\tA")
    tc = json.loads((FIX / "hf/falcon3-mamba-instruct-tiny/tokenizer_config.json").read_text())
    if tc.get("chat_template"):
        put("chat_template", "falcon3", tc["chat_template"] + "\0user\thi\nassistant\thello")
    put("chat_template", "macro",
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(3) }}\0user\tx")
    put("chat_template", "helpers",
        "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
        "{{ raise_exception('bad role') }}{% endif %}{{ m.content.strip() | tojson }}{% endfor %}"
        "{{ strftime_now('%Y-%m-%d') }}\0user\t a ")

    put("openai_request", "chat.json", json.dumps({
        "model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "stop": ["\n"], "stream": True,
        "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2, "seed": 1}))
    put("openai_request", "completion.json", json.dumps({
        "prompt": "Once upon", "max_completion_tokens": 4, "n": 1, "presence_penalty": 0.5,
        "return_tokens": True, "logprobs": 1}))
    put("openai_request", "parts.json", json.dumps({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}))


if __name__ == "__main__":
    main()
