#!/usr/bin/env python3
"""Read a GGUF with the `gguf` Python package's GGUFReader and print what it
sees as JSON on stdout. gguf/tests/python_interop.rs runs this on a file our
writer made and compares (skipped when `import gguf` fails).

Usage: python3 scripts/gguf_fixtures/read_with_gguf_py.py FILE.gguf

Output: {"alignment", "data_offset", "metadata": [{"key", "types", "value"}],
"tensors": [{"name", "dims", "type", "n_elements", "n_bytes", "offset", "hex"}]}
GGUFReader flattens nested arrays, so "value" of an array of arrays is the
flat list of the innermost items; "types" is its type chain ("ARRAY", "INT32").
"""
import json
import sys

import numpy as np
from gguf import GGUFReader


def plain(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def main():
    r = GGUFReader(sys.argv[1])
    md = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        md.append({"key": key, "types": [t.name for t in field.types], "value": plain(field.contents())})
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).tobytes()
        tensors.append({
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "offset": int(t.data_offset) - int(r.data_offset),
            "hex": raw.hex(),
        })
    json.dump({"alignment": int(r.alignment), "data_offset": int(r.data_offset),
               "metadata": md, "tensors": tensors}, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
