#!/usr/bin/env python3
"""Write a Falcon Mamba GGUF of the 7B's shapes, Q4_K_M, with random weights,
directly (python3 + numpy only; no `gguf` package, no bf16 checkpoint, no
convert step). For the GPU check (scripts/gpu/check.sh, review finding 13):
speed depends only on the shapes and types, and the 7B logits check compares
the GPU with the CPU on the same file, so the values only have to stay finite.

    python3 scripts/gpu/make_7b_gguf.py OUT.gguf              # the 7B: 4.2 GB
    python3 scripts/gpu/make_7b_gguf.py OUT.gguf --tiny       # 2 layers, d 256
    python3 scripts/gpu/make_7b_gguf.py OUT.gguf --layers 4   # 7B widths, 4 layers

Tensor types: llama-quantize's Q4_K_M for arch `mamba` (restated in
convert/src/mix.rs and /work/shared/falcon-mamba-facts.md section 3): 2-D
tensors named `*weight` except norms and ssm_conv1d are quantized; the head
`output.weight` is Q6_K; every other quantized matrix is Q4_K (Mamba has no
attention/FFN names, so the _M upgrades never apply); a row length that Q4_K's
256-value blocks do not fill falls back to Q5_0 (Q6_K to Q8_0), then F16.
Everything else (norms, conv1d, biases, ssm_a, ssm_d) is F32. For the 7B:
token_embd, ssm_in, ssm_x, ssm_dt (rows of dt_rank = 256) and ssm_out Q4_K,
output Q6_K.

Values: each quantized tensor is tiled from a pool of random blocks (fast:
the 4.2 GB are memcpy'd, not generated) with f16 scales d in [1e-3, 3e-3],
small sub-block scales and zero-mean quants, so a weight's RMS is about
0.02-0.05 (about 1/sqrt(row length)) and activations stay O(1)..O(1e3)
through 64 layers (every block re-normalises its input). F32 tensors take
Mamba's usual initialisation: norm weights 1, A = -[1..N] per channel,
D = 1, dt bias = softplus^-1 of dt in [1e-3, 1e-1], conv weights ~ N(0, 0.5).

Metadata: the keys our loader reads (src/model/mod.rs) as llama.cpp writes
them, and the tokenizer keys copied byte for byte from a small GGUF holding
the Falcon vocabulary (tests/fixtures/vocab/ggml-vocab-falcon.gguf by
default), with Falcon Mamba's bos 0 / pad 0 / no added BOS.
"""
import argparse
import os
import struct
import sys

import numpy as np

ALIGN = 32

# ggml type ids, (values per block, bytes per block)
F32, F16, Q5_0, Q8_0, Q4_K, Q6_K = 0, 1, 6, 8, 12, 14
BLOCK = {F32: (1, 4), F16: (1, 2), Q5_0: (32, 22), Q8_0: (32, 34), Q4_K: (256, 144), Q6_K: (256, 210)}
TNAME = {F32: "F32", F16: "F16", Q5_0: "Q5_0", Q8_0: "Q8_0", Q4_K: "Q4_K", Q6_K: "Q6_K"}

# GGUF value types
U8, I8, U16, I16, U32, I32, FLT, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", FLT: "<f", BOOL: "<B",
          U64: "<Q", I64: "<q", F64: "<d"}

SHAPES = {
    "7b": dict(d=4096, layers=64, e=8192, n=16, k=4, r=256),
    "tiny": dict(d=256, layers=2, e=512, n=16, k=4, r=16),
}

POOL = 4093  # blocks per random pool (prime, so consecutive rows differ)


# ---------------------------------------------------------------- reading KVs

def _skip_value(buf, off, vt):
    if vt in SCALAR:
        return off + struct.calcsize(SCALAR[vt])
    if vt == STR:
        (n,) = struct.unpack_from("<Q", buf, off)
        return off + 8 + n
    if vt == ARR:
        et, n = struct.unpack_from("<IQ", buf, off)
        off += 12
        if et in SCALAR:
            return off + n * struct.calcsize(SCALAR[et])
        for _ in range(n):
            off = _skip_value(buf, off, et)
        return off
    raise ValueError(f"GGUF value type {vt} unknown")


def read_kvs(path):
    """{key: raw bytes of (u32 type, value)} of a GGUF's KV section, in order."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF")
        version, _nt, nkv = struct.unpack_from("<IQQ", head, 4)
        if version != 3:
            raise ValueError(f"{path}: GGUF version {version}, want 3")
        # The KV section of a vocab GGUF is a few MB: read generously.
        buf = head + f.read(64 << 20)
    off, out = 24, {}
    for _ in range(nkv):
        (kl,) = struct.unpack_from("<Q", buf, off)
        key = buf[off + 8:off + 8 + kl].decode()
        off += 8 + kl
        (vt,) = struct.unpack_from("<I", buf, off)
        end = _skip_value(buf, off + 4, vt)
        if end > len(buf):
            raise ValueError(f"{path}: KV section longer than read")
        out[key] = buf[off:end]
        off = end
    return out


# ---------------------------------------------------------------- writing KVs

def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vt, value):
    if vt == STR:
        body = gstr(value)
    else:
        body = struct.pack(SCALAR[vt], value)
    return gstr(key) + struct.pack("<I", vt) + body


# ---------------------------------------------------------------- types

def quant_type(name, ne0, nd):
    """llama-quantize Q4_K_M for arch mamba (convert/src/mix.rs::tensor_type)."""
    if nd < 2 or not name.endswith("weight") or "_norm.weight" in name or "ssm_conv1d" in name:
        return F32
    ty = Q6_K if name == "output.weight" else Q4_K
    if ne0 % 256 == 0:
        return ty
    alt = Q8_0 if ty == Q6_K else Q5_0
    return alt if ne0 % 32 == 0 else F16


# ---------------------------------------------------------------- random pools

def f16_bytes(a):
    return np.asarray(a, dtype="<f2").view(np.uint8).reshape(len(a), 2)


def pool_q4_k(rng, nb):
    # d, dmin (f16), scales[12] (6-bit sc/m for 8 sub-blocks), qs[128].
    # Sub-block scale sc in 2..6 and min m = sc with dmin = 7.5 d: value =
    # d*sc*q - 7.5*d*sc = d*sc*(q - 7.5), zero mean.
    d = rng.uniform(1e-3, 3e-3, nb).astype(np.float32)
    sc = rng.integers(2, 7, (nb, 8)).astype(np.uint8)
    m = sc.copy()
    s = np.zeros((nb, 12), np.uint8)
    # ggml get_scale_min_k4: j < 4: sc = s[j] & 63, m = s[j+4] & 63;
    # j >= 4: sc = (s[j+4] & 0xF) | ((s[j-4] >> 6) << 4), m = (s[j+4] >> 4) | ((s[j] >> 6) << 4).
    for j in range(4):
        s[:, j] = sc[:, j] & 63
        s[:, j + 4] = m[:, j] & 63
    for j in range(4, 8):  # values < 16: the high bits stay 0
        s[:, j + 4] = (sc[:, j] & 0xF) | ((m[:, j] & 0xF) << 4)
    qs = rng.integers(0, 256, (nb, 128), dtype=np.uint8)
    return np.concatenate([f16_bytes(d), f16_bytes(d * 7.5), s, qs], axis=1)


def pool_q6_k(rng, nb):
    # ql[128], qh[64], scales[16] (i8), d (f16) last: value = d*sc*(q - 32).
    ql = rng.integers(0, 256, (nb, 128), dtype=np.uint8)
    qh = rng.integers(0, 256, (nb, 64), dtype=np.uint8)
    sc = (rng.integers(1, 4, (nb, 16)) * rng.choice([-1, 1], (nb, 16))).astype(np.int8).view(np.uint8)
    d = rng.uniform(1e-3, 3e-3, nb).astype(np.float32)
    return np.concatenate([ql, qh, sc, f16_bytes(d)], axis=1)


def pool_q5_0(rng, nb):
    # d (f16), qh (u32), qs[16]: value = d*(q - 16).
    d = rng.uniform(1e-3, 3e-3, nb).astype(np.float32)
    rest = rng.integers(0, 256, (nb, 20), dtype=np.uint8)
    return np.concatenate([f16_bytes(d), rest], axis=1)


def pool_q8_0(rng, nb):
    d = rng.uniform(1e-4, 3e-4, nb).astype(np.float32)
    q = rng.integers(-127, 128, (nb, 32)).astype(np.int8).view(np.uint8)
    return np.concatenate([f16_bytes(d), q], axis=1)


def pool_f16(rng, nb):
    return f16_bytes(rng.normal(0, 0.05, nb).astype(np.float32))


POOLS = {Q4_K: pool_q4_k, Q6_K: pool_q6_k, Q5_0: pool_q5_0, Q8_0: pool_q8_0, F16: pool_f16}


def f32_values(rng, name, dims, e, n):
    """Mamba's usual initial values for the F32 tensors (dims innermost first)."""
    count = int(np.prod(dims))
    if name.endswith("norm.weight") or name.endswith("ssm_d"):
        v = np.ones(count, np.float32)
    elif name.endswith("ssm_a"):  # {N, E}: A[e][n] = -(n + 1)
        v = -np.tile(np.arange(1, n + 1, dtype=np.float32), e)
    elif name.endswith("ssm_dt.bias"):
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), count))
        v = (dt + np.log(-np.expm1(-dt))).astype(np.float32)  # softplus^-1
    elif name.endswith("ssm_conv1d.weight"):
        v = rng.normal(0, 0.5, count).astype(np.float32)
    elif name.endswith("ssm_conv1d.bias"):
        v = rng.normal(0, 0.1, count).astype(np.float32)
    else:
        v = rng.normal(0, 0.05, count).astype(np.float32)
    return v.astype("<f4").tobytes()


# ---------------------------------------------------------------- the model

def tensors(c, vocab):
    """(name, dims innermost first) in llama.cpp's order."""
    d, e, n, k, r = c["d"], c["e"], c["n"], c["k"], c["r"]
    out = [("token_embd.weight", [d, vocab])]
    for i in range(c["layers"]):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", [d]),
            (b + "ssm_in.weight", [d, 2 * e]),
            (b + "ssm_conv1d.weight", [k, e]),
            (b + "ssm_conv1d.bias", [e]),
            (b + "ssm_x.weight", [e, r + 2 * n]),
            (b + "ssm_dt.weight", [r, e]),
            (b + "ssm_dt.bias", [e]),
            (b + "ssm_a", [n, e]),
            (b + "ssm_d", [e]),
            (b + "ssm_out.weight", [e, d]),
        ]
    out += [("output_norm.weight", [d]), ("output.weight", [d, vocab])]
    return out


def nbytes(ty, dims):
    per, size = BLOCK[ty]
    assert dims[0] % per == 0, (ty, dims)
    return int(np.prod(dims)) // per * size


def pad(n):
    return (ALIGN - n % ALIGN) % ALIGN


TOKENIZER_COPY = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tiny", action="store_true", help="d 256, 2 layers, d_inner 512, dt_rank 16 (dt falls back to F16)")
    for f in ("layers", "d", "e", "r"):
        ap.add_argument("--" + f, type=int, help=f"override {f} (d = hidden, e = d_inner, r = dt_rank)")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap.add_argument("--vocab-from", default=os.path.join(root, "tests/fixtures/vocab/ggml-vocab-falcon.gguf"),
                    help="a GGUF holding the Falcon vocabulary (tokenizer.* keys are copied)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    c = dict(SHAPES["tiny" if a.tiny else "7b"])
    for f in ("layers", "d", "e", "r"):
        if getattr(a, f) is not None:
            c[f] = getattr(a, f)
    rng = np.random.default_rng(a.seed)

    src = read_kvs(a.vocab_from)
    missing = [k for k in TOKENIZER_COPY if k not in src]
    if missing:
        sys.exit(f"{a.vocab_from}: no {missing}")
    # The vocabulary's size: the tokens array's count.
    vocab = struct.unpack_from("<Q", src["tokenizer.ggml.tokens"], 8)[0]

    label = "7B" if c["d"] == 4096 and c["layers"] == 64 else f"{c['layers']}L-d{c['d']}"
    kvs = [
        kv("general.architecture", STR, "mamba"),
        kv("general.type", STR, "model"),
        kv("general.name", STR, f"Falcon Mamba {label} random (make_7b_gguf.py)"),
        kv("general.size_label", STR, label),
        kv("mamba.context_length", U32, 8192),
        kv("mamba.embedding_length", U32, c["d"]),
        kv("mamba.feed_forward_length", U32, 0),
        kv("mamba.attention.head_count", U32, 0),
        kv("mamba.block_count", U32, c["layers"]),
        kv("mamba.ssm.conv_kernel", U32, c["k"]),
        kv("mamba.ssm.inner_size", U32, c["e"]),
        kv("mamba.ssm.state_size", U32, c["n"]),
        kv("mamba.ssm.time_step_rank", U32, c["r"]),
        kv("mamba.attention.layer_norm_rms_epsilon", FLT, 1e-5),
        kv("mamba.ssm.dt_b_c_rms", BOOL, 1),
    ]
    kvs += [gstr(k) + src[k] for k in TOKENIZER_COPY]
    kvs += [
        kv("tokenizer.ggml.bos_token_id", U32, 0),
        kv("tokenizer.ggml.padding_token_id", U32, 0),
        kv("tokenizer.ggml.add_bos_token", BOOL, 0),
        kv("tokenizer.ggml.add_eos_token", BOOL, 0),
        kv("general.quantization_version", U32, 2),
        kv("general.file_type", U32, 15),  # MOSTLY_Q4_K_M
    ]

    ts = tensors(c, vocab)
    infos, offs, off = [], [], 0
    for name, dims in ts:
        ty = quant_type(name, dims[0], len(dims))
        infos.append((name, dims, ty))
        offs.append(off)
        off += nbytes(ty, dims)
        off += pad(off)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(ts), len(kvs)) + b"".join(kvs)
    for (name, dims, ty), o in zip(infos, offs):
        header += gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", ty, o)
    header += b"\0" * pad(len(header))

    pools = {}
    tmp = a.out + ".part"
    with open(tmp, "wb") as f:
        f.write(header)
        for name, dims, ty in infos:
            if ty == F32:
                data = f32_values(rng, name, dims, c["e"], c["n"])
                f.write(data)
                f.write(b"\0" * pad(len(data)))
                continue
            if ty not in pools:
                pools[ty] = POOLS[ty](rng, POOL).tobytes()
            pool = memoryview(pools[ty])
            size = nbytes(ty, dims)
            # Tile the pool, from a random block on.
            blk = BLOCK[ty][1]
            at = int(rng.integers(0, POOL)) * blk
            left = size
            while left > 0:
                chunk = pool[at:at + left]
                f.write(chunk)
                left -= len(chunk)
                at = 0
            f.write(b"\0" * pad(size))
    os.replace(tmp, a.out)
    by = {}
    for name, dims, ty in infos:
        by[TNAME[ty]] = by.get(TNAME[ty], 0) + nbytes(ty, dims)
    print(f"{a.out}: {os.path.getsize(a.out) / 1e9:.3f} GB, {len(ts)} tensors, vocab {vocab}, "
          f"{c}; bytes by type: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(by.items())))


if __name__ == "__main__":
    main()
