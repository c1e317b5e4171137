#!/usr/bin/env python3
"""Compile cuda/kernels/*.cu to the shipped PTX, with NVRTC from PyPI.

  pip install nvidia-cuda-nvrtc-cu12==12.2.140 nvidia-cuda-nvcc-cu12==12.2.140
  python3 scripts/cuda/build_ptx.py           # writes cuda/ptx/*.ptx and the ptxas report
  python3 scripts/cuda/build_ptx.py --check   # fails if the committed files differ

Each .cu is compiled for compute_80 (the shipped PTX: the driver JITs it for
sm_80 and newer) and also for compute_86/89/90 (must compile). ptxas -v then
assembles the shipped PTX for sm_80, 86, 89 and 90, as the driver's JIT
would; any spill (stack spill stores or loads) fails the build. Pinned
versions keep the output reproducible, byte for byte.
"""
import ctypes
import glob
import os
import re
import subprocess
import sys
import tempfile

NVRTC_VERSION = "12.2.140"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNELS = os.path.join(ROOT, "cuda", "kernels")
PTX_DIR = os.path.join(ROOT, "cuda", "ptx")
REPORT = os.path.join(PTX_DIR, "ptxas-report.txt")
ARCHS = ["80", "86", "89", "90"]
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


def ptxas_report(ptx_path, arch):
    ptxas = os.path.join(nvidia_dir("cuda_nvcc"), "bin", "ptxas")
    out = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", ptx_path, "-o", os.devnull],
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
    check = "--check" in sys.argv[1:]
    nv = load_nvrtc()
    sources = sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
    outputs, report, spills = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            stem = os.path.splitext(os.path.basename(src))[0]
            for arch in ARCHS:
                ptx = compile_ptx(nv, src, arch)
                if arch == "80":
                    outputs[os.path.join(PTX_DIR, stem + ".ptx")] = ptx
            p = os.path.join(tmp, stem + ".ptx")
            open(p, "w").write(outputs[os.path.join(PTX_DIR, stem + ".ptx")])
            for arch in ARCHS:
                for fn, a, regs, smem, stack, st, ld in ptxas_report(p, arch):
                    report.append(f"{fn:24} sm_{a} regs {regs:3} smem {smem:5} stack {stack:4} spill_st {st:4} spill_ld {ld:4}")
                    if st or ld:
                        spills.append(f"{fn} sm_{a}: {st} bytes spill stores, {ld} bytes spill loads")
    outputs[REPORT] = "# ptxas -v on the shipped compute_80 PTX (NVRTC/ptxas " + NVRTC_VERSION + ")\n" + "\n".join(sorted(report)) + "\n"
    if spills:
        sys.exit("error: register spills:\n  " + "\n  ".join(spills))
    if check:
        bad = [p for p, text in outputs.items() if not os.path.exists(p) or open(p).read() != text]
        stale = set(glob.glob(os.path.join(PTX_DIR, "*.ptx"))) - set(outputs)
        if bad or stale:
            sys.exit("error: cuda/ptx is out of date with the sources (run scripts/cuda/build_ptx.py): "
                     + ", ".join(os.path.relpath(p, ROOT) for p in bad + sorted(stale)))
        print(f"cuda/ptx matches {len(sources)} kernel sources; no spills on sm_{', sm_'.join(ARCHS)}")
        return
    os.makedirs(PTX_DIR, exist_ok=True)
    for p, text in outputs.items():
        open(p, "w").write(text)
    print(f"wrote {len(outputs)} files to {os.path.relpath(PTX_DIR, ROOT)}")


if __name__ == "__main__":
    main()
