#!/usr/bin/env python3
"""Summarize a compare.sh output folder as Markdown: conversion wall time and
peak RSS (from /usr/bin/time -v), and llama-bench vs mamba-gguf bench tokens/s
(from both programs' JSON, same field names), with ratios. Stdlib only.

    python3 scripts/bench/summarize.py OUT_DIR
"""
import json
import re
import sys
from pathlib import Path


def time_v(p: Path):
    if not p.exists():
        return None
    t = p.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", t)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
    secs = None
    if wall:
        parts = [float(x) for x in wall.group(1).strip().split(":")]
        secs = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    return secs, (int(rss.group(1)) / 1024 if rss else None)


def records(p: Path):
    if not p.exists() or p.stat().st_size == 0:
        return []
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return []


def key(r):
    return (r["n_prompt"], r["n_gen"], r.get("n_depth", 0))


def name(k):
    p, n, d = k
    t = f"pp{p}" if n == 0 else f"tg{n}"
    return t + (f" @ d{d}" if d else "")


def main():
    out = Path(sys.argv[1])
    print(f"# mamba-gguf vs llama.cpp ({out})\n")
    load = out / "load.log"
    if load.exists():
        print("Load (uptime before each step):\n")
        for line in load.read_text().splitlines():
            m = re.match(r"(\S+) (\S+) .*load average: (.*)", line)
            if m:
                print(f"- {m.group(2)} at {m.group(1)}: load {m.group(3)}")
        print()

    rows = []
    for ty in ["q4_0", "q4_k_m"]:
        o = time_v(out / f"ours-convert-{ty}.time")
        b = time_v(out / "llama-convert-bf16.time")
        q = time_v(out / f"llama-quantize-{ty}.time")
        if o or (b and q):
            rows.append((ty, o, b, q))
    if rows:
        print("## Conversion (HF bf16 -> GGUF)\n")
        print("| type | ours wall s | ours peak RSS MiB | llama.cpp convert(bf16)+quantize wall s | llama.cpp peak RSS MiB (max of steps) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for ty, o, b, q in rows:
            ow, orss = o if o else (None, None)
            lw = (b[0] + q[0]) if b and q else None
            lr = max(b[1], q[1]) if b and q else None
            f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
            detail = f" ({f(b[0])} + {f(q[0])})" if b and q else ""
            print(f"| {ty} | {f(ow)} | {f(orss, 0)} | {f(lw)}{detail} | {f(lr, 0)} |")
        print()

    print("## Speed (tokens/s, mean ± sd; ratio = ours / llama.cpp, same file, back to back)\n")
    print("| file | test | llama-bench | mamba-gguf bench | ratio | our peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    pairs = [(f"{who}-{ty}", out / f"lb-{who}-{ty}.json", out / f"mg-{who}-{ty}.json")
             for ty in ["q4_0", "q4_k_m"] for who in ["ours", "llama"]]
    pairs.append(("ours-q4_0 (depth)", out / "lb-depth.json", out / "mg-depth.json"))
    for label, lbp, mgp in pairs:
        lb = {key(r): r for r in records(lbp)}
        mg = {key(r): r for r in records(mgp)}
        for k in sorted(set(lb) | set(mg), key=lambda k: (k[2], k[1], k[0])):
            a, b = lb.get(k), mg.get(k)
            fa = f"{a['avg_ts']:.2f} ± {a['stddev_ts']:.2f}" if a else "-"
            fb = f"{b['avg_ts']:.2f} ± {b['stddev_ts']:.2f}" if b else "-"
            ratio = f"{b['avg_ts'] / a['avg_ts']:.2f}" if a and b and a["avg_ts"] > 0 else "-"
            rss = f"{b['peak_rss_bytes'] / 2**20:.0f}" if b and "peak_rss_bytes" in b else "-"
            print(f"| {label} | {name(k)} | {fa} | {fb} | {ratio} | {rss} |")


if __name__ == "__main__":
    main()
