#!/usr/bin/env python3
"""Compile cuda/kernels/*.cu to the shipped PTX and cubins, with NVRTC and ptxas from PyPI.

  pip install nvidia-cuda-nvrtc-cu12==12.2.140 nvidia-cuda-nvcc-cu12==12.2.140 nvidia-cuda-nvdisasm==13.2.51
  python3 scripts/cuda/build_ptx.py           # writes cuda/ptx, cuda/cubin and the reports
  python3 scripts/cuda/build_ptx.py --check   # fails if the committed files differ, or on a regression

Each .cu is compiled for compute_75 (the shipped PTX: the driver JITs it for
sm_75 and newer; NVRTC's compute_75 and compute_80 PTX are identical but for
the .target line) and for compute_90 (must compile). The PTX's .version line
is rewritten from NVRTC's 8.2 (driver R535+) to PTX_ISA (below), the lowest
the kernels need, so older drivers load it. ptxas then assembles the shipped
PTX for sm_75 (the floor: must assemble) and for sm_80/86/89/90, writing the
cubins cuda/cubin/<module>.sm_XX.cubin that the runtime loads for those
compute capabilities (no -lineinfo, no debug info); any spill (ptxas -v)
fails the build. scripts/cuda/sass_report.py then disassembles the cubins
(cuda/ptx/sass-report.{txt,json}) and fails on a spill or a weight load
narrower than designed. Pinned versions keep every output reproducible,
byte for byte, so --check compares them all.
"""
import ctypes
import glob
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_report  # noqa: E402

NVRTC_VERSION = "12.2.140"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNELS = os.path.join(ROOT, "cuda", "kernels")
PTX_DIR = os.path.join(ROOT, "cuda", "ptx")
CUBIN_DIR = os.path.join(ROOT, "cuda", "cubin")
REPORT = os.path.join(PTX_DIR, "ptxas-report.txt")
SHIPPED = "75"                    # the PTX's compute capability: T4 (sm_75) and newer
COMPILE_ALSO = ["90"]             # must compile too (compute_80's PTX equals compute_75's)
CUBIN_ARCHS = sass_report.ARCHS   # cubins shipped: sm_80, sm_86, sm_89, sm_90
PTXAS_ARCHS = [SHIPPED] + CUBIN_ARCHS
# The PTX ISA version written into the shipped PTX. The floor is set by:
#   .target sm_75        ISA 6.3 (CUDA 10.0, driver R410+)
#   shfl.sync            ISA 6.0 (__shfl_xor_sync in the warp reductions)
#   dp4a                 ISA 5.0 (dot4 in common.cuh)
#   cvt/add/mul/fma with rounding modes, div.rn, atom/red.shared.add, bfi: ISA <= 2.0
#   (also fine for the planned cvt.f32.f16 inline asm: ISA 1.0 ... 4.x)
# Every other instruction NVRTC 12.2 emits for these kernels is older than
# 6.0. ptxas checks each instruction against this version when it assembles
# the PTX below, so an instruction that needs more (mma.sync m16n8k32: 7.0
# and sm_80, cp.async: 7.0 and sm_80) fails the build: raise it then.
PTX_ISA = "6.3"
# Modules for a newer floor: the int8 tensor-core matmul (mma.cu:
# mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, PTX ISA 7.0 and sm_80) is
# compiled for compute_80 with .version 7.0 and assembled for the cubin archs
# only; the runtime loads it on sm_80+ (cuda/src/cuda.rs, ModuleImage::min_cc)
# and a T4 keeps the dp4a matmul of matvec.cu.
MODULE_FLOOR = {"mma": ("80", "7.0")}
OPTS = ["--std=c++17", "-I" + KERNELS, "--device-as-default-execution-space"]


def nvidia_dir(pkg):
    try:
        import nvidia  # namespace package from the wheels
    except ImportError:
        sys.exit(f"error: install the pinned wheels: pip install nvidia-cuda-nvrtc-cu12=={NVRTC_VERSION} nvidia-cuda-nvcc-cu12=={NVRTC_VERSION}")
    for base in nvidia.__path__:
        p = os.path.join(base, pkg)
        if os.path.isdir(p):
            return p
    sys.exit(f"error: nvidia/{pkg} not installed (pip install the pinned wheels)")


def load_nvrtc():
    lib = os.path.join(nvidia_dir("cuda_nvrtc"), "lib", "libnvrtc.so.12")
    nv = ctypes.CDLL(lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nv.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    want = tuple(int(x) for x in NVRTC_VERSION.split(".")[:2])
    if (major.value, minor.value) != want:
        sys.exit(f"error: NVRTC {major.value}.{minor.value} found, {want[0]}.{want[1]} pinned")
    return nv


def compile_ptx(nv, path, arch):
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    name = os.path.basename(path).encode()
    if nv.nvrtcCreateProgram(ctypes.byref(prog), src, name, 0, None, None) != 0:
        sys.exit(f"error: nvrtcCreateProgram failed for {path}")
    opts = [f"--gpu-architecture=compute_{arch}"] + OPTS
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nv.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nv.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        sys.exit(f"error: {path} for compute_{arch}:\n{log.value.decode()}")
    if log.value.strip():
        sys.exit(f"error: warnings compiling {path} for compute_{arch}:\n{log.value.decode()}")
    nv.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nv.nvrtcGetPTX(prog, ptx)
    nv.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def lower_version(ptx, path, isa=PTX_ISA):
    out, n = re.subn(r"^\.version \d+\.\d+$", f".version {isa}", ptx, count=1, flags=re.M)
    if n != 1:
        sys.exit(f"error: no .version line in the PTX of {path}")
    return out


def ptxas_report(ptx_path, arch, cubin):
    """ptxas -v; the cubin goes to `cubin` (os.devnull: assemble only)."""
    ptxas = os.path.join(nvidia_dir("cuda_nvcc"), "bin", "ptxas")
    out = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", ptx_path, "-o", cubin],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: ptxas sm_{arch} {ptx_path}:\n{out.stderr}")
    rows, fn = [], None
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            fn = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and fn:
            stack, st, ld = map(int, m.groups())
            rows.append([fn, arch, None, 0, stack, st, ld])
        m = re.search(r"Used (\d+) registers", line)
        if m and rows and rows[-1][0] == fn and rows[-1][2] is None:
            rows[-1][2] = int(m.group(1))
            m = re.search(r"(\d+) bytes smem", line)
            rows[-1][3] = int(m.group(1)) if m else 0
    return rows


def main():
    args = sys.argv[1:]
    check = "--check" in args
    jobs = int(args[args.index("-j") + 1]) if "-j" in args else min(4, os.cpu_count() or 1)
    nv = load_nvrtc()
    sources = sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
    stems = [os.path.splitext(os.path.basename(s))[0] for s in sources]
    if stems != sass_report.MODULES:
        sys.exit(f"error: kernel modules {stems} differ from sass_report.MODULES {sass_report.MODULES} "
                 "(the runtime's include_bytes! names): update both")
    outputs, report, spills = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for src, stem in zip(sources, stems):
            shipped, isa = MODULE_FLOOR.get(stem, (SHIPPED, PTX_ISA))
            for arch in [shipped] + COMPILE_ALSO:
                ptx = compile_ptx(nv, src, arch)
                if arch == shipped:
                    ptx = lower_version(ptx, src, isa)
                    outputs[os.path.join(PTX_DIR, stem + ".ptx")] = ptx
                    open(os.path.join(tmp, stem + ".ptx"), "w").write(ptx)
        runs = [(stem, arch) for stem in stems for arch in PTXAS_ARCHS
                if stem not in MODULE_FLOOR or arch in CUBIN_ARCHS]
        cubin = lambda stem, arch: os.path.join(tmp, f"{stem}.sm_{arch}.cubin") if arch in CUBIN_ARCHS else os.devnull
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            results = list(ex.map(lambda r: ptxas_report(os.path.join(tmp, r[0] + ".ptx"), r[1], cubin(*r)), runs))
        ptxas_rows = {}
        for rows in results:
            for fn, a, regs, smem, stack, st, ld in rows:
                ptxas_rows[(fn, a)] = (regs, smem)
                report.append(f"{fn:24} sm_{a} regs {regs:3} smem {smem:5} stack {stack:4} spill_st {st:4} spill_ld {ld:4}")
                if st or ld:
                    spills.append(f"{fn} sm_{a}: {st} bytes spill stores, {ld} bytes spill loads")
        cubins = {(stem, a): cubin(stem, a) for stem in stems for a in CUBIN_ARCHS}
        for (stem, a), p in cubins.items():
            outputs[os.path.join(CUBIN_DIR, os.path.basename(p))] = open(p, "rb").read()
        txt, js, rows = sass_report.build_report(cubins, jobs)
    # The SASS report's registers and shared memory must be ptxas's.
    for kernel, archs in rows.items():
        for arch, r in archs.items():
            if ptxas_rows.get((kernel, arch[3:])) != (r["regs"], r["smem"]):
                sys.exit(f"error: {kernel} {arch}: sass_report reads regs/smem {r['regs']}/{r['smem']}, "
                         f"ptxas -v says {ptxas_rows.get((kernel, arch[3:]))}")
    floors = "".join(f"; {m}: compute_{a}, .version {v}, no sm_{SHIPPED}" for m, (a, v) in sorted(MODULE_FLOOR.items()))
    outputs[REPORT] = (f"# ptxas -v on the shipped compute_{SHIPPED} PTX (.version {PTX_ISA}{floors}; NVRTC/ptxas {NVRTC_VERSION})\n"
                       + "\n".join(sorted(report)) + "\n")
    if spills:
        sys.exit("error: register spills:\n  " + "\n  ".join(spills))
    total = sum(len(v) for p, v in outputs.items() if p.endswith(".cubin"))
    if check:
        def same(p, v):
            return os.path.exists(p) and open(p, "rb" if isinstance(v, bytes) else "r").read() == v
        bad = [p for p, v in outputs.items() if not same(p, v)]
        stale = (set(glob.glob(os.path.join(PTX_DIR, "*.ptx"))) | set(glob.glob(os.path.join(CUBIN_DIR, "*.cubin")))) - set(outputs)
        problems = sass_report.check_or_write(txt, js, rows, check=True)
        print(sass_report.summary(rows))
        if bad or stale:
            problems.append("cuda/ptx or cuda/cubin is out of date with the sources (run scripts/cuda/build_ptx.py): "
                            + ", ".join(os.path.relpath(p, ROOT) for p in bad + sorted(stale)))
        if problems:
            sys.exit("error:\n  " + "\n  ".join(problems))
        print(f"cuda/ptx (.version {PTX_ISA}, compute_{SHIPPED}) and cuda/cubin ({total} bytes) match "
              f"{len(sources)} kernel sources; no spills on sm_{', sm_'.join(PTXAS_ARCHS)}; "
              f"SASS report up to date, weight loads as wide as expected")
        return
    os.makedirs(PTX_DIR, exist_ok=True)
    os.makedirs(CUBIN_DIR, exist_ok=True)
    for p, v in outputs.items():
        open(p, "wb" if isinstance(v, bytes) else "w").write(v)
    problems = sass_report.check_or_write(txt, js, rows, check=False)
    print(sass_report.summary(rows))
    print(f"wrote {len(outputs) + 2} files to cuda/ptx and cuda/cubin (cubins: {total} bytes)")
    if problems:
        sys.exit("error: SASS report:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
