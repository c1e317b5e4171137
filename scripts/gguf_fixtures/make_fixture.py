#!/usr/bin/env python3
"""Write small GGUF files with the `gguf` Python package's GGUFWriter (the
reference writer llama.cpp's converter uses) plus, beside each, a JSON of what
was put in: the independent expectation our Rust reader is tested against.

Run by hand (not in CI): /work/venv/bin/python scripts/gguf_fixtures/make_fixture.py
Writes tests/fixtures/gguf/pywriter.gguf (default alignment 32) and
pywriter-align64.gguf (general.alignment 64), each with a .expected.json.

JSON encoding of a value: {"type": "u32", "value": 5}; an array:
{"type": "array", "elem": "i32", "items": [...]} where the items of an array of
arrays are themselves {"type": "array", ...} objects.
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "gguf"

NAMES = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16",
    V.UINT32: "u32", V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64", V.INT64: "i64",
    V.FLOAT64: "f64",
}


def scalar(t, v):
    if t == V.FLOAT32:
        v = float(np.float32(v))  # the exact value the file holds
    return {"type": NAMES[t], "value": v}


def array(elem, items):
    if elem == V.FLOAT32:
        items = [float(np.float32(x)) for x in items]
    return {"type": "array", "elem": NAMES[elem], "items": items}


def build(path: Path, alignment):
    w = gguf.GGUFWriter(path, "mamba")
    expected_md = []

    def put(key, value, t, sub=None, exp=None):
        w.add_key_value(key, value, t, sub_type=sub)
        expected_md.append({"key": key, **exp})

    # GGUFWriter adds general.architecture itself, first.
    expected_md.append({"key": "general.architecture", **scalar(V.STRING, "mamba")})
    if alignment is not None:
        w.add_custom_alignment(alignment)
        expected_md.append({"key": "general.alignment", **scalar(V.UINT32, alignment)})
    put("general.name", "pywriter fixture", V.STRING, exp=scalar(V.STRING, "pywriter fixture"))
    scalars = [
        ("t.u8", 250, V.UINT8), ("t.i8", -100, V.INT8), ("t.u16", 65000, V.UINT16),
        ("t.i16", -30000, V.INT16), ("t.u32", 4_000_000_000, V.UINT32),
        ("t.i32", -2_000_000_000, V.INT32), ("t.f32", 1e-5, V.FLOAT32),
        ("t.bool", True, V.BOOL), ("t.string", "héllo → 世界 🙂", V.STRING),
        ("t.u64", 2**64 - 1, V.UINT64), ("t.i64", -(2**63), V.INT64),
        ("t.f64", 2.0 / 3.0, V.FLOAT64),
    ]
    for k, v, t in scalars:
        put(k, v, t, exp=scalar(t, v))
    arrays = [
        ("t.arr.u8", [1, 2, 255], V.UINT8), ("t.arr.i8", [-1, 1], V.INT8),
        ("t.arr.u16", [7, 65535], V.UINT16), ("t.arr.i16", [-7], V.INT16),
        ("t.arr.u32", [0, 4294967295], V.UINT32), ("t.arr.i32", [3, -4, 5], V.INT32),
        ("t.arr.f32", [0.1, -2.5, 3.0e38], V.FLOAT32), ("t.arr.bool", [True, False], V.BOOL),
        ("t.arr.string", ["<|endoftext|>", ">>ABSTRACT<<", "Ġthe", ""], V.STRING),
        ("t.arr.u64", [2**64 - 1, 1], V.UINT64), ("t.arr.i64", [-(2**63), 2**63 - 1], V.INT64),
        ("t.arr.f64", [1e-300, -0.5], V.FLOAT64),
    ]
    for k, v, t in arrays:
        put(k, v, V.ARRAY, sub=t, exp=array(t, v))
    # An array of arrays (element types inferred by GGUFWriter: int -> i32,
    # str -> string, nested list -> array).
    nested = [[1, 2, 3], ["a", "bc"], [[4], [5, 6]]]
    put("t.arr.nested", nested, V.ARRAY, exp={
        "type": "array", "elem": "array", "items": [
            array(V.INT32, [1, 2, 3]),
            array(V.STRING, ["a", "bc"]),
            {"type": "array", "elem": "array", "items": [array(V.INT32, [4]), array(V.INT32, [5, 6])]},
        ]})
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" * 4
    put("tokenizer.chat_template", template, V.STRING, exp=scalar(V.STRING, template))

    rng = np.random.default_rng(1234)
    tensors = []

    def tensor(name, arr, qtype=None):
        """arr is the numpy array (shape rows-outermost); qtype quantizes it."""
        if qtype is None:
            data, shape = arr, arr.shape
            w.add_tensor(name, arr)
            ty = {np.float32: "F32", np.float16: "F16", np.int32: "I32"}[arr.dtype.type]
        else:
            data = gguf.quants.quantize(arr.astype(np.float32), qtype)
            shape = arr.shape
            w.add_tensor(name, data, raw_dtype=qtype)
            ty = qtype.name
        raw = np.ascontiguousarray(data).tobytes()
        tensors.append({"name": name, "dims": list(reversed(shape)), "type": ty,
                        "n_elements": int(np.prod(shape)), "n_bytes": len(raw), "hex": raw.hex()})

    tensor("token_embd.weight", rng.standard_normal((3, 64)).astype(np.float32), Q.Q8_0)
    tensor("blk.0.attn_norm.weight", rng.standard_normal(5).astype(np.float32))
    tensor("blk.0.ssm_in.weight", rng.standard_normal((2, 32)), Q.Q4_0)
    tensor("blk.0.ssm_conv1d.weight", rng.standard_normal((6, 4)).astype(np.float16))
    tensor("blk.0.ssm_a", rng.standard_normal((2, 3, 4)).astype(np.float32))
    tensor("t.i32", np.arange(-3, 4, dtype=np.int32))
    tensor("t.bf16", rng.standard_normal((2, 8)), Q.BF16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Offsets as the GGUF layout defines them: each tensor padded to the alignment.
    align = alignment or 32
    off = 0
    for t in tensors:
        t["offset"] = off
        off += (t["n_bytes"] + align - 1) // align * align
    exp = {"version": 3, "alignment": align, "metadata": expected_md, "tensors": tensors,
           "gguf_py_version": getattr(gguf, "__version__", "unknown")}
    path.with_suffix(".expected.json").write_text(json.dumps(exp, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    build(OUT / "pywriter.gguf", None)
    build(OUT / "pywriter-align64.gguf", 64)


if __name__ == "__main__":
    sys.exit(main())
