#!/usr/bin/env python3
"""Load GGUF files with ggml's own C reader (gguf_init_from_file in
libggml-base, e.g. from a llama.cpp build) through ctypes, and print one JSON
line per file: whether ggml accepts it and, if so, what it sees.
gguf/tests/ggml_interop.rs runs this (scripts/gguf_fixtures/ggml_check.sh).

Usage: python3 read_with_ggml.py /path/to/libggml-base.so FILE.gguf [FILE.gguf ...]
Line: {"file", "ok", "version", "alignment", "data_offset",
"metadata": [{"key", "type", "value"} | {"key", "type": "ARRAY", "elem", "items"}],
"tensors": [{"name", "type", "ne", "offset", "size"}]}
Standard library only. Invalid UTF-8 (which ggml does not check) is shown with U+FFFD.
"""
import ctypes as C
import json
import sys

NUMERIC = {  # gguf_type -> (name, ctypes type)
    0: ("UINT8", C.c_uint8), 1: ("INT8", C.c_int8), 2: ("UINT16", C.c_uint16),
    3: ("INT16", C.c_int16), 4: ("UINT32", C.c_uint32), 5: ("INT32", C.c_int32),
    6: ("FLOAT32", C.c_float), 7: ("BOOL", C.c_bool), 10: ("UINT64", C.c_uint64),
    11: ("INT64", C.c_int64), 12: ("FLOAT64", C.c_double),
}
GETTERS = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32",
           7: "bool", 10: "u64", 11: "i64", 12: "f64"}


class Params(C.Structure):
    _fields_ = [("no_alloc", C.c_bool), ("ctx", C.c_void_p)]


def load(path):
    lib = C.CDLL(path)
    P = C.c_void_p
    sig = {
        "gguf_init_from_file": (P, [C.c_char_p, Params]),
        "gguf_free": (None, [P]),
        "gguf_get_version": (C.c_uint32, [P]),
        "gguf_get_alignment": (C.c_size_t, [P]),
        "gguf_get_data_offset": (C.c_size_t, [P]),
        "gguf_get_n_kv": (C.c_int64, [P]),
        "gguf_get_key": (C.c_char_p, [P, C.c_int64]),
        "gguf_get_kv_type": (C.c_int, [P, C.c_int64]),
        "gguf_get_arr_type": (C.c_int, [P, C.c_int64]),
        "gguf_get_arr_n": (C.c_size_t, [P, C.c_int64]),
        "gguf_get_arr_data": (P, [P, C.c_int64]),
        "gguf_get_arr_str": (C.c_char_p, [P, C.c_int64, C.c_size_t]),
        "gguf_get_val_str": (C.c_char_p, [P, C.c_int64]),
        "gguf_get_n_tensors": (C.c_int64, [P]),
        "gguf_get_tensor_name": (C.c_char_p, [P, C.c_int64]),
        "gguf_get_tensor_offset": (C.c_size_t, [P, C.c_int64]),
        "gguf_get_tensor_type": (C.c_int, [P, C.c_int64]),
        "gguf_get_tensor_size": (C.c_size_t, [P, C.c_int64]),
        "gguf_get_tensor_ne": (C.POINTER(C.c_int64), [P, C.c_int64]),
    }
    for t, g in GETTERS.items():
        sig[f"gguf_get_val_{g}"] = (NUMERIC[t][1], [P, C.c_int64])
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


def read(lib, path):
    ctx = lib.gguf_init_from_file(path.encode(), Params(True, None))
    if not ctx:
        return {"file": path, "ok": False}
    try:
        md = []
        for i in range(lib.gguf_get_n_kv(ctx)):
            key = lib.gguf_get_key(ctx, i).decode(errors="replace")
            t = lib.gguf_get_kv_type(ctx, i)
            if t == 8:
                md.append({"key": key, "type": "STRING", "value": lib.gguf_get_val_str(ctx, i).decode(errors="replace")})
            elif t == 9:
                et = lib.gguf_get_arr_type(ctx, i)
                n = lib.gguf_get_arr_n(ctx, i)
                if et == 8:
                    items = [lib.gguf_get_arr_str(ctx, i, j).decode(errors="replace") for j in range(n)]
                    ename = "STRING"
                else:
                    ename, ct = NUMERIC[et]
                    ptr = C.cast(lib.gguf_get_arr_data(ctx, i), C.POINTER(ct))
                    items = [ptr[j] for j in range(n)]
                md.append({"key": key, "type": "ARRAY", "elem": ename, "items": items})
            else:
                v = getattr(lib, f"gguf_get_val_{GETTERS[t]}")(ctx, i)
                md.append({"key": key, "type": NUMERIC[t][0], "value": v})
        tensors = []
        for i in range(lib.gguf_get_n_tensors(ctx)):
            ne = lib.gguf_get_tensor_ne(ctx, i)
            tensors.append({
                "name": lib.gguf_get_tensor_name(ctx, i).decode(errors="replace"),
                "type": lib.gguf_get_tensor_type(ctx, i),
                "ne": [ne[j] for j in range(4)],
                "offset": lib.gguf_get_tensor_offset(ctx, i),
                "size": lib.gguf_get_tensor_size(ctx, i),
            })
        return {"file": path, "ok": True, "version": lib.gguf_get_version(ctx),
                "alignment": lib.gguf_get_alignment(ctx),
                "data_offset": lib.gguf_get_data_offset(ctx),
                "metadata": md, "tensors": tensors}
    finally:
        lib.gguf_free(ctx)


def main():
    lib = load(sys.argv[1])
    for path in sys.argv[2:]:
        print(json.dumps(read(lib, path), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
