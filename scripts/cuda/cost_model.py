#!/usr/bin/env python3
"""A cost model of one decode step of Falcon Mamba 7B Q4_K_M on the CUDA backend.

A benchmark of the design, not a test: it predicts, per card (A10, L4,
RTX 4090, H100 SXM, H200) and batch (1, 8, 32 sequences), the time of every
kernel of one decode step exactly as src/backend/cuda.rs launches them, the
graph-node gaps and the host time, hence ms per step, tokens/s and the share
of the card's spec bandwidth. Print it before and after a kernel change;
compare it with the device figures (bench, ncu) when a GPU run happens.

    python3 scripts/cuda/cost_model.py                 # every card, batch 1/8/32
    python3 scripts/cuda/cost_model.py --summary       # one line per card x batch
    python3 scripts/cuda/cost_model.py --card H100 --batch 1
    python3 scripts/cuda/cost_model.py --set act_interleaved=1 --set weight_load_bytes=16
    python3 scripts/cuda/cost_model.py --all-fixes --summary   # every DESIGN fix on
    python3 scripts/cuda/cost_model.py --json > model.json
    python3 scripts/cuda/cost_model.py --compare bench.json    # measured vs predicted

How a kernel's time is modelled (every constant named below, with its source):

    t = pnorm_P(t_dram, t_l1, t_issue, t_latency, t_compute)

  t_dram     bytes from DRAM / (spec bandwidth x STREAM_EFF of the card)
  t_l1       L1 wavefronts (distinct 128-byte lines per load instruction,
             from the load widths and lane strides) / (SMs x clock x
             L1_WAVEFRONTS_PER_CLK): review finding 5
  t_issue    warp instructions / (SMs x 4 schedulers x clock)
  t_latency  waves x the chain of dependent memory round trips of one warp
             (or block), waves from the launch shape and the occupancy
             (registers from cuda/ptx/sass-report.json or ptxas-report.txt)
  t_compute  the dp4a tile's MACs (batch > 8: matmul_*), review finding 11
  pnorm_P    (sum t_i^P)^(1/P): the largest bound, a little more when two
             are close (they do not overlap perfectly)

Per step: sum of kernels + GRAPH_NODE_GAP_US per launch (the GPU's drain /
launch / ramp between dependent graph nodes, finding 8) + host time
(finding 9) unless DESIGN says the host is off the critical path.

SASS load counts come from cuda/ptx/sass-report.json when it exists (read
defensively: any layout holding per kernel and arch regs / smem / occupancy /
ldg counts by width); otherwise the review's per-unit load counts (finding 5
table) stand in, and register counts come from cuda/ptx/ptxas-report.txt.
The output says which source each figure came from.

Python 3 stdlib only.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# =============================================================================
# DESIGN: what the kernels do today. Change these as the kernels change (or
# pass --set key=value); each names the review finding it answers.
# =============================================================================
DESIGN = {
    # Widest load the Q4_K/Q6_K matvec uses for weights, bytes (2 today:
    # ld_u32_a2 = two 16-bit loads, finding 5). None: take it from the SASS
    # report (the widest LDG of matvec_q4_k_1), else 2.
    "weight_load_bytes": None,
    # Q8A activations stored interleaved per 32 units so a warp's activation
    # load is one 128-byte line, not 8 (finding 5, fix 1).
    "act_interleaved": False,
    # f16 decoded with cvt (no branches): the header and the quants of an
    # iteration issue together, one DRAM round trip per iteration, not two
    # (finding 5, fix 3).
    "matvec_one_trip": True,  # f16_to_f32_cvt, no branches (was False at 446ab26)
    # Units per lane per iteration (finding 5, fix 4: unroll by 2).
    "units_per_lane": 1,
    # Q6_K head repacked at upload into 16-byte-aligned planes, so it can use
    # the wide loads too (finding 5, last paragraph).
    "q6k_repacked": True,  # ops::upload_weights pads superblocks to 224 bytes
    # Split-K for matvecs with too few rows to fill the card: k warps per
    # row when rows < SPLITK_ROWS_PER_SM x SMs (finding 7). Also packs
    # dt_proj's short rows 4 per warp.
    "split_k": "ops",  # ops::splits_for (False at 446ab26; True: the review's rule with dt packing)
    # rms_norm_q8a / rms_norm3 with every load of a thread issued before the
    # barrier (no serial chain of DRAM trips, finding 6).
    "norm_loads_hoisted": True,  # RMS_UNROLL loads a thread before the first use
    # Threads per norm block (256 today; finding 6 suggests 1024).
    "norm_threads": 1024,  # ops::norm_threads(4096); 256 at 446ab26
    # Scan state and A read as 16-byte loads (finding 18).
    "scan_vec16": True,  # ld_u4 of state and A
    # Launches per layer (8 today: norm, in, conv, x, norm3, dt, scan, out).
    # Fusing norm3 into dt_proj and conv into x_proj's staging gives 6;
    # a persistent per-layer kernel 1 (finding 8).
    "launches_per_layer": 8,
    # Falcon's dt/B/C norm done by x_proj's last block (matvec.cu norm3_tail:
    # __threadfence + a block counter) at batches up to this, instead of its
    # own rms_norm3 launch: 7 launches a layer there (0: never).
    "norm3_tail": 2,  # ops::matvec_norm3, src/backend/cuda.rs (t <= 2)
    # Programmatic dependent launch on sm_90 (griddepcontrol): the node gap
    # shrinks to PDL_GAP_US there (finding 8).
    "pdl": False,
    # Host work (list build, graph lookup, sync copies) overlapped with the
    # GPU: only HOST_EXPOSED_US remains on the critical path (finding 9).
    "host_overlapped": False,
    # argmax with 8 loads in flight per trip (finding 10).
    "argmax_multi_load": True,  # ARGMAX_UNROLL = 4 loads a trip, 1024 threads
    # matvec_<t>_1/_2 also hold matvec_short_rows (one more unit in the
    # static SASS counts than the hot loop has).
    "short_rows_path": True,
    # Threads of the argmax block.
    "argmax_threads": 1024,  # elementwise.cu ARGMAX_THREADS
    # Batch > 8 and prefill use int8 tensor cores (mma.cu's mma_matmul_<t>,
    # mma.sync m16n8k32, sm_80+, once its load-time self-test passed)
    # instead of the dp4a tile (finding 11): modelled by mma_matmul below.
    "matmul_mma": True,
}

# The kernels as reviewed (commit 446ab26): `--baseline` models them, with
# the review's load counts in place of the SASS report (which describes the
# kernels as they are now).
BASELINE = {
    "weight_load_bytes": 2, "matvec_one_trip": False, "units_per_lane": 1, "norm_loads_hoisted": False,
    "norm_threads": 256, "scan_vec16": False, "argmax_multi_load": False, "argmax_threads": 256,
    "q6k_repacked": False, "split_k": False, "short_rows_path": False, "matmul_mma": False,
}
BASELINE["norm3_tail"] = 0  # rms_norm3 had its own launch at every batch

# The fixes --all-fixes turns on at once (what the review's fix list adds up to).
ALL_FIXES = {
    "weight_load_bytes": 16, "act_interleaved": True, "matvec_one_trip": True, "units_per_lane": 2,
    "q6k_repacked": True, "split_k": True, "norm_loads_hoisted": True, "norm_threads": 1024,
    "scan_vec16": True, "launches_per_layer": 6, "pdl": True, "host_overlapped": True,
    "argmax_multi_load": True, "matmul_mma": True,
}

# =============================================================================
# The model (Falcon Mamba 7B, /work/shared/falcon-mamba-facts.md section 1)
# and its Q4_K_M types (llama-quantize's rule, convert/src/mix.rs: every
# quantized matrix Q4_K, the head Q6_K; ssm_dt's rows of 256 fill a Q4_K
# block, so it is Q4_K too; norms, conv, biases, A, D F32).
# =============================================================================
D_MODEL, N_LAYER, D_INNER, D_STATE, D_CONV, DT_RANK, VOCAB = 4096, 64, 8192, 16, 4, 256, 65024
XPROJ_OUT = DT_RANK + 2 * D_STATE  # 288
# ggml block sizes: values, bytes (ggml-common.h)
QTYPES = {"q4_k": (256, 144), "q6_k": (256, 210)}
UNIT = 32  # the matvec's unit: 32 values (one Q8A block), one lane each
COLS = 8  # src/backend/cuda.rs COLS: batches of <= 8 rows use matvec_<t>_<B>
MATVEC_WARPS, MATMUL_WARPS = 4, 8  # cuda/src/ops.rs
MM_COLS = 16  # matvec.cu: columns per matmul tile group
MATMUL_SMEM = 20992  # ptxas-report: matmul_* static shared memory
NORM_THREADS_TODAY = 256  # norm.cu RMS_THREADS
SSM_THREADS = 128  # ssm.cu
ARGMAX_THREADS = 1024  # elementwise.cu (256 before the multi-load argmax)
EMBED_THREADS = 128

# =============================================================================
# Cards. Spec bandwidth, SM count, boost clock, L2: NVIDIA's data sheets /
# whitepapers (A10 and L4 product briefs, Ada and Hopper whitepapers, H200
# product page). Latencies: [estimate] from public microbenchmarks of these
# chip families (Chips and Cheese, "Dissecting the ... GPU architecture"
# papers) and the review's own figures (0.8 us loaded on H100, L2 hits
# 0.15-0.25 us); take them as +-30%.
# =============================================================================
CARDS = {
    "A10": dict(bw=600e9, sms=72, clk=1.695e9, l2_mb=6, arch="sm_86", dram_ns=600, l2_ns=200,
                # ECC on by default costs 10-15% (peer-figures.md): 0.85 x ~0.92 copy efficiency
                stream_eff=0.80),
    "L4": dict(bw=300e9, sms=58, clk=2.04e9, l2_mb=48, arch="sm_89", dram_ns=600, l2_ns=200,
               stream_eff=0.85),  # GDDR6 with ECC available; [estimate]
    "RTX4090": dict(bw=1008e9, sms=128, clk=2.52e9, l2_mb=72, arch="sm_89", dram_ns=550, l2_ns=180,
                    stream_eff=0.92),  # GDDR6X, no ECC; copy ~ 920-950 GB/s [estimate]
    "H100SXM": dict(bw=3350e9, sms=132, clk=1.98e9, l2_mb=50, arch="sm_90", dram_ns=650, l2_ns=220,
                    stream_eff=0.90),  # peer-figures: sustained ~3.0 TB/s
    "H200": dict(bw=4800e9, sms=132, clk=1.98e9, l2_mb=50, arch="sm_90", dram_ns=650, l2_ns=220,
                 stream_eff=0.90),  # peer-figures: sustained ~4.3 TB/s
}
# Per-arch SM limits (CUDA C programming guide, compute capability table).
ARCH = {
    "sm_86": dict(max_warps=48, max_blocks=16, regs=65536, smem=100 * 1024),
    "sm_89": dict(max_warps=48, max_blocks=24, regs=65536, smem=100 * 1024),
    "sm_90": dict(max_warps=64, max_blocks=32, regs=65536, smem=228 * 1024),
}
# Effective (loaded) DRAM latency = unloaded x this when a kernel fills the
# card (scaled by the share of resident warp slots it fills): queueing under
# a full-card stream [estimate; gives the review's 0.8 us on H100].
LOADED_LAT_FACTOR = 1.3
# L1: distinct 128-byte lines served per SM per clock for scattered LDG
# (review finding 5: "if the L1 serves about one line per cycle"; [unsure]).
L1_WAVEFRONTS_PER_CLK = 1.0
# Issue: 4 warp schedulers per SM, one instruction each per clock (all archs here).
ISSUE_PER_CLK = 4
# Soft maximum of the bounds (see the module doc). P = 6: two equal bounds
# cost 12% more than one [estimate].
P = 6.0
# Graph node boundary (drain, launch, ramp) per dependent kernel: review
# finding 8, 0.5-1 us [estimate, unsure]; midpoint.
GRAPH_NODE_GAP_US = 0.75
# With programmatic dependent launch (sm_90 only) [estimate].
PDL_GAP_US = 0.25
# Host time per decode step on the critical path: review finding 9, "roughly
# 0.3-0.4 ms per token" (212-227 us queueing the 513 launches measured on a
# 2-core EPYC, plus cuGraphLaunch and three synchronous copies of 10-20 us);
# a lent GPU machine's host core is faster: take 0.3 ms.
HOST_US = 300.0
# What stays exposed with the host overlapped: one async copy + event wait.
HOST_EXPOSED_US = 15.0
# Fixed per-block costs [estimate]: a warp_sum / block reduction and the
# store at a kernel's end; the Q8A block quantizer (5 + 5 shuffles, div.rn,
# rcp.rn: review finding 6); one __syncthreads with its shared round trip.
TAIL_US = 0.3
Q8A_US = 0.25
BARRIER_US = 0.1
# One warp butterfly (5 dependent shuffles, ~25-30 cycles each) [estimate].
WARP_SUM_US = 0.05
# Matvec instructions per warp iteration (one unit per lane): a base for the
# weight decode plus one column's dp4a / scale work [estimate from the SASS
# load table of finding 5 plus its ~8 integer and float instructions per dp4a].
ISSUE_BASE_INSTR = {"q4_k": 70, "q6_k": 90}
ISSUE_PER_COL_INSTR = 30
# The matmul tile (batch > 8): int8 MAC per clock per SM, bound by its shared
# loads (finding 11: ~1024 MAC per 10 cycles, "roughly 100").
MATMUL_MAC_PER_CLK_SM = 100
# Split-K: used when rows < this x SMs; k picked to give about SPLITK_WAVES
# waves of resident warps (finding 7: "when rows < ~8 x SMs").
SPLITK_ROWS_PER_SM = 8
SPLITK_WAVES = 1.0
# Load instructions per lane and unit of the matvec, by the widest weight
# load (bytes). The 2-byte rows are the SASS counts of finding 5 (Q4_K: 18
# 16-bit + 3 8-bit; Q6_K: 33 16-bit); the wider rows [estimate]: Q4_K header
# 16 B + qs 2 x 16 B (finding 5 fix 2); Q6_K needs the repack.
WEIGHT_LDG = {
    "q4_k": {2: 21, 4: 11, 8: 6, 16: 3},
    "q6_k": {2: 33, 4: 17, 8: 9, 16: 4},
}
# Per activation column and unit: 8 q words + d + s + 1 (finding 5 table:
# 11 32-bit loads; finding 12: 88 at NC = 8).
ACT_LDG_PER_COL = 11
ACT_LINES_STRIDED = 8  # 32 lanes x 32-byte stride = 1024 B = 8 lines per load
ACT_LINES_INTERLEAVED = 1  # [(u/32)][k][u%32]: one 128-byte line per load
# Weight lines per load instruction: 32 lanes x a unit's bytes, plus half a
# line of misalignment (gives finding 5's ~166 wavefronts per Q4_K warp
# iteration at NC = 1 and ~628 at NC = 8).
def weight_lines(unit_bytes):
    return 32 * unit_bytes / 128 + 0.5


# Bytes of state per sequence (conv K-1 and scan N floats per channel).
CONV_STATE_B = D_INNER * (D_CONV - 1) * 4
SCAN_STATE_B = D_INNER * D_STATE * 4

# Targets of the issue (at batch 1, share of spec bandwidth).
TARGETS = {"A10": 0.80, "RTX4090": 0.80, "H100SXM": 0.60, "H200": 0.60}


# =============================================================================
# SASS / ptxas figures
# =============================================================================
def _walk(obj, path=()):
    """Yield (path, leaf dict) for every dict holding a register count."""
    if isinstance(obj, dict):
        if any(re.fullmatch(r"(regs?|registers?|num_regs)", str(k), re.I) for k in obj):
            yield path, obj
        for k, v in obj.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, path)


def load_sass(path):
    """{(kernel, arch): normalized dict} from sass-report.json, whatever its nesting."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    out = {}
    for p, leaf in _walk(data):
        kern = leaf.get("kernel") or leaf.get("name")
        arch = leaf.get("arch") or leaf.get("sm")
        for s in p:
            if re.fullmatch(r"sm_?\d+", s):
                arch = arch or s
            elif not re.fullmatch(r"(kernels?|archs?|report|by_arch|results?)", s):
                kern = kern or s
        if not kern or not arch:
            continue
        arch = "sm_" + re.sub(r"\D", "", str(arch))
        out[(str(kern), arch)] = normalize(leaf)
    return out


def normalize(leaf):
    """regs, smem, spill, warps (occupancy), ldg {width bytes: count}, lds, dp4a, instr."""
    n = {"ldg": {}}
    for k, v in leaf.items():
        kl = str(k).lower()
        if isinstance(v, dict) and re.search(r"ldg|global_load|loads?_global", kl):
            dst = n.setdefault("ldg_weight", {}) if "weight" in kl else n["ldg"]
            for w, c in v.items():
                b = _width_bytes(w)
                if b and isinstance(c, (int, float)):
                    dst[b] = dst.get(b, 0) + c
            continue
        if not isinstance(v, (int, float)):
            continue
        if re.fullmatch(r"regs?|registers?|num_regs", kl):
            n["regs"] = v
        elif "widest" in kl or kl in ("weight_bytes", "bra", "bssy", "threads") or kl.endswith("_blocks"):
            n[kl] = v
        elif "spill" in kl:
            n["spill"] = n.get("spill", 0) + v
        elif "smem" in kl or "shared" in kl:
            n["smem"] = v
        elif kl in ("occupancy_warps", "warps_per_sm", "occupancy") or kl.endswith("_warps"):
            n["warps"] = v
        elif re.search(r"ldg", kl):
            b = _width_bytes(kl)
            if b:
                n["ldg"][b] = n["ldg"].get(b, 0) + v
        elif re.search(r"lds", kl):
            n["lds"] = n.get("lds", 0) + v
        elif "dp4a" in kl or "idp" in kl:
            n["dp4a"] = v
        elif "instr" in kl:
            n["instr"] = v
    return n


def _width_bytes(s):
    """A load width key of the report, in bits ('S8', 'U16', '32', '64', '128',
    'LDG.E.128') -> bytes."""
    m = re.findall(r"(\d+)", str(s))
    if not m:
        return None
    v = int(m[-1])
    return v // 8 if v in (8, 16, 32, 64, 128) else None


def load_ptxas(path):
    """{(kernel, arch): {regs, smem, spill}} from ptxas-report.txt."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"(\S+)\s+(sm_\d+)\s+regs\s+(\d+)\s+smem\s+(\d+)\s+stack\s+(\d+)\s+spill_st\s+(\d+)\s+spill_ld\s+(\d+)", line)
                if m:
                    out[(m[1], m[2])] = dict(regs=int(m[3]), smem=int(m[4]), spill=int(m[6]) + int(m[7]), ldg={})
    except OSError:
        pass
    return out


class Sass:
    def __init__(self, sass_path, ptxas_path):
        self.sass = load_sass(sass_path)
        self.ptxas = load_ptxas(ptxas_path)
        self.sass_path = sass_path if self.sass else None
        self.used = {}

    def get(self, kernel, arch):
        s = self.sass.get((kernel, arch))
        p = self.ptxas.get((kernel, arch)) or self.ptxas.get((kernel, "sm_80")) or {}
        d = dict(p)
        if s:
            d.update({k: v for k, v in s.items() if v not in (None, {})})
            d["src"] = "sass-report.json"
        elif p:
            d["src"] = "ptxas-report.txt"
        else:
            d["src"] = "default"
        self.used[(kernel, arch)] = d["src"]
        return d


def occupancy(info, threads, arch, smem=0):
    """Resident blocks per SM (CUDA occupancy rules: warps, blocks, registers
    allocated per warp in 256-register units, shared memory)."""
    a = ARCH[arch]
    wpb = max(1, math.ceil(threads / 32))
    if info.get("warps"):
        return max(1, int(info["warps"]) // wpb)
    regs = info.get("regs", 32)
    per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = a["regs"] // (per_warp * wpb)
    by_warps = a["max_warps"] // wpb
    smem = max(smem, info.get("smem", 0))
    by_smem = a["smem"] // smem if smem else a["max_blocks"]
    return max(1, min(by_regs, by_warps, a["max_blocks"], by_smem))


# =============================================================================
# Kernels
# =============================================================================
def pnorm(ts):
    ts = [t for t in ts.values() if t > 0]
    return sum(t ** P for t in ts) ** (1 / P) if ts else 0.0


class Ctx:
    def __init__(self, card, batch, design, sass):
        self.name = card
        self.c = CARDS[card]
        self.arch = self.c["arch"]
        self.b = batch
        self.d = design
        self.sass = sass
        self.lat = self.c["dram_ns"] * 1e-3  # us
        self.lat_loaded = self.lat * LOADED_LAT_FACTOR
        self.l2 = self.c["l2_ns"] * 1e-3
        self.clk = self.c["clk"]
        self.sms = self.c["sms"]

    def t_dram(self, nbytes):
        return nbytes / (self.c["bw"] * self.c["stream_eff"]) * 1e6

    def per_sm_rate(self, per_clk):  # events per us over the card
        return self.sms * self.clk * per_clk * 1e-6


def k(name, kernel, launches, grid, block, dram, times, note=""):
    return dict(name=name, kernel=kernel, launches=launches, grid=grid, block=block,
                dram_bytes=dram, bounds=times, us=pnorm(times), note=note)


def weight_width(x, ty):
    w = x.d["weight_load_bytes"]
    if ty == "q6_k" and w and w > 2 and not x.d["q6k_repacked"]:
        return 2, "Q6_K not repacked: 2-byte loads"  # 210-byte blocks are only 2-byte aligned
    if w:
        return w, "DESIGN"
    info = x.sass.get(f"matvec_{ty}_1", x.arch)
    if info.get("ldg"):
        wide = max(info["ldg"])
        return (wide if wide != 4 else 2), info["src"]
    return 2, "review finding 5"


def matvec(x, label, ty, rows, n, nc, add=False):
    """matvec_<ty>_<nc> (nc <= 8): one warp per row, lane l takes units l, l+32, ..."""
    per, bb = QTYPES[ty]
    unit_b = bb / (per / UNIT)
    nb = n // UNIT
    kern = f"matvec_{ty}_{nc}"
    info = x.sass.get(kern, x.arch)
    width, wsrc = weight_width(x, ty)
    table = WEIGHT_LDG[ty]
    w_ldg = table.get(width) or table[max(w for w in table if w <= width)]
    a_lines = ACT_LINES_INTERLEAVED if x.d["act_interleaved"] else ACT_LINES_STRIDED
    act_wf = 8 * a_lines + (ACT_LDG_PER_COL - 8)  # per column and unit (review finding 5)
    upl = x.d["units_per_lane"]
    # SASS counts, when they are there and the DESIGN does not override the
    # width: the loop body's units per lane = dp4a / (8 per unit and column);
    # weight loads per unit = its ldg_weight / that; activation loads = the
    # other LDGs: wide ones (16-byte q words) cost 8 lines at the 32-byte
    # lane stride (width/4 lines interleaved), 32-bit ones (d, s) one line.
    if info["src"] == "sass-report.json" and info.get("ldg_weight") and x.d["weight_load_bytes"] is None:
        units = max(1, round(info.get("dp4a", 8 * nc) / (8 * nc)))
        w_ldg = sum(info["ldg_weight"].values()) / units
        # At one or two activation rows the code also holds the short-rows
        # path (one unit a lane): not a unit of the hot loop.
        upl = max(1, units - (1 if x.d["short_rows_path"] and nc <= 2 else 0))
        width = max(info["ldg_weight"])
        other = {b: c - info["ldg_weight"].get(b, 0) for b, c in info.get("ldg", {}).items()}
        wide = sum(c for b, c in other.items() if b > 4)
        if wide:
            lines = sum(c * (b / 4 if x.d["act_interleaved"] else ACT_LINES_STRIDED) for b, c in other.items() if b > 4)
            act_wf = (lines + sum(c for b, c in other.items() if b <= 4)) / (upl * nc)
        wsrc = f"sass-report.json, {upl} unit(s)/lane/iter"
        act_wf = act_wf * upl / units if wide else act_wf
    # wavefronts per unit per lane (a warp-wide unit step)
    wf = w_ldg * weight_lines(unit_b) + nc * act_wf
    # split-K / row packing (finding 7)
    ksplit, rows_per_warp = 1, 1
    blocks_per_sm = occupancy(info, 32 * MATVEC_WARPS, x.arch)
    resident = blocks_per_sm * MATVEC_WARPS * x.sms
    if x.d["split_k"] == "ops":
        # ops::splits_for: 2 or 4 slices (each a warp) while the rows give
        # fewer than 8 warps per SM and the slices are whole 32-unit tiles;
        # rows of fewer than 32 units (dividing 32) packed 32 / nb a warp at
        # one or two activation rows (matvec_short_rows).
        if nb < 32 and 32 % nb == 0 and nc <= 2:
            rows_per_warp = 32 // nb
        while ksplit < 4 and rows * ksplit < 8 * x.sms and nb % (64 * ksplit) == 0:
            ksplit *= 2
    elif x.d["split_k"]:
        if nb < 32:  # pack 32/nb short rows per warp (dt_proj)
            rows_per_warp = 32 // nb
        elif rows < SPLITK_ROWS_PER_SM * x.sms:
            ksplit = max(1, min(nb // 32, int(SPLITK_WAVES * resident / rows)))
    warps = math.ceil(rows * ksplit / rows_per_warp)
    iters = math.ceil(nb / (32 * ksplit * upl)) if nb >= 32 else 1
    warp_iters = warps * iters
    trips = 1 if x.d["matvec_one_trip"] else 2
    waves = math.ceil(warps / resident)
    lat_mem = x.lat * (1 + (LOADED_LAT_FACTOR - 1) * min(1.0, warps / resident))
    lat = waves * (iters * trips * lat_mem + TAIL_US + (BARRIER_US + 0.2 if ksplit > 1 else 0))
    wbytes = rows * (n // per) * bb
    dram = wbytes + nc * rows * 4 * (2 if add else 1)
    # lanes beyond nb idle: the lines a warp touches shrink with them
    frac = min(1.0, nb * rows_per_warp / 32)
    l1 = warps * iters * upl * wf * frac / x.per_sm_rate(L1_WAVEFRONTS_PER_CLK)
    issue = warp_iters * upl * (ISSUE_BASE_INSTR[ty] + ISSUE_PER_COL_INSTR * nc) / x.per_sm_rate(ISSUE_PER_CLK)
    times = dict(dram=x.t_dram(dram), l1=l1, issue=issue, latency=lat)
    grid = f"{math.ceil(rows * ksplit / MATVEC_WARPS)}"
    note = f"w_ldg {w_ldg:g}x{width}B ({wsrc}), {wf * frac:.0f} wf/iter, occ {blocks_per_sm * MATVEC_WARPS} warps/SM ({info['src']}), {waves} wave(s), {iters} iter x {trips} trip"
    if ksplit > 1:
        note += f", split-K {ksplit}"
    return k(label, kern, 1, grid, 32 * MATVEC_WARPS, dram, times, note)


def matmul(x, label, ty, rows, n, nc, add=False):
    """matmul_<ty> (batch > 8): 8 warps x 8 rows per block, 16-column groups, 32-unit tiles staged in smem."""
    if x.d["matmul_mma"]:
        return mma_matmul(x, label, ty, rows, n, nc, add)
    per, bb = QTYPES[ty]
    nb = n // UNIT
    kern = f"matmul_{ty}"
    info = x.sass.get(kern, x.arch)
    bpsm = occupancy(info, 32 * MATMUL_WARPS, x.arch, MATMUL_SMEM)
    blocks = math.ceil(rows / MATMUL_WARPS)
    waves = math.ceil(blocks / (bpsm * x.sms))
    groups = math.ceil(nc / MM_COLS)
    tiles = math.ceil(nb / 32)
    # per tile: stage from L2, barrier, weight unit from DRAM (1 or 2 trips), barrier
    trips = 1 if x.d["matvec_one_trip"] else 2
    per_tile = x.l2 + 2 * BARRIER_US + trips * x.lat_loaded
    lat = waves * (groups * tiles * per_tile + TAIL_US)
    macs = rows * n * nc
    comp = macs / x.per_sm_rate(MATMUL_MAC_PER_CLK_SM)
    wbytes = rows * (n // per) * bb
    dram = wbytes + nc * rows * 4 * (2 if add else 1)
    times = dict(dram=x.t_dram(dram), compute=comp, latency=lat)
    note = f"{bpsm} blocks/SM ({info['src']}), {waves} wave(s), {groups} col groups x {tiles} tiles, dp4a"
    r = k(label, kern, 1, str(blocks), 32 * MATMUL_WARPS, dram, times, note)
    r["macs"] = macs
    return r


# mma_matmul_<t> (mma.cu): 4 warps, 64 weight rows x 32 columns a block
# (column tiles along grid.x, so a row tile's weights come from DRAM once),
# MMA_KU units (32 values each) a stage: decode the 64 x 4 units into shared
# memory, stage the 32 x 4 Q8A blocks, a barrier, then per warp 4 units x 4
# column tiles of IMMA + epilogue, a barrier; the next stage's weight lines
# are prefetched to L2 meanwhile (other resident blocks hide the rest).
MMA_ROWS, MMA_COLS_TILE, MMA_KU, MMA_THREADS = 64, 32, 4, 128
MMA_SMEM = 20096  # ptxas: mma_matmul_q4_k static shared memory (q2_k/iq1_m 26112)
# Dense int8 tensor-core peak, MAC per clock per SM (data sheets' dense INT8
# TOPS / 2 / SMs / boost clock: A10 250 TOPS, L4 242, RTX 4090 660.6, all
# 1024; H100 SXM 1979 TOPS -> 3786; H200 the same chip).
MMA_PEAK_MAC_PER_CLK_SM = {"sm_86": 1024, "sm_89": 1024, "sm_90": 3786}
# The share of that peak mma.sync can reach: near all of it on Ampere/Ada;
# Hopper's full rate needs wgmma, mma.sync gets about 60% [estimate, unsure].
MMA_SYNC_EFF = {"sm_86": 0.9, "sm_89": 0.9, "sm_90": 0.6}
# Warp instructions per unit and column tile in the k loop, the IMMA(s)
# included [estimate from mma.cu: 2 LDS for B, 1 or 2 IMMA, 2 LDS.64 of the
# two columns' d and s, then per output (4 a lane) I2F, FMUL, 2 FFMA; the A
# fragment and the rows' scales (10 LDS) spread over the 4 column tiles].
# Q6_K has two 16-value scales: two IMMAs a unit, one more I2F and FFMA an
# output.
MMA_LOOP_INSTR = {"q4_k": 24, "q6_k": 33}
MMA_IMMA = {"q4_k": 1, "q6_k": 2}
# Staging the activations: 32 x 4 blocks of 8 words + d + s, about 6
# instructions per word a thread moves [estimate].
MMA_STAGE_INSTR_PER_WORD = 6


def mma_matmul(x, label, ty, rows, n, nc, add=False):
    """mma_matmul_<ty>: issue-bound epilogue, tensor pipe, per-stage latency, DRAM."""
    per, bb = QTYPES[ty]
    nb = n // UNIT
    kern = f"mma_matmul_{ty}"
    info = x.sass.get(kern, x.arch)
    bpsm = occupancy(info, MMA_THREADS, x.arch, MMA_SMEM)
    ctiles, rtiles = math.ceil(nc / MMA_COLS_TILE), math.ceil(rows / MMA_ROWS)
    blocks = ctiles * rtiles
    waves = math.ceil(blocks / (bpsm * x.sms))
    stages = math.ceil(nb / MMA_KU)
    # Per block and stage: warp instructions and IMMAs.
    decode = MMA_ROWS * MMA_KU / 32 * ISSUE_BASE_INSTR[ty]
    stage = (MMA_COLS_TILE * MMA_KU * 10) / 32 * MMA_STAGE_INSTR_PER_WORD
    loop = (MMA_THREADS // 32) * MMA_KU * 4 * MMA_LOOP_INSTR[ty]
    immas = (MMA_THREADS // 32) * MMA_KU * 4 * MMA_IMMA[ty]
    issue = blocks * stages * (decode + stage + loop) / x.per_sm_rate(ISSUE_PER_CLK)
    peak = MMA_PEAK_MAC_PER_CLK_SM[x.arch] * MMA_SYNC_EFF[x.arch]
    tensor = blocks * stages * immas * 16 * 8 * 32 / x.per_sm_rate(peak)
    # Each stage waits on its weight units (from L2: the stage before
    # prefetched them, prefetch.global.L2; the first from DRAM), the
    # activation tile (L2) and two barriers.
    per_stage = 2 * x.l2 + 2 * BARRIER_US
    lat = waves * (x.lat_loaded + stages * per_stage + TAIL_US)
    wbytes = rows * (n // per) * bb
    dram = wbytes + nc * rows * 4 * (2 if add else 1)
    times = dict(dram=x.t_dram(dram), issue=issue, tensor=tensor, latency=lat)
    note = (f"{bpsm} blocks/SM ({info['src']}), {waves} wave(s), {ctiles}x{rtiles} tiles x {stages} stages, "
            f"{(decode + stage + loop) / immas:.0f} instr/IMMA, mma")
    r = k(label, kern, 1, f"{ctiles}x{rtiles}", MMA_THREADS, dram, times, note)
    r["macs"] = rows * n * nc
    return r


def gemm(x, label, ty, rows, n, add=False):
    if x.b <= COLS:
        return matvec(x, label, ty, rows, n, x.b, add)
    return matmul(x, label, ty, rows, n, x.b, add)


def norm_q8a(x, label, n, weight=True):
    """rms_norm_q8a: one block per row; rms_scale (n/threads serial L2 loads),
    then per warp n/32/warps iterations of (x, w load -> Q8A block)."""
    info = x.sass.get("rms_norm_q8a", x.arch)
    th = x.d["norm_threads"]
    per_thread = math.ceil(n / th)
    iters = math.ceil(n / 32 / (th // 32))
    if x.d["norm_loads_hoisted"]:
        chain = x.lat + BARRIER_US + iters * Q8A_US * 0.6 + TAIL_US  # w, x loaded up front
    else:
        # rms_scale: one L2 trip per value (not unrolled); Q8A loop: w from DRAM
        # (evicted by the weight stream) each iteration, then the quantizer.
        chain = per_thread * x.l2 + BARRIER_US + iters * (x.lat + Q8A_US) + TAIL_US
    waves = math.ceil(x.b / (occupancy(info, th, x.arch) * x.sms))
    dram = n * 4 * (1 if weight else 0) + x.b * n * (4 + 4 + 1 + 8 / 32)  # w; x r, y w, q8a w
    times = dict(dram=x.t_dram(dram), latency=waves * chain)
    return k(label, "rms_norm_q8a", 1, f"{x.b}", th, dram, times,
             f"{per_thread} serial L2 + {iters} x (DRAM + Q8A)" if not x.d["norm_loads_hoisted"] else "loads hoisted")


def norm_threads(n):
    """ops::norm_threads: about 4 values a thread, a multiple of 32, 32 to 1024."""
    return min(1024, max(32, -(-n // 128) * 32))


def norm3(x):
    """rms_norm3: grid (rows, 3); dt segment (256) with Q8A, B and C (16 each).
    Launched with norm_threads(256) = 64 threads (ops::rms_norm3), so each of
    its 2 warps quantizes 4 of dt's 8 Q8A blocks in turn."""
    th = norm_threads(DT_RANK) if x.d["norm_loads_hoisted"] else x.d["norm_threads"]
    n = DT_RANK
    per_thread = math.ceil(n / th)
    iters = math.ceil(n / 32 / (th // 32))
    if x.d["norm_loads_hoisted"]:
        chain = x.l2 + BARRIER_US + iters * Q8A_US + TAIL_US
    else:
        chain = per_thread * x.l2 + BARRIER_US + iters * (x.l2 + Q8A_US) + TAIL_US
    dram = x.b * XPROJ_OUT * 4 * 2
    times = dict(dram=x.t_dram(dram), latency=chain)
    return k("norm3 (dt/B/C)", "rms_norm3", 1, f"{x.b}x3", th, dram, times, "L2 chain")


def norm3_tail(x):
    """The same norm run by x_proj's last block (matvec.cu norm3_tail): no
    launch of its own; its chain follows the last block's dots: __threadfence
    and the block counter's atomicAdd (an L2 round trip each), the warp sums
    of every row and segment (4 a row: dt's 2 warps of norm_threads(256),
    B's, C's) spread over the block's 4 warps, an L2 trip and a butterfly a
    round, a barrier, dt's Q8A blocks (8 a row over 4 warps, in turn) with
    their loads, then B and C (a value a thread, one trip)."""
    sums = norm_threads(DT_RANK) // 32 + 2 * (norm_threads(D_STATE) // 32)
    rounds = math.ceil(x.b * sums / MATVEC_WARPS)
    q8a = math.ceil(x.b * DT_RANK // UNIT / MATVEC_WARPS)
    chain = 2 * x.l2 + rounds * (x.l2 + WARP_SUM_US) + BARRIER_US + x.l2 + q8a * Q8A_US + x.l2
    dram = 0  # x_proj's rows were just written: L2
    return k("norm3 tail (in x_proj)", "matvec_q4_k_1", 0, "last block", 32 * MATVEC_WARPS, dram,
             dict(latency=chain), f"{rounds} sum round(s), {q8a} Q8A in turn a warp")


def conv(x):
    """conv1d_silu_k4: grid (E/128, seqs); slot id -> state, w, bias, x (one trip) -> Q8A."""
    blocks = math.ceil(D_INNER / SSM_THREADS) * x.b
    info = x.sass.get("conv1d_silu_k4", x.arch)
    waves = math.ceil(blocks / (occupancy(info, SSM_THREADS, x.arch) * x.sms))
    trips = (1 if x.b > 1 else 0) * x.l2 + x.lat  # slot id (batched), then the loads
    chain = trips + Q8A_US + TAIL_US
    dram = D_INNER * (D_CONV + 1) * 4 + x.b * (2 * CONV_STATE_B + D_INNER * (4 + 4 + 1))
    times = dict(dram=x.t_dram(dram), latency=waves * chain)
    return k("conv1d+silu+q8a", "conv1d_silu_k4", 1, f"{blocks // x.b}x{x.b}", SSM_THREADS, dram, times, f"{waves} wave(s)")


def scan(x):
    """selective_scan_n16: grid (E/128, seqs); state and A (16 x 4-byte loads at
    a 64-byte stride per thread), x/dt/z/B/C from L2, 16 exp+fma, y -> Q8A."""
    blocks = math.ceil(D_INNER / SSM_THREADS) * x.b
    info = x.sass.get("selective_scan_n16", x.arch)
    bpsm = occupancy(info, SSM_THREADS, x.arch)
    waves = math.ceil(blocks / (bpsm * x.sms))
    chain = (x.l2 if x.b > 1 else 0) + x.lat_loaded + 16 * 0.02 + Q8A_US + TAIL_US
    dram = D_INNER * D_STATE * 4 + D_INNER * 8 + x.b * (2 * SCAN_STATE_B + D_INNER * 4 * 4)
    # L1: per warp, state + A loads and the state store, each instruction 16 lines
    ldg = 4 if x.d["scan_vec16"] else 16
    wf = blocks * (SSM_THREADS // 32) * 3 * ldg * 16
    times = dict(dram=x.t_dram(dram), l1=wf / x.per_sm_rate(L1_WAVEFRONTS_PER_CLK), latency=waves * chain)
    return k("selective scan+gate+q8a", "selective_scan_n16", 1, f"{blocks // x.b}x{x.b}", SSM_THREADS, dram, times,
             f"{bpsm} blocks/SM ({info['src']}), {waves} wave(s)")


def embed(x):
    """embed_rows: one 128-thread block per token; 32 serial dequant iterations (finding 18: ~20 us)."""
    iters = math.ceil(D_MODEL / EMBED_THREADS)
    chain = x.l2 + iters * x.lat + TAIL_US  # id, then one row read per iteration
    dram = x.b * (D_MODEL // 256 * 144 + D_MODEL * 4)
    return k("embed", "embed_rows", 1, f"{x.b}", EMBED_THREADS, dram,
             dict(dram=x.t_dram(dram), latency=chain), f"{iters} serial iterations")


def argmax(x):
    """argmax_f32: one 256-thread block per row, 254 trips of one L2 load (finding 10)."""
    trips = math.ceil(VOCAB / x.d["argmax_threads"])
    if x.d["argmax_multi_load"]:
        trips = math.ceil(trips / 4)  # ARGMAX_UNROLL
    chain = trips * x.l2 + BARRIER_US * 2 + TAIL_US
    dram = 0  # the logits were just written: L2
    return k("argmax", "argmax_f32", 1, f"{x.b}", x.d["argmax_threads"], dram, dict(latency=chain), f"{trips} serial L2 trips")


def step(card, batch, design, sass):
    x = Ctx(card, batch, design, sass)
    L = N_LAYER
    # rms_norm3's launch gone at small batches (norm3_tail above).
    tail_norm3 = design["launches_per_layer"] == 8 and batch <= design.get("norm3_tail", 0)
    per_layer = [
        norm_q8a(x, "norm+q8a", D_MODEL),
        gemm(x, "in_proj", "q4_k", 2 * D_INNER, D_MODEL),
        conv(x),
        gemm(x, "x_proj", "q4_k", XPROJ_OUT, D_INNER),
        norm3_tail(x) if tail_norm3 else norm3(x),
        gemm(x, "dt_proj", "q4_k", D_INNER, DT_RANK),
        scan(x),
        gemm(x, "out_proj+residual", "q4_k", D_MODEL, D_INNER, add=True),
    ]
    rows = [embed(x)]
    for r in per_layer:
        r = dict(r)
        r["launches"] = L
        r["us_step"] = r["us"] * L
        r["dram_step"] = r["dram_bytes"] * L
        if r["name"] == "norm3 tail (in x_proj)":
            r["launches"] = 0  # inside x_proj's launch
        rows.append(r)
    tail = [norm_q8a(x, "final norm+q8a", D_MODEL), gemm(x, "head (Q6_K)", "q6_k", VOCAB, D_MODEL), argmax(x)]
    for r in [rows[0]] + tail:
        r.setdefault("us_step", r["us"])
        r.setdefault("dram_step", r["dram_bytes"])
    rows += tail
    kernels_us = sum(r["us_step"] for r in rows)
    launches = 3 + L * (design["launches_per_layer"] - (1 if tail_norm3 else 0)) + 1
    if design["launches_per_layer"] < 8:
        # fused launches: the latency of the kernels merged away is assumed
        # hidden (norm3 inside dt_proj, conv inside x_proj's staging) [estimate]
        saved = {7: ("norm3 (dt/B/C)",), 6: ("norm3 (dt/B/C)", "conv1d+silu+q8a")}.get(design["launches_per_layer"], ("norm3 (dt/B/C)", "conv1d+silu+q8a"))
        for r in rows:
            if r["name"] in saved:
                r["us_step"] *= 0.3
                r["note"] += " (fused: 30% left)"
        kernels_us = sum(r["us_step"] for r in rows)
    gap = PDL_GAP_US if (design["pdl"] and x.arch == "sm_90") else GRAPH_NODE_GAP_US
    gaps_us = launches * gap
    host_us = HOST_EXPOSED_US if design["host_overlapped"] else HOST_US
    total_us = kernels_us + gaps_us + host_us
    # Weights read per step (every matrix once; the embedding row is negligible).
    q4 = L * (2 * D_INNER * D_MODEL + XPROJ_OUT * D_INNER + D_INNER * DT_RANK + D_MODEL * D_INNER)
    weights_only = q4 // 256 * QTYPES["q4_k"][1] + VOCAB * D_MODEL // 256 * QTYPES["q6_k"][1]
    state = batch * L * 2 * (CONV_STATE_B + SCAN_STATE_B)
    moved = weights_only + state
    return dict(card=card, batch=batch, arch=x.arch, rows=rows, kernels_us=kernels_us, gaps_us=gaps_us,
                launches=launches, host_us=host_us, total_us=total_us, step_ms=total_us / 1e3,
                tok_s=batch * 1e6 / total_us, weight_bytes=weights_only, state_bytes=state,
                bw_share=moved / (total_us * 1e-6) / CARDS[card]["bw"],
                bound_tok_s=batch * CARDS[card]["bw"] / moved)


# =============================================================================
# Prefill (issue 25): a prompt of `tokens` fed in chunks of CHUNK tokens
# (src/session.rs DEFAULT_CHUNK), one sequence. Per chunk: the embedding, per
# layer the norm, in_proj, conv, x_proj, norm3, dt_proj, scan and out_proj
# over the chunk's rows (matmuls over CHUNK columns), then the final norm and
# the head for the last row only. The conv and the scan walk the chunk's
# tokens one after the other (one thread per channel): CONV_TOKEN_US and
# L2 + SCAN_TOKEN_US per token [estimate; review finding 11: 0.3-0.5 us a
# token per layer for the scan].
# =============================================================================
CHUNK = 128
CONV_TOKEN_US = 0.05
SCAN_TOKEN_US = 0.15
PREFILL_TOKENS = (512, 4096)
PREFILL_CARDS = ("A10", "RTX4090", "H100SXM", "H200")
BATCHED = (8, 32, 64)


def conv_chunk(x, t):
    blocks = math.ceil(D_INNER / SSM_THREADS)
    chain = x.lat + t * CONV_TOKEN_US + Q8A_US + TAIL_US
    dram = D_INNER * (D_CONV + 1) * 4 + 2 * CONV_STATE_B + t * D_INNER * (4 + 4 + 1)
    return k("conv1d+silu+q8a (chunk)", "conv1d_silu_k4", 1, f"{blocks}x1", SSM_THREADS, dram,
             dict(dram=x.t_dram(dram), latency=chain), f"{t} tokens in turn")


def scan_chunk(x, t):
    blocks = math.ceil(D_INNER / SSM_THREADS)
    chain = x.lat_loaded + t * (x.l2 + SCAN_TOKEN_US) + Q8A_US + TAIL_US
    dram = D_INNER * D_STATE * 4 + D_INNER * 8 + 2 * SCAN_STATE_B + t * D_INNER * 4 * 4
    return k("selective scan (chunk)", "selective_scan_n16", 1, f"{blocks}x1", SSM_THREADS, dram,
             dict(dram=x.t_dram(dram), latency=chain), f"{t} tokens in turn, {blocks} blocks")


def prefill(card, tokens, design, sass):
    """Seconds of a `tokens` prompt and the matmuls' share and rate."""
    chunks = []
    left = tokens
    while left > 0:
        chunks.append(min(CHUNK, left))
        left -= chunks[-1]
    total_us = mm_us = macs = 0.0
    for t in chunks:
        x = Ctx(card, t, design, sass)  # x.b = the chunk's rows for the row-parallel kernels
        one = Ctx(card, 1, design, sass)
        layer = [norm_q8a(x, "norm+q8a", D_MODEL), matmul(x, "in_proj", "q4_k", 2 * D_INNER, D_MODEL, t),
                 conv_chunk(x, t), matmul(x, "x_proj", "q4_k", XPROJ_OUT, D_INNER, t), norm3(x),
                 matmul(x, "dt_proj", "q4_k", D_INNER, DT_RANK, t), scan_chunk(x, t),
                 matmul(x, "out_proj+residual", "q4_k", D_MODEL, D_INNER, t, add=True)]
        tail = [embed(x), norm_q8a(one, "final norm+q8a", D_MODEL), matvec(one, "head (Q6_K)", "q6_k", VOCAB, D_MODEL, 1)]
        kern = N_LAYER * sum(r["us"] for r in layer) + sum(r["us"] for r in tail)
        mm_us += N_LAYER * sum(r["us"] for r in layer if "macs" in r)
        macs += N_LAYER * sum(r["macs"] for r in layer if "macs" in r)
        launches = 3 + N_LAYER * design["launches_per_layer"]
        gap = PDL_GAP_US if (design["pdl"] and x.arch == "sm_90") else GRAPH_NODE_GAP_US
        host = HOST_EXPOSED_US if design["host_overlapped"] else HOST_US
        total_us += kern + launches * gap + host
    c = CARDS[card]
    peak = MMA_PEAK_MAC_PER_CLK_SM[c["arch"]] * c["sms"] * c["clk"]
    return dict(card=card, workload=f"pp{tokens}", tok_s=tokens / (total_us * 1e-6), ms=total_us / 1e3,
                matmul_share=mm_us / total_us, tc_peak_share=macs / (mm_us * 1e-6) / peak)


def prefill_table(design, sass):
    """Before (dp4a tiles) and after (int8 tensor cores) for prefill and batched decode."""
    before, after = dict(design, matmul_mma=False), dict(design, matmul_mma=True)
    out = ["| card | workload | dp4a tok/s | matmuls | mma tok/s | matmuls | speed-up | matmuls at % of int8 TC peak (dp4a / mma) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for card in PREFILL_CARDS:
        rows = []
        for tokens in PREFILL_TOKENS:
            rows.append((prefill(card, tokens, before, sass), prefill(card, tokens, after, sass)))
        for b in BATCHED:
            pair = []
            for d in (before, after):
                s = step(card, b, d, sass)
                mm = [r for r in s["rows"] if "macs" in r]
                mm_us = sum(r["us_step"] for r in mm)
                macs = sum(r["macs"] * r["launches"] for r in mm)
                c = CARDS[card]
                peak = MMA_PEAK_MAC_PER_CLK_SM[c["arch"]] * c["sms"] * c["clk"]
                pair.append(dict(card=card, workload=f"decode x{b}", tok_s=s["tok_s"],
                                 matmul_share=mm_us / s["total_us"],
                                 tc_peak_share=(macs / (mm_us * 1e-6) / peak) if mm_us else None))
            rows.append(tuple(pair))
        for a, m in rows:
            pk = "-" if a["tc_peak_share"] is None else f"{a['tc_peak_share']:.0%} / {m['tc_peak_share']:.0%}"
            out.append(f"| {card} | {a['workload']} | {a['tok_s']:.0f} | {a['matmul_share']:.0%} | {m['tok_s']:.0f} | "
                       f"{m['matmul_share']:.0%} | {m['tok_s'] / a['tok_s']:.2f}x | {pk} |")
    return "\n".join(out)


# =============================================================================
# Output
# =============================================================================
def fmt_step(s, verbose):
    c = CARDS[s["card"]]
    out = [f"\n## {s['card']} ({s['arch']}, {c['bw'] / 1e9:.0f} GB/s, {c['sms']} SMs), batch {s['batch']}",
           f"{'kernel':<24} {'launch':>6} {'grid x block':>14} {'DRAM MB':>8} {'us/call':>8} {'us/step':>9} {'share':>6}  bound"]
    for r in s["rows"]:
        b = max(r["bounds"], key=r["bounds"].get)
        out.append(f"{r['name']:<24} {r['launches']:>6} {r['grid'] + ' x ' + str(r['block']):>14} "
                   f"{r['dram_step'] / 1e6:>8.1f} {r['us']:>8.2f} {r['us_step']:>9.1f} {r['us_step'] / s['total_us']:>6.1%}  {b}"
                   + (f"  [{', '.join(f'{k} {v:.1f}' for k, v in r['bounds'].items())}; {r['note']}]" if verbose else ""))
    out.append(f"{'graph node gaps':<24} {s['launches']:>6} {'':>14} {'':>8} {s['gaps_us'] / s['launches']:>8.2f} {s['gaps_us']:>9.1f} {s['gaps_us'] / s['total_us']:>6.1%}")
    out.append(f"{'host':<24} {'':>6} {'':>14} {'':>8} {'':>8} {s['host_us']:>9.1f} {s['host_us'] / s['total_us']:>6.1%}")
    out.append(f"step {s['step_ms']:.2f} ms -> {s['tok_s']:.0f} tok/s (aggregate), {s['bw_share']:.0%} of spec bandwidth "
               f"(weights {s['weight_bytes'] / 1e9:.2f} GB + state {s['state_bytes'] / 1e6:.0f} MB per step; "
               f"bound at spec {s['bound_tok_s']:.0f} tok/s)")
    return "\n".join(out)


def summary(steps):
    out = [f"{'card':<8} {'batch':>5} {'ms/step':>8} {'tok/s':>8} {'% spec BW':>9} {'bound tok/s':>11} {'kernels':>8} {'gaps':>6} {'host':>6}  top kernels"]
    for s in steps:
        top = sorted(s["rows"], key=lambda r: -r["us_step"])[:3]
        t = ", ".join(f"{r['name']} {r['us_step'] / s['total_us']:.0%}" for r in top)
        out.append(f"{s['card']:<8} {s['batch']:>5} {s['step_ms']:>8.2f} {s['tok_s']:>8.0f} {s['bw_share']:>9.0%} {s['bound_tok_s']:>11.0f} "
                   f"{s['kernels_us'] / 1e3:>8.2f} {s['gaps_us'] / 1e3:>6.2f} {s['host_us'] / 1e3:>6.2f}  {t}")
    tg = []
    for s in steps:
        if s["batch"] == 1 and s["card"] in TARGETS:
            ok = s["bw_share"] >= TARGETS[s["card"]]
            tg.append(f"{s['card']} {s['bw_share']:.0%} (target {TARGETS[s['card']]:.0%}: {'met' if ok else 'NOT met'})")
    if tg:
        out.append("targets at batch 1: " + "; ".join(tg))
    return "\n".join(out)


def assumptions():
    lines = ["Assumptions (constants in scripts/cuda/cost_model.py; sources in its comments):"]
    for n, c in CARDS.items():
        lines.append(f"  {n}: {c['bw'] / 1e9:.0f} GB/s spec x {c['stream_eff']} streamable, {c['sms']} SMs at {c['clk'] / 1e9:.2f} GHz, "
                     f"L2 {c['l2_mb']} MB, DRAM {c['dram_ns']} ns (x{LOADED_LAT_FACTOR} loaded), L2 hit {c['l2_ns']} ns, {c['arch']}")
    for name in ["L1_WAVEFRONTS_PER_CLK", "ISSUE_PER_CLK", "P", "GRAPH_NODE_GAP_US", "PDL_GAP_US", "HOST_US",
                 "HOST_EXPOSED_US", "TAIL_US", "Q8A_US", "BARRIER_US", "MATMUL_MAC_PER_CLK_SM", "SPLITK_ROWS_PER_SM",
                 "ACT_LDG_PER_COL", "ACT_LINES_STRIDED", "ACT_LINES_INTERLEAVED"]:
        lines.append(f"  {name} = {globals()[name]}")
    lines.append(f"  WEIGHT_LDG = {WEIGHT_LDG}; ISSUE_BASE_INSTR = {ISSUE_BASE_INSTR}")
    lines.append(f"  MMA_PEAK_MAC_PER_CLK_SM = {MMA_PEAK_MAC_PER_CLK_SM}; MMA_SYNC_EFF = {MMA_SYNC_EFF}; "
                 f"MMA_LOOP_INSTR = {MMA_LOOP_INSTR}; MMA_IMMA = {MMA_IMMA}")
    return "\n".join(lines)


def compare(steps, path):
    """Measured (bench --json records or table rows) against predicted tok/s."""
    try:
        text = open(path).read()
    except OSError as e:
        return f"compare: {e}"
    meas = []
    try:
        for r in json.loads(text):
            if r.get("n_gen"):
                meas.append((r.get("n_parallel", 1), r.get("avg_ts")))
    except ValueError:
        for line in text.splitlines():
            m = re.search(r"tg\d+(?:@d\d+)?(?:\s*x\s*(\d+)|.*?pl(\d+))?.*?\|\s*([\d.]+) ±", line)
            if m:
                meas.append((int(m[1] or m[2] or 1), float(m[3])))
    out = ["measured vs predicted tok/s (every card; pick the one that ran):"]
    for b, ts in meas:
        pred = ", ".join(f"{s['card']} {s['tok_s']:.0f}" for s in steps if s["batch"] == b)
        out.append(f"  batch {b}: measured {ts} | predicted {pred}")
    return "\n".join(out)


def parse_set(items, design):
    for it in items:
        key, _, val = it.partition("=")
        if key not in design:
            sys.exit(f"--set: no DESIGN key {key!r} (keys: {', '.join(design)})")
        v = val.strip().lower()
        if v in ("true", "yes", "on"):
            v = True
        elif v in ("false", "no", "off"):
            v = False
        elif v in ("none", "null", ""):
            v = None
        elif v == "ops":
            pass  # split_k=ops: ops::splits_for's rule
        else:
            v = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
            if isinstance(design[key], bool) or design[key] is None and key != "weight_load_bytes":
                v = bool(v)
        design[key] = v


def main():
    ap = argparse.ArgumentParser(description="Cost model of the 7B Q4_K_M decode step on the CUDA backend.")
    ap.add_argument("--card", action="append", help=f"one of {', '.join(CARDS)} (prefix ok; repeatable)")
    ap.add_argument("--batch", action="append", type=int, help="1, 8, 32 by default (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a DESIGN entry")
    ap.add_argument("--all-fixes", action="store_true", help="every fix of the review on (ALL_FIXES)")
    ap.add_argument("--baseline", action="store_true",
                    help="the kernels as reviewed at 446ab26 (BASELINE, review load counts, no SASS report)")
    ap.add_argument("--summary", action="store_true", help="one line per card and batch")
    ap.add_argument("-v", "--verbose", action="store_true", help="every bound and note per kernel")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sass", default=os.path.join(ROOT, "cuda/ptx/sass-report.json"))
    ap.add_argument("--ptxas", default=os.path.join(ROOT, "cuda/ptx/ptxas-report.txt"))
    ap.add_argument("--compare", help="bench output (--json or table) to set against the prediction")
    ap.add_argument("--prefill", action="store_true",
                    help="prefill (pp512, pp4096) and batched decode (8, 32, 64) on A10, RTX 4090, H100, H200: "
                         "the dp4a tiles before, int8 tensor cores after")
    a = ap.parse_args()

    design = dict(DESIGN)
    if a.baseline:
        design.update(BASELINE)
        a.sass = os.devnull
        # The registers the kernels had then: that commit's ptxas report.
        old = subprocess.run(["git", "-C", ROOT, "show", "446ab26:cuda/ptx/ptxas-report.txt"],
                             capture_output=True, text=True)
        if old.returncode == 0:
            tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
            tmp.write(old.stdout)
            tmp.close()
            a.ptxas = tmp.name
        else:
            print("# --baseline: 446ab26 not in this checkout; registers from today's ptxas report", file=sys.stderr)
    if a.all_fixes:
        design.update(ALL_FIXES)
    parse_set(a.set, design)
    cards = list(CARDS)
    if a.card:
        cards = [c for c in CARDS if any(c.lower().startswith(q.lower().replace(" ", "")) for q in a.card)]
        if not cards:
            sys.exit(f"--card: none of {a.card} in {', '.join(CARDS)}")
    batches = a.batch or [1, 8, 32]
    sass = Sass(a.sass, a.ptxas)
    if a.prefill:
        print(f"# Prefill (chunks of {CHUNK}) and batched decode, Falcon Mamba 7B Q4_K_M: dp4a matmul tiles vs "
              f"int8 tensor cores (mma_matmul_*); other DESIGN entries as set")
        print(prefill_table(design, sass))
        return
    steps = [step(c, b, design, sass) for c in cards for b in batches]

    if a.json:
        json.dump(dict(design=design, sass_report=sass.sass_path,
                       figure_sources=sorted({f"{k[0]}@{k[1]}: {v}" for k, v in sass.used.items()}),
                       steps=steps), sys.stdout, indent=1, default=str)
        print()
        return
    print(f"# Decode-step cost model, Falcon Mamba 7B Q4_K_M ({N_LAYER} layers, d {D_MODEL}, E {D_INNER}); "
          f"SASS figures: {sass.sass_path or 'no sass-report.json: review finding 5 load counts + ptxas-report.txt registers'}")
    print("# DESIGN: " + ", ".join(f"{k}={v}" for k, v in design.items()))
    if not a.summary:
        for s in steps:
            print(fmt_step(s, a.verbose))
        print()
    print(summary(steps))
    if a.compare:
        print(compare(steps, a.compare))
    if not a.summary:
        print()
        print(assumptions())


if __name__ == "__main__":
    main()
