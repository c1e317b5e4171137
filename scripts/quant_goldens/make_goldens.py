#!/usr/bin/env python3
"""Make the quant crate's golden files (tests/fixtures/quant/<TYPE>.bin).

Run by hand, not in CI:
    /work/venv/bin/python scripts/quant_goldens/make_goldens.py [--lib /path/to/libggml-base.so]

For every supported type it builds a row of f32 inputs full of edge cases
(all-zero block, one huge outlier, tiny values, values on rounding ties, equal
values, negative-only, mixed magnitudes, random normal, ...), then asks two
independent references for the quantized bytes and the dequantized values:

* ggml itself: libggml-base.so (llama.cpp's ggml built from source), through
  ctypes: quantize_row_<t>_ref / ggml_fp32_to_fp16_row /
  ggml_fp32_to_bf16_row_ref and dequantize_row_<t>. These bytes are stored.
* the `gguf` Python package's numpy code (gguf.quants.quantize/dequantize) for
  the types it implements (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 quantize;
  all but Q8_K dequantize). The script fails if its quantized bytes disagree
  with ggml's anywhere (for F16, NaN inputs excepted: numpy keeps NaN
  payloads, ggml writes 0x7E00).

File layout (all little-endian):
    magic b"QGLD", u32 version (1), u32 ggml type id, u32 n (values),
    u32 nbytes (quantized bytes), u32 flags (bit 0: gguf-py quantize agreed,
    bit 1: gguf-py dequantize agreed),
    f32[n] input, u8[nbytes] expected quantized bytes, f32[n] expected
    dequantized values (from ggml's dequantizer applied to those bytes).

It also writes imatrix.bin: ggml_quantize_chunk's bytes given an importance
matrix (what llama-quantize --imatrix writes), layout in
write_imatrix_goldens.

And dots.bin: ggml-cpu's own vec_dot results (libggml-cpu.so) for
weights and activations quantized by ggml's reference quantizers (layout in
write_dot_goldens). ggml-cpu sums in its own (SIMD) order and pairs Q4_1/Q5_1
with Q8_1, so the Rust test compares those with a tolerance.
"""

import argparse
import ctypes
import os
import struct
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as GT
    from gguf import quants as gq
except ImportError:  # pragma: no cover
    gguf = None

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "quant"))
DEFAULT_LIB = "/work/ext/llama-build/bin/libggml-base.so"

# name: (ggml id, values per block, bytes per block)
TYPES = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "BF16": (30, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
    "Q8_K": (15, 256, 292),
    "IQ4_NL": (20, 32, 18),
    "IQ4_XS": (23, 256, 136),
    "IQ3_XXS": (18, 256, 98),
    "IQ3_S": (21, 256, 110),
    "IQ2_XXS": (16, 256, 66),
    "IQ2_XS": (17, 256, 74),
    "IQ2_S": (22, 256, 82),
    "IQ1_S": (19, 256, 50),
    "IQ1_M": (29, 256, 56),
    "TQ1_0": (34, 256, 54),
    "TQ2_0": (35, 256, 66),
}

# Types whose bytes come from ggml_quantize_chunk (the function
# llama-quantize calls, here without an importance matrix) instead of
# quantize_row_<t>_ref: for IQ4_NL the two differ (the file quantizer tries
# 15 scales per block, the _ref row function one); for the others
# ggml_quantize_chunk runs the _ref function itself.
CHUNK_TYPES = {"Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S",
               "IQ1_M"}
# ggml refuses to quantize these without an importance matrix; a uniform one
# (all ones) stands in, as the goldens test reading, not quantizing.
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}
# Types the quant crate reads but does not write: their bytes (ggml's
# quantizer, without an importance matrix) test the dequantizer and the dot.
# The types gguf-py's numpy code can quantize.
GGUF_PY_QUANTIZE = {"F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0"}


def edge_blocks(rng, bs):
    """A list of (label, f32 array of length bs) edge-case groups."""
    out = []
    f = np.float32
    out.append(("zeros", np.zeros(bs, f)))
    v = rng.standard_normal(bs).astype(f)
    v[bs // 3] = 1e4
    out.append(("outlier", v))
    v = rng.standard_normal(bs).astype(f)
    v[bs - 1] = -3e3
    out.append(("neg_outlier", v))
    out.append(("tiny", (rng.standard_normal(bs) * 1e-8).astype(f)))
    out.append(("tinier", (rng.standard_normal(bs) * 1e-20).astype(f)))
    out.append(("equal", np.full(bs, 0.7, f)))
    out.append(("equal_neg", np.full(bs, -1.25, f)))
    out.append(("neg_only", -np.abs(rng.standard_normal(bs)).astype(f) - f(0.01)))
    out.append(("pos_only", np.abs(rng.standard_normal(bs)).astype(f) + f(0.5)))
    mags = 10.0 ** rng.uniform(-6, 3, bs)
    out.append(("mixed_mag", (mags * rng.choice([-1.0, 1.0], bs)).astype(f)))
    # Rounding ties for several grids: half-integers against a max of -8, 16,
    # 127, 31, and steps of 1/16 and 1/64.
    for top, step in [(-8.0, 0.5), (-16.0, 0.5), (127.0, 0.5), (31.0, 0.5), (1.0, 1 / 16), (-1.0, 1 / 64), (15.0, 1.0)]:
        k = np.arange(bs, dtype=np.float64)
        vals = ((k * 7) % (2 * abs(top) / step + 1)) * step - abs(top)
        vals[0] = top
        out.append((f"ties_{top}_{step}", vals.astype(f)))
    out.append(("ramp", np.linspace(-1, 1, bs).astype(f)))
    out.append(("big", (rng.standard_normal(bs) * 1e6).astype(f)))
    out.append(("one_nonzero", np.eye(1, bs, bs // 2, dtype=f).ravel() * f(-0.3)))
    out.append(("cos", (0.1 + 2.0 * np.cos(np.arange(bs) + 0.5)).astype(f)))
    return out


def make_input(name, rng):
    _, bs, _ = TYPES[name]
    group = 256 if bs == 1 else bs  # float types: edge groups of 256 values
    parts = [v for _, v in edge_blocks(rng, group)]
    if bs == 32:
        # Edge cases at the 32-value grain inside longer runs too.
        parts += [v for _, v in edge_blocks(rng, 32)]
    if name in ("F16", "BF16", "F32"):
        special = np.array(
            [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 65504.0, 65520.0, 65519.99, 1e5, -1e-7, 6e-8, 3e-8,
             2.9802322e-08, 5.9604645e-08, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8,
             3.4028235e38, -3.4028235e38, 1e-45, 1e-40, 1.1754944e-38],
            dtype=np.float32,
        )
        sp = np.zeros(256, np.float32)
        sp[: len(special)] = special
        # A signalling NaN and a NaN with payload.
        bits = sp.view(np.uint32)
        bits[len(special)] = 0x7F800001
        bits[len(special) + 1] = 0xFFA12345
        parts.append(sp)
    parts.append(rng.standard_normal(2048).astype(np.float32))
    # Weight-like rows: small normal values with a few outliers, heavy tails,
    # uniform and Laplace noise (exercise the scale searches broadly).
    w = (rng.standard_normal(1024) * 0.02).astype(np.float32)
    w[rng.integers(0, 1024, 8)] *= 40
    parts.append(w)
    parts.append((rng.standard_t(3, 512) * 0.1).astype(np.float32))
    parts.append(rng.uniform(-1, 1, 512).astype(np.float32))
    parts.append(rng.laplace(0, 0.5, 1024).astype(np.float32))
    x = np.concatenate(parts).astype(np.float32)
    pad = (-len(x)) % 256
    if pad:
        x = np.concatenate([x, (rng.standard_normal(pad) * 0.1).astype(np.float32)])
    return x


class Ggml:
    def __init__(self, path):
        # RTLD_GLOBAL so libggml-cpu (loaded later) binds to this copy.
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)

    def _fn(self, name):
        fn = getattr(self.lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        return fn

    def quantize(self, name, x):
        _, bs, ts = TYPES[name]
        n = len(x)
        nbytes = n // bs * ts
        dst = np.zeros(nbytes, np.uint8)  # zeroed: Q8_K leaves an all-zero block's sums unwritten
        src = np.ascontiguousarray(x, np.float32)
        if name == "F32":
            return src.view(np.uint8).copy()
        if name in CHUNK_TYPES:
            fn = self.lib.ggml_quantize_chunk
            fn.restype = ctypes.c_size_t
            fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_void_p]
            imat = np.ones(n, np.float32) if name in NEEDS_IMATRIX else None
            imat_p = imat.ctypes.data if imat is not None else None
            assert fn(TYPES[name][0], src.ctypes.data, dst.ctypes.data, 0, 1, n, imat_p) == nbytes
            return dst
        fname = {"F16": "ggml_fp32_to_fp16_row", "BF16": "ggml_fp32_to_bf16_row_ref"}.get(
            name, f"quantize_row_{name.lower().replace('_k', '_K')}_ref"
        )
        self._fn(fname)(src.ctypes.data, dst.ctypes.data, n)
        return dst

    def dequantize(self, name, q, n):
        if name == "F32":
            return q.view(np.float32).copy()
        dst = np.zeros(n, np.float32)
        fname = {"F16": "ggml_fp16_to_fp32_row", "BF16": "ggml_bf16_to_fp32_row"}.get(
            name, f"dequantize_row_{name.lower().replace('_k', '_K') if name.startswith('Q') else name.lower()}"
        )
        self._fn(fname)(np.ascontiguousarray(q).ctypes.data, dst.ctypes.data, n)
        return dst


def gguf_quantize(name, x):
    if gguf is None or name not in GGUF_PY_QUANTIZE:
        return None
    with np.errstate(all="ignore"):
        q = gq.quantize(x.reshape(1, -1), getattr(GT, name))
    return np.ascontiguousarray(q).view(np.uint8).ravel()


def gguf_dequantize(name, q, n):
    if gguf is None or name in ("F32", "Q8_K"):
        return None
    with np.errstate(all="ignore"):
        return gq.dequantize(q.reshape(1, -1), getattr(GT, name)).astype(np.float32).ravel()[:n]


def same_f32(a, b):
    """Bitwise equality, treating any two NaNs as equal."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | both_nan))


# Dot goldens: weight type -> ggml's activation type for it (ggml-cpu's
# vec_dot_type; Q4_1/Q5_1 use Q8_1 there, Q8_0 in the quant crate).
DOT_TYPES = {"F32": "F32", "Q4_0": "Q8_0", "Q4_1": "Q8_1", "Q5_0": "Q8_0", "Q5_1": "Q8_1", "Q8_0": "Q8_0",
             "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K", "Q2_K": "Q8_K", "Q3_K": "Q8_K",
             "IQ4_NL": "Q8_0", "IQ4_XS": "Q8_K", "IQ3_XXS": "Q8_K", "IQ3_S": "Q8_K", "IQ2_XXS": "Q8_K",
             "IQ2_XS": "Q8_K", "IQ2_S": "Q8_K", "IQ1_S": "Q8_K", "IQ1_M": "Q8_K", "TQ1_0": "Q8_K",
             "TQ2_0": "Q8_K"}
ACT_IDS = {"F32": 0, "Q8_0": 8, "Q8_1": 9, "Q8_K": 15}
ACT_SIZES = {"F32": (1, 4), "Q8_0": (32, 34), "Q8_1": (32, 36), "Q8_K": (256, 292)}


class VecDotTraits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def write_dot_goldens(ggml, cpu_path, out_dir):
    """dots.bin: ggml-cpu's own vec_dot of ggml-quantized weights with
    ggml-quantized (reference quantizer) activations.

    Layout (LE): b"QDOT", u32 version 2, u32 entries; per entry u32 weight
    type id, u32 ggml activation type id, u32 n, u32 rows, u32 t, u32 rb
    (bytes per quantized weight row), f32[rows*n] weights, u8[rows*rb]
    ggml's quantization of them (for the types the quant crate reads but
    does not write), f32[t*n] activations, f32[t*rows] dots
    (out[j*rows + r]).
    """
    cpu = ctypes.CDLL(cpu_path)
    cpu.ggml_cpu_init.restype = None
    cpu.ggml_cpu_init()
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(VecDotTraits)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    rng = np.random.default_rng(77)
    n, rows, t = 1024, 4, 2
    blob = b""
    for name, act in DOT_TYPES.items():
        tid = TYPES[name][0]
        traits = cpu.ggml_get_type_traits_cpu(tid).contents
        assert traits.vec_dot_type == ACT_IDS[act], (name, traits.vec_dot_type)
        vec_dot = VEC_DOT(traits.vec_dot)
        w = (rng.standard_normal(rows * n) * 0.05).astype(np.float32)
        w[rng.integers(0, rows * n, 6)] *= 30
        w[:32] = np.abs(w[:32])  # a positive-only block (a non-zero min)
        a = rng.standard_normal(t * n).astype(np.float32)
        a[n:n + 256] -= 1.0  # a shifted activation block
        wq = [ggml.quantize(name, w[r * n:(r + 1) * n]) for r in range(rows)]
        if act == "F32":
            aq = [a[j * n:(j + 1) * n].copy().view(np.uint8) for j in range(t)]
        else:
            bs, ts = ACT_SIZES[act]
            fn = ggml._fn(f"quantize_row_{act.lower().replace('_k', '_K')}_ref")
            aq = []
            for j in range(t):
                dst = np.zeros(n // bs * ts, np.uint8)
                src = np.ascontiguousarray(a[j * n:(j + 1) * n])
                fn(src.ctypes.data, dst.ctypes.data, n)
                aq.append(dst)
        dots = np.zeros(t * rows, np.float32)
        for j in range(t):
            for r in range(rows):
                s = ctypes.c_float(np.inf)
                vec_dot(n, ctypes.byref(s), 0, wq[r].ctypes.data, 0, aq[j].ctypes.data, 0, 1)
                dots[j * rows + r] = s.value
        rb = len(wq[0])
        blob += (struct.pack("<6I", tid, ACT_IDS[act], n, rows, t, rb) + w.tobytes() + b"".join(q.tobytes() for q in wq)
                 + a.tobytes() + dots.tobytes())
        print(f"dots {name:5} x {act:4}: {dots.tolist()}")
    path = os.path.join(out_dir, "dots.bin")
    with open(path, "wb") as fh:
        fh.write(b"QDOT" + struct.pack("<2I", 2, len(DOT_TYPES)) + blob)
    return os.path.getsize(path)


# The types whose quantizer takes an importance matrix, and (the last four)
# types ggml quantizes the same with or without one.
IMATRIX_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                 "IQ1_S", "IQ1_M", "Q8_0", "TQ1_0", "TQ2_0"]
IMATRIX_ROWS, IMATRIX_N = 8, 512


def importance(rng, n):
    """An importance row like llama-imatrix's (per-column mean of squared
    activations): positive, spread over decades, a few columns never
    activated (0), one whole 32-column block of them, a few huge."""
    w = (rng.gamma(0.5, 1.0, n) * 10.0 ** rng.uniform(-2, 2, n)).astype(np.float32)
    w[rng.integers(0, n, 6)] = 0.0
    w[64:96] = 0.0
    w[rng.integers(0, n, 3)] = 1e4
    return w


def write_imatrix_goldens(ggml, out_dir):
    """imatrix.bin: ggml_quantize_chunk's bytes with an importance matrix,
    as llama-quantize --imatrix calls it (several rows: Q4_0..Q5_1 take
    sigma2 over the whole row).

    Layout (LE): b"QIMX", u32 version 1, u32 entries; per entry u32 ggml
    type id, u32 rows, u32 values per row, u32 bytes, f32[values per row]
    importance, f32[rows * values per row] input, u8[bytes] ggml's output.
    """
    fn = ggml.lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_void_p]
    body = b""
    for name in IMATRIX_TYPES:
        tid, bs, ts = TYPES[name]
        rng = np.random.default_rng(5000 + tid)
        x = make_input(name, rng)[: IMATRIX_ROWS * IMATRIX_N].astype(np.float32)
        imat = importance(rng, IMATRIX_N)
        nbytes = IMATRIX_ROWS * IMATRIX_N // bs * ts
        dst = np.zeros(nbytes, np.uint8)
        assert fn(tid, x.ctypes.data, dst.ctypes.data, 0, IMATRIX_ROWS, IMATRIX_N, imat.ctypes.data) == nbytes
        if name in NEEDS_IMATRIX:
            print(f"imatrix {name:6}: {nbytes} bytes (ggml quantizes it only with one)")
        else:
            plain = np.zeros(nbytes, np.uint8)
            assert fn(tid, x.ctypes.data, plain.ctypes.data, 0, IMATRIX_ROWS, IMATRIX_N, None) == nbytes
            differs = int(np.count_nonzero(plain != dst))
            print(f"imatrix {name:6}: {nbytes} bytes, {differs} differ from the quantization without one")
        body += struct.pack("<4I", tid, IMATRIX_ROWS, IMATRIX_N, nbytes)
        body += imat.astype("<f4").tobytes() + x.astype("<f4").tobytes() + dst.tobytes()
    path = os.path.join(out_dir, "imatrix.bin")
    with open(path, "wb") as fh:
        fh.write(b"QIMX" + struct.pack("<2I", 1, len(IMATRIX_TYPES)) + body)
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=DEFAULT_LIB)
    ap.add_argument("--cpu-lib", default=None, help="libggml-cpu.so (default: next to --lib)")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    ggml = Ggml(args.lib)
    os.makedirs(args.out, exist_ok=True)
    failures = []
    total = 0
    for name, (tid, bs, ts) in TYPES.items():
        rng = np.random.default_rng(1000 + tid)
        x = make_input(name, rng)
        n = len(x)
        q = ggml.quantize(name, x)
        deq = ggml.dequantize(name, q, n)
        flags = 0
        gq_bytes = gguf_quantize(name, x)
        q_note = "-"
        if gq_bytes is not None:
            same = gq_bytes == q
            if name == "F16":
                # numpy keeps NaN payloads; ggml writes every NaN as 0x7E00
                # (sign kept). Compare the non-NaN inputs only.
                same = same | np.repeat(np.isnan(x), 2)
            if np.all(same):
                flags |= 1
                q_note = "agrees"
            else:
                bad = np.flatnonzero(~same)
                q_note = f"DIFFERS at {len(bad)} bytes (first {bad[:5].tolist()})"
                failures.append(f"{name}: gguf-py quantize {q_note}")
        gd = gguf_dequantize(name, q, n)
        d_note = "-"
        if gd is not None:
            if same_f32(gd, deq):
                flags |= 2
                d_note = "agrees"
            else:
                diff = np.nanmax(np.abs(gd.astype(np.float64) - deq))
                d_note = f"differs (max abs {diff:.3g}; ggml's stored)"
        header = b"QGLD" + struct.pack("<5I", 1, tid, n, len(q), flags)
        path = os.path.join(args.out, f"{name}.bin")
        with open(path, "wb") as fh:
            fh.write(header + x.astype("<f4").tobytes() + q.tobytes() + deq.astype("<f4").tobytes())
        size = os.path.getsize(path)
        total += size
        print(f"{name:5} n={n:5} bytes={len(q):6} file={size:7}  gguf-py quantize: {q_note}; dequantize: {d_note}")
    cpu_path = args.cpu_lib or os.path.join(os.path.dirname(args.lib), "libggml-cpu.so")
    total += write_dot_goldens(ggml, cpu_path, args.out)
    total += write_imatrix_goldens(ggml, args.out)
    print(f"total {total} bytes in {args.out}")
    if failures:
        print("REFERENCES DISAGREE:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
