"""Read a GGUF with the `gguf` Python package and write every tensor's
dequantized values (float32, little-endian) to OUT_DIR/<tensor name>.f32,
plus OUT_DIR/types.txt with "name type dims" lines. Used by
convert/tests/gguf_py.rs to check our files against an independent reader."""
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

path, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
r = GGUFReader(path)
lines = []
for t in r.tensors:
    vals = dequantize(t.data, t.tensor_type).astype("<f4")
    (out / f"{t.name}.f32").write_bytes(vals.tobytes())
    lines.append(f"{t.name} {t.tensor_type.name} {','.join(str(int(x)) for x in t.shape)}")
(out / "types.txt").write_text("\n".join(lines) + "\n")
