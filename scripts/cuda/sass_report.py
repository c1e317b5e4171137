#!/usr/bin/env python3
"""SASS report: what the shipped cubins do, per kernel and architecture.

  pip install nvidia-cuda-nvdisasm==13.2.51   # nvdisasm (no 12.x nvdisasm wheel exists)
  python3 scripts/cuda/sass_report.py           # writes cuda/ptx/sass-report.{txt,json}
  python3 scripts/cuda/sass_report.py --check   # fails on a spill, a narrowed weight load,
                                                # or a committed report that differs

Reads cuda/cubin/<module>.sm_XX.cubin (built by build_ptx.py, which also
calls this on the cubins it builds, so `build_ptx.py --check` covers both).
Per kernel and architecture it lists:

- regs: registers per thread (the .text section's header, as the driver reads it);
- smem: static shared memory per block (the .nv.shared.<kernel> section);
- spill: bytes of local-memory stores / loads (STL / LDL) in the SASS. The
  kernels have no local arrays (ptxas -v: stack frame 0), so these are spills;
- occupancy: resident warps (and blocks) per SM at the kernel's launch block
  size (LAUNCH below, from cuda/src/ops.rs) on that architecture (SM_LIMITS);
- LDG: global loads by width (U8 S8 U16 S16 32 64 128), and of them the ones
  whose address derives from a weight pointer (WEIGHTS below: a forward
  dataflow over the SASS control-flow graph, from the kernel parameter's
  constant-bank words through every register written from them), with the
  weight bytes those loads bring; LDG.E.CONSTANT (ld.global.nc) counted apart;
- LDS by width, IDP.4A (dp4a), BRA and BSSY, and the instruction count.

All counts are static (per pass through the code, each branch counted once),
not executed counts.

--check fails (exit 1, naming the kernel and architecture) when a kernel
spills, when a decode kernel's widest weight LDG is narrower than EXPECT says
it was designed to use, or when the committed report differs from a fresh one.
"""
import json
import os
import re
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

NVDISASM_VERSION = "13.2.51"  # the PyPI wheel nvidia-cuda-nvdisasm; reads sm_75..sm_90 cubins
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNELS = os.path.join(ROOT, "cuda", "kernels")
CUBIN_DIR = os.path.join(ROOT, "cuda", "cubin")
REPORT_TXT = os.path.join(ROOT, "cuda", "ptx", "sass-report.txt")
REPORT_JSON = os.path.join(ROOT, "cuda", "ptx", "sass-report.json")
MODULES = ["elementwise", "embed", "matvec", "mma", "norm", "quantize", "ssm"]
ARCHS = ["80", "86", "89", "90"]

# Per SM: register file, resident warps, resident blocks, shared memory
# (the largest carveout), and the first kernel parameter's offset in
# constant bank 0 (EIATTR_PARAM_CBANK).
SM_LIMITS = {
    "80": dict(regs=65536, warps=64, blocks=32, smem=164 * 1024, param=0x160),
    "86": dict(regs=65536, warps=48, blocks=16, smem=100 * 1024, param=0x160),
    "89": dict(regs=65536, warps=48, blocks=24, smem=100 * 1024, param=0x160),
    "90": dict(regs=65536, warps=64, blocks=32, smem=228 * 1024, param=0x210),
}
REG_ALLOC_PER_WARP = 256  # registers are allocated per warp in units of 256
SMEM_RESERVED = 1024      # the driver reserves 1 KB of shared memory per block (sm_80+)
SMEM_ALLOC = 128          # shared memory allocation unit
SMEM_IN_SECTION = {"90": 1024}  # reserved bytes included in .nv.shared.<kernel> (checked against ptxas -v)

# Kernel name (full match) -> (threads per block, parameter struct, weight
# fields). Block sizes are those of the launches in cuda/src/ops.rs
# (dev.launch(..., (threads, 1, 1), ...); MATVEC_WARPS = 4, MATMUL_WARPS = 8;
# the norms take norm_threads(n) = n / 4 rounded up to a warp, 32..1024: here
# at Falcon Mamba 7B's shapes, n = 4096 for rms_norm(_q8a) and the dt rank
# 256 for rms_norm3; argmax_f32 takes ARGMAX_THREADS = 1024). Keep in step.
# The weight fields name the pointers, in the kernel's one parameter struct
# (parsed from cuda/kernels), to the model's weights: the loads through them
# are the "weight" loads. A kernel matched by no row is an error: add it.
QTYPES = "q4_0|q4_1|q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k|iq1_s|iq1_m|iq2_xxs|iq2_xs|iq2_s|tq1_0|tq2_0|iq3_xxs|iq3_s|iq4_nl|iq4_xs"
LAUNCH = [
    (rf"matvec_({QTYPES})_[1-8]", 128, "MatvecArgs", ["w"]),
    (r"matvec_(f32|f16|bf16)_[1-8]", 128, "MatvecFArgs", ["w"]),
    (rf"matvec_({QTYPES})_n3_[12]", 128, "MatvecTArgs", ["m.w"]),
    (rf"matmul_({QTYPES})", 256, "MatmulArgs", ["m.w"]),
    (rf"mma_matmul_({QTYPES})", 128, "MmaArgs", ["w"]),
    (r"mma_probe_s8", 32, None, []),
    (r"rms_norm", 1024, "RmsNormArgs", ["w"]),
    (r"rms_norm_q8a", 1024, "RmsNormQ8aArgs", ["r.w"]),
    (r"rms_norm3", 64, None, []),
    (r"quantize_q8a", 256, None, []),
    (r"conv1d_silu_k4", 128, "ConvArgs", ["w", "b"]),
    (r"selective_scan_n16", 128, "ScanArgs", ["A", "D", "dt_bias"]),
    (r"embed_rows", 128, "EmbedArgs", ["table"]),
    (r"add_f32", 256, None, []),
    (r"copy_rows_f32", 256, None, []),
    (r"argmax_f32", 1024, None, []),
    (r"topk_f32", 256, None, []),
]

# Decode kernels: the narrowest their widest weight LDG may be, in bits, on
# every architecture (and none may spill). Today's truth: the quantized
# matvec/matmul read weights with 8- and 16-bit loads (ld_u32_a2 is two
# 16-bit loads); raise an entry when its loads are widened.
EXPECT = {}
for _t in QTYPES.split("|"):
    EXPECT[f"matvec_{_t}_1"] = 16
    EXPECT[f"matvec_{_t}_8"] = 16
    EXPECT[f"matmul_{_t}"] = 16
# The K-quants are read 16 bytes at a time (Q4_K and Q5_K as stored, Q2_K,
# Q3_K and Q6_K in their padded device layouts; review finding 5), and IQ4_XS in its reordered
# device layout; the legacy 32-value types, IQ4_NL, the IQ1, IQ2, IQ3 and TQ
# types (2-byte aligned blocks, read as the file has them) still in 8- and
# 16-bit loads. The scan reads its state
# and A rows 16 bytes at a time (finding 18).
for _t in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"):
    EXPECT[f"matvec_{_t}_1"] = EXPECT[f"matvec_{_t}_8"] = EXPECT[f"matmul_{_t}"] = 128
# The tensor-core matmul decodes its units with matvec.cu's load_unit: the same loads.
for _t in QTYPES.split("|"):
    EXPECT[f"mma_matmul_{_t}"] = EXPECT[f"matmul_{_t}"]
EXPECT.update({"rms_norm_q8a": 32, "selective_scan_n16": 128, "conv1d_silu_k4": 32})

WIDTHS = ["U8", "S8", "U16", "S16", "32", "64", "128"]
BITS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "32": 32, "64": 64, "128": 128}
# Instructions that write no register (their operands are all sources).
NO_DEST = re.compile(r"^(ST|STG|STS|STL|RED|BRA|BRX|JMP|JMX|BSSY|BSYNC|BREAK|BMOV|EXIT|RET|CALL|BAR|"
                     r"WARPSYNC|NOP|MEMBAR|DEPBAR|ERRBAR|CCTL|YIELD|BPT|KILL|FENCE|ARRIVES|SYNCS)(\.|$)")
SETP = re.compile(r"^[A-Z0-9]*SETP(\.|$)|^PLOP3")  # write predicates only
# Address arithmetic: only these carry a pointer into their result; anything
# else (loads, float math, bit fiddling) gives data, not a weight address.
ADDRESS_OPS = {"IADD3", "IADD", "IMAD", "LEA", "MOV", "LDC", "SEL", "UIADD3", "UIMAD", "ULEA", "UMOV", "ULDC",
               "USEL", "R2UR", "IADD32I", "ISCADD", "MOV32I"}
REG = re.compile(r"\b(U?R)(\d+)\b")
CBANK = re.compile(r"c\[0x0\]\[(0x[0-9a-f]+)\]")


def nvdisasm():
    try:
        import nvidia
    except ImportError:
        nvidia = None
    for base in (nvidia.__path__ if nvidia else []):
        p = os.path.join(base, "cu13", "bin", "nvdisasm")
        if os.path.exists(p):
            return p
    sys.exit(f"error: nvdisasm not found: pip install nvidia-cuda-nvdisasm=={NVDISASM_VERSION}")


# ---- the kernels' parameter structs (C layout) ------------------------------

def parse_structs():
    text = ""
    for f in sorted(os.listdir(KERNELS)):
        if f.endswith((".cu", ".cuh")):
            text += open(os.path.join(KERNELS, f)).read() + "\n"
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
    layouts = {}  # name -> (size, align, {field: (offset, size)})
    for name, body in re.findall(r"\bstruct\s+(\w+Args)\s*\{(.*?)\};", text, flags=re.S):
        off, align, fields = 0, 1, {}
        for decl in body.split(";"):
            decl = decl.strip()
            if not decl:
                continue
            m = re.match(r"(?:const\s+)?(\w+)\s*(\*?)\s*(.*)$", decl, flags=re.S)
            base, ptr, names = m.groups()
            for raw in names.split(","):
                raw = raw.strip()
                p = ptr or ("*" if raw.startswith("*") else "")
                fname = raw.lstrip("*").strip()
                if p:
                    sub, size, al = None, 8, 8
                elif base in layouts:
                    size, al, sub = layouts[base]
                elif base in ("int", "float", "unsigned", "u32"):
                    sub, size, al = None, 4, 4
                else:
                    sys.exit(f"error: struct {name}: field type {base} not understood by sass_report.py")
                off = (off + al - 1) // al * al
                fields[fname] = (off, size)
                if sub:
                    for k, (o, s) in sub.items():
                        fields[f"{fname}.{k}"] = (off + o, s)
                off += size
                align = max(align, al)
        layouts[name] = ((off + align - 1) // align * align, align, fields)
    return {n: f for n, (_, _, f) in layouts.items()}


def launch_of(kernel, structs):
    rows = [r for r in LAUNCH if re.fullmatch(r[0], kernel)]
    if len(rows) != 1:
        sys.exit(f"error: kernel {kernel}: {'no' if not rows else 'several'} rows in sass_report.py's LAUNCH table")
    _, threads, sname, wfields = rows[0]
    spans = []
    for f in wfields:
        if sname not in structs or f not in structs[sname]:
            sys.exit(f"error: kernel {kernel}: field {f} of struct {sname} not found in cuda/kernels")
        off, size = structs[sname][f]
        spans.append((off, off + size))
    return threads, spans


# ---- the cubin's ELF sections ---------------------------------------------

def elf_info(data):
    """Per kernel: registers (EIATTR_REGCOUNT in .nv.info) and the size of
    its .nv.shared.<kernel> section."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    cstr = lambda off: data[off:data.index(b"\0", off)].decode()
    secs = {cstr(hdrs[shstrndx][4] + h[0]): h for h in hdrs}  # (name, type, flags, addr, offset, size, ...)
    sym, strtab = secs[".symtab"], secs[".strtab"]
    names = [cstr(strtab[4] + struct.unpack_from("<I", data, sym[4] + k * 24)[0]) for k in range(sym[5] // 24)]
    regs = {}
    info = secs[".nv.info"]
    off, end = info[4], info[4] + info[5]
    while off < end:
        fmt, attr = data[off], data[off + 1]
        if fmt == 0x04:  # EIFMT_SVAL: u16 size, then the value
            size, = struct.unpack_from("<H", data, off + 2)
            if attr == 0x2F:  # EIATTR_REGCOUNT: symbol index, count
                k, n = struct.unpack_from("<II", data, off + 4)
                regs[names[k]] = n
            off += 4 + size
        else:  # EIFMT_NVAL / BVAL / HVAL: 2 bytes of value inline
            off += 4
    smem = {n[len(".nv.shared."):]: h[5] for n, h in secs.items() if n.startswith(".nv.shared.")}
    return regs, smem


# ---- SASS ---------------------------------------------------------------------

def parse_sass(text):
    """kernel -> list of instructions (pred, opcode, operands, label-or-None)."""
    funcs, cur, pending = {}, None, []
    for line in text.splitlines():
        m = re.match(r"\s*\.section\s+\.text\.(\w+),", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        if cur is None:
            continue
        m = re.match(r"^(\.L_x_\d+):\s*$", line)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;", line)
        if m:
            pred = (m.group(1) or "").strip()
            ops = [o.strip() for o in m.group(3).split(",")] if m.group(3) else []
            cur.append((pred, m.group(2), ops, pending))
            pending = []
    return funcs


def ldg_width(op):
    mods = op.split(".")[1:]
    for w in ("U8", "S8", "U16", "S16", "64", "128"):
        if w in mods:
            return w
    return "32"


def regs_in(s):
    return {a + b for a, b in REG.findall(s)}


def analyse(insns, spans, param):
    """Counts, and the weight LDGs: loads whose address register may hold a
    value computed from a weight pointer (forward may-dataflow over the CFG)."""
    def weight_cbank(s):
        for h in CBANK.findall(s):
            o = int(h, 16) - param
            if any(a <= o < b for a, b in spans):
                return True
        return False

    labels = {}
    for i, (_, _, _, lbls) in enumerate(insns):
        for l in lbls:
            labels[l] = i
    # Basic blocks: leaders at labels and after control transfers.
    leaders = {0} | set(labels.values())
    for i, (_, op, _, _) in enumerate(insns):
        if op.split(".")[0] in ("BRA", "BRX", "JMP", "JMX", "EXIT", "RET", "CALL") and i + 1 < len(insns):
            leaders.add(i + 1)
    starts = sorted(leaders)
    block_of = {s: k for k, s in enumerate(starts)}
    ends = starts[1:] + [len(insns)]
    succ = []
    for s, e in zip(starts, ends):
        pred, op, ops, _ = insns[e - 1]
        base = op.split(".")[0]
        nxt = [block_of[e]] if e < len(insns) else []
        targets = [block_of[labels[t]] for t in re.findall(r"\((\.L_x_\d+)\)", " ".join(ops)) if t in labels]
        if base == "BRA":
            succ.append(targets + (nxt if pred or ".DIV" in op else []))
        elif base in ("BRX", "JMX"):
            succ.append(list(range(len(starts))))
        elif base in ("EXIT", "RET"):
            succ.append(nxt if pred else [])
        else:
            succ.append(nxt)

    weight_loads = set()

    def step(i, taint, cond):
        """taint: registers that may hold a weight address on some path;
        cond: reg -> (predicate, tainted) for a register last written under
        a predicate, as read by instructions under that same predicate."""
        pred, op, ops, _ = insns[i]
        base = op.split(".")[0]

        def tainted_src(s):
            return any(cond[r][1] if r in cond and cond[r][0] == pred else r in taint for r in regs_in(s))

        if base == "LDG":
            addr = re.sub(r"desc\[[^\]]*\]", "", " ".join(ops[1:]))
            if tainted_src(addr):
                weight_loads.add(i)
        # predicates written (operand slots 0 and 1): forget what was written under them
        for o in ops[:2]:
            m = re.match(r"^U?P\d", o)
            if m:
                for r in [r for r, (p, _) in cond.items() if p and p.lstrip("@!") == m.group(0)]:
                    del cond[r]
        if NO_DEST.match(op) or not ops or SETP.match(op):
            return
        k = 0
        while k < len(ops) and re.match(r"^!?U?P(\d|T)", ops[k]):
            k += 1
        m = re.match(r"^(U?R)(\d+|Z)\b", ops[k]) if k < len(ops) else None
        if not m or m.group(2) == "Z":
            return
        n = 4 if ".128" in op else 2 if (".64" in op or ".WIDE" in op) else 1
        dests = [f"{m.group(1)}{int(m.group(2)) + j}" for j in range(n)]
        srcs = " ".join(ops[k + 1:])
        t = base in ADDRESS_OPS and (tainted_src(srcs) or weight_cbank(srcs))
        for d in dests:
            if pred:
                cond[d] = (pred, t)
                if t:
                    taint.add(d)
            else:
                cond.pop(d, None)
                if t:
                    taint.add(d)
                else:
                    taint.discard(d)

    state_in = [None] * len(starts)
    state_in[0] = frozenset()
    work = [0]
    while work:
        b = work.pop()
        t, cond = set(state_in[b]), {}
        for i in range(starts[b], ends[b]):
            step(i, t, cond)
        t = frozenset(t)
        for s in succ[b]:
            if state_in[s] is None or not t <= state_in[s]:
                state_in[s] = t if state_in[s] is None else state_in[s] | t
                work.append(s)

    r = dict(ldg={}, ldg_weight={}, ldg_constant=0, lds={}, dp4a=0, bra=0, bssy=0,
             spill_st_bytes=0, spill_ld_bytes=0, instructions=0)
    for i, (_, op, ops, _) in enumerate(insns):
        base = op.split(".")[0]
        if base == "NOP":
            continue
        r["instructions"] += 1
        if base == "LDG":
            w = ldg_width(op)
            r["ldg"][w] = r["ldg"].get(w, 0) + 1
            if ".CONSTANT" in op:
                r["ldg_constant"] += 1
            if i in weight_loads:
                r["ldg_weight"][w] = r["ldg_weight"].get(w, 0) + 1
        elif base == "LDS":
            w = ldg_width(op)
            r["lds"][w] = r["lds"].get(w, 0) + 1
        elif base == "IDP":
            r["dp4a"] += 1
        elif base == "IMMA":
            r["imma"] = r.get("imma", 0) + 1
        elif base == "BRA":
            r["bra"] += 1
        elif base == "BSSY":
            r["bssy"] += 1
        elif base in ("STL", "LDL"):
            key = "spill_st_bytes" if base == "STL" else "spill_ld_bytes"
            r[key] += BITS[ldg_width(op)] // 8
    for k in ("ldg", "ldg_weight", "lds"):
        r[k] = {w: r[k][w] for w in WIDTHS if w in r[k]}
    r["weight_bytes"] = sum(BITS[w] // 8 * c for w, c in r["ldg_weight"].items())
    r["widest_weight_ldg"] = max((BITS[w] for w in r["ldg_weight"]), default=0)
    return r


def occupancy(arch, threads, regs, smem):
    lim = SM_LIMITS[arch]
    warps = (threads + 31) // 32
    per_warp = -(-max(regs, 1) * 32 // REG_ALLOC_PER_WARP) * REG_ALLOC_PER_WARP
    by_regs = (lim["regs"] // per_warp) // warps
    per_block = -(-(smem + SMEM_RESERVED) // SMEM_ALLOC) * SMEM_ALLOC
    by_smem = lim["smem"] // per_block
    blocks = min(by_regs, by_smem, lim["warps"] // warps, lim["blocks"])
    limiter = min(("regs", by_regs), ("smem", by_smem), ("warps", lim["warps"] // warps),
                  ("blocks", lim["blocks"]), key=lambda x: x[1])[0]
    return blocks, blocks * warps, limiter


def report_cubin(path, arch, structs, tool):
    regs_of, smem_of = elf_info(open(path, "rb").read())
    out = subprocess.run([tool, "-c", "-ndf", path], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: nvdisasm {path}:\n{out.stderr}")
    rows = {}
    for kernel, insns in parse_sass(out.stdout).items():
        if kernel.startswith("$"):
            continue
        threads, spans = launch_of(kernel, structs)
        regs = regs_of[kernel]
        # sm_90 cubins place the 1 KB reserved per block at the start of the
        # section; ptxas -v (and the occupancy below) count it apart
        smem = max(0, smem_of.get(kernel, 0) - SMEM_IN_SECTION.get(arch, 0))
        r = analyse(insns, spans, SM_LIMITS[arch]["param"])
        blocks, warps, limiter = occupancy(arch, threads, regs, smem)
        rows[kernel] = dict(threads=threads, regs=regs, smem=smem, occupancy_blocks=blocks,
                            occupancy_warps=warps, occupancy_limit=limiter, **r)
    return rows


def build_report(cubins, jobs=2):
    """cubins: {(module, arch): path}. Returns (text, json text, rows)."""
    structs = parse_structs()
    tool = nvdisasm()
    keys = sorted(cubins)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        results = list(ex.map(lambda k: report_cubin(cubins[k], k[1], structs, tool), keys))
    rows = {}  # kernel -> arch -> row
    for (module, arch), res in zip(keys, results):
        for kernel, row in res.items():
            rows.setdefault(kernel, {})[f"sm_{arch}"] = dict(module=module, **row)
    rows = {k: dict(sorted(v.items())) for k, v in sorted(rows.items())}
    lines = [f"# SASS of cuda/cubin/*.cubin (ptxas 12.2.140, nvdisasm {NVDISASM_VERSION}); static counts, see scripts/cuda/sass_report.py",
             "# occ = resident warps/blocks per SM at the launch block size (limited by regs, smem, warps or blocks);",
             "# ldg/lds = loads by width; w = the weight loads among them and the bytes they bring; dp4a = IDP.4A; imma = IMMA (int8 tensor-core MMA), where any"]
    for kernel, archs in rows.items():
        for arch, r in archs.items():
            fmt = lambda d: " ".join(f"{w}:{c}" for w, c in d.items()) or "-"
            spill = r["spill_st_bytes"] + r["spill_ld_bytes"]
            lines.append(
                f"{kernel:20} {arch} thr {r['threads']:3} regs {r['regs']:3} smem {r['smem']:5} spill {spill:3} "
                f"occ {r['occupancy_warps']:2}w/{r['occupancy_blocks']:2}b {r['occupancy_limit']:6} | "
                f"ldg {fmt(r['ldg'])}{' nc:%d' % r['ldg_constant'] if r['ldg_constant'] else ''} | "
                f"w {fmt(r['ldg_weight'])} = {r['weight_bytes']}B | lds {fmt(r['lds'])} | "
                f"dp4a {r['dp4a']}{' imma %d' % r['imma'] if r.get('imma') else ''} "
                f"bra {r['bra']} bssy {r['bssy']} ins {r['instructions']}")
    doc = {
        "tools": {"ptxas": "12.2.140", "nvdisasm": NVDISASM_VERSION},
        "sm_limits": {f"sm_{a}": dict(v, reg_alloc_per_warp=REG_ALLOC_PER_WARP, smem_reserved_per_block=SMEM_RESERVED)
                      for a, v in SM_LIMITS.items()},
        "kernels": rows,
    }
    return "\n".join(lines) + "\n", json.dumps(doc, indent=1, sort_keys=False) + "\n", rows


def regressions(rows):
    bad = []
    for kernel, archs in rows.items():
        for arch, r in archs.items():
            if r["spill_st_bytes"] or r["spill_ld_bytes"]:
                bad.append(f"{kernel} {arch}: spills ({r['spill_st_bytes']} bytes stored, {r['spill_ld_bytes']} loaded)")
            want = EXPECT.get(kernel)
            if want and r["widest_weight_ldg"] < want:
                bad.append(f"{kernel} {arch}: widest weight load is {r['widest_weight_ldg']}-bit, designed for {want}-bit "
                           f"(weight LDGs: {r['ldg_weight'] or 'none found'})")
    missing = sorted(set(EXPECT) - set(rows))
    bad += [f"{k}: expected in the cubins (EXPECT in sass_report.py), not found" for k in missing]
    return bad


SUMMARY = ["matvec_q4_k_1", "matvec_q6_k_1", "matvec_q4_k_8", "matmul_q4_k", "rms_norm_q8a",
           "selective_scan_n16", "conv1d_silu_k4", "argmax_f32", "topk_f32"]


def summary(rows, archs=("sm_86", "sm_90")):
    out = ["| kernel | sm | regs | smem | spill | warps/SM | LDG (all) | weight LDG | weight B | LDS | dp4a |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda d: " ".join(f"{w}×{c}" for w, c in d.items()) or "-"
    for k in SUMMARY:
        for a in archs:
            r = rows.get(k, {}).get(a)
            if r:
                out.append(f"| `{k}` | {a[3:]} | {r['regs']} | {r['smem']} | {r['spill_st_bytes'] + r['spill_ld_bytes']} | "
                           f"{r['occupancy_warps']} ({r['occupancy_limit']}) | {fmt(r['ldg'])} | {fmt(r['ldg_weight'])} | "
                           f"{r['weight_bytes']} | {fmt(r['lds'])} | {r['dp4a']} |")
    return "\n".join(out)


def check_or_write(txt, js, rows, check):
    """Returns the list of problems (empty: fine)."""
    bad = regressions(rows)
    if check:
        for p, text in ((REPORT_TXT, txt), (REPORT_JSON, js)):
            if not os.path.exists(p) or open(p).read() != text:
                bad.append(f"{os.path.relpath(p, ROOT)} differs from a fresh report (run scripts/cuda/build_ptx.py)")
    else:
        for p, text in ((REPORT_TXT, txt), (REPORT_JSON, js)):
            open(p, "w").write(text)
    return bad


def main():
    check = "--check" in sys.argv[1:]
    cubins = {}
    for m in MODULES:
        for a in ARCHS:
            p = os.path.join(CUBIN_DIR, f"{m}.sm_{a}.cubin")
            if not os.path.exists(p):
                sys.exit(f"error: {os.path.relpath(p, ROOT)} missing (run scripts/cuda/build_ptx.py)")
            cubins[(m, a)] = p
    txt, js, rows = build_report(cubins)
    bad = check_or_write(txt, js, rows, check)
    print(summary(rows))
    if bad:
        sys.exit("error: SASS report:\n  " + "\n  ".join(bad))
    print(f"SASS report: {len(rows)} kernels x {len(ARCHS)} archs, no spills, weight loads as wide as EXPECT"
          + ("; committed report up to date" if check else f"; wrote {os.path.relpath(REPORT_TXT, ROOT)} and .json"))


if __name__ == "__main__":
    main()
