#!/usr/bin/env python3
"""Benchmarks `mamba-gguf serve` end to end (stdlib only; not a test).

Starts the server binary itself on a free port, once per configuration:

  throughput  --parallel max(--clients): for each K in --clients, K clients
              each stream-free request a completion of --tokens tokens
              (ignore_eos, temperature 0, distinct prompts) at the same time;
              reports generated tokens/s over all clients (wall clock from
              the first request sent to the last answer), after one untimed
              warm-up request. With a server that has /health "decode"
              counters, also the mean and largest decode batch.
  cache       a chat history of about --history-tokens tokens (filler user
              turns), a first turn, then the timed second turn (which repeats
              the first reply), against --cache-mb 512 and --cache-mb 0.
  nfork       --parallel 4: one request with n=4 (one prefill forked into 4
              slots) against 4 separate requests sent at once, the same
              prompt of about --prompt-tokens tokens, --tokens each,
              temperature 0.8 (a fresh prompt per run, so no run reuses
              another's cached state).
  restart     the cache history's first turn on a server, the server
              stopped, then the timed second turn on a fresh server: with
              the same --cache-dir, and without one.

  serve_parallel.py --bin target/release/mamba-gguf --model M.gguf \\
      [--threads 2] [--clients 1 2 4] [--tokens 128] [--history-tokens 4096] \\
      [--reps 1] [--steps throughput cache nfork restart] [--json out.json]

Run it with an old and a new binary back to back on the same machine to
compare; the machine's load matters (see scripts/bench/README.md).
"""

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, a, parallel, cache_mb, extra=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [a.bin, "serve", "-m", a.model, "--port", str(self.port), "--parallel", str(parallel),
               "--cache-mb", str(cache_mb), "--queue", "64", "--max-tokens", "100000",
               "--max-prompt-tokens", "100000"]
        if a.threads:
            cmd += ["-t", str(a.threads)]
        cmd += list(extra)
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = time.time()
        while True:
            try:
                get(self.base, "/health")
                break
            except OSError:
                if self.p.poll() is not None or time.time() - t > 120:
                    err = self.p.stderr.read().decode(errors="replace") if self.p.stderr else ""
                    sys.exit(f"server did not start: {' '.join(cmd)}\n{err}")
                time.sleep(0.1)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def decode_counters(base):
    d = get(base, "/health").get("decode")
    return (d["steps"], d["tokens"], d["max_batch"]) if d else None


def throughput(a):
    srv = Server(a, max(a.clients), 0)
    out = []
    try:
        post(srv.base, "/v1/completions", {"prompt": "Warm up", "max_tokens": 8, "temperature": 0})
        for k in a.clients:
            for rep in range(a.reps):
                before = decode_counters(srv.base)
                done = [0] * k

                def one(i):
                    r = post(srv.base, "/v1/completions",
                             {"prompt": f"Story number {i}:", "max_tokens": a.tokens,
                              "temperature": 0, "ignore_eos": True})
                    done[i] = r["usage"]["completion_tokens"]

                th = [threading.Thread(target=one, args=(i,)) for i in range(k)]
                t = time.time()
                for x in th:
                    x.start()
                for x in th:
                    x.join()
                dt = time.time() - t
                after = decode_counters(srv.base)
                row = {"clients": k, "rep": rep, "tokens": sum(done), "seconds": dt,
                       "tok_s": sum(done) / dt}
                line = f"{k} client(s): {sum(done)} tokens in {dt:.2f}s = {sum(done) / dt:.1f} tok/s total"
                if before and after:
                    steps, toks = after[0] - before[0], after[1] - before[1]
                    row["mean_batch"] = toks / steps if steps else 0.0
                    row["max_batch_ever"] = after[2]
                    line += f" (mean decode batch {row['mean_batch']:.2f})"
                print(line, flush=True)
                out.append(row)
    finally:
        srv.stop()
    return out


def history(base, n):
    filler = "The quick brown fox jumps over the lazy dog near the river bank. "
    per = len(post(base, "/tokenize", {"content": filler})["tokens"])
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    total = 0
    while total < n:
        k = min(40, max(1, (n - total) // per))
        msgs.append({"role": "user", "content": filler * k})
        msgs.append({"role": "assistant", "content": "Noted."})
        total += k * per + 8
    msgs.append({"role": "user", "content": "Summarise."})
    return msgs


def cache(a):
    out = []
    for mb in (512, 0):
        srv = Server(a, 1, mb)
        try:
            msgs = history(srv.base, a.history_tokens)
            body = {"max_tokens": 16, "temperature": 0}
            t = time.time()
            r1 = post(srv.base, "/v1/chat/completions", dict(body, messages=msgs))
            t1 = time.time() - t
            msgs = msgs + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                           {"role": "user", "content": "Shorter, please."}]
            t = time.time()
            r2 = post(srv.base, "/v1/chat/completions", dict(body, messages=msgs))
            t2 = time.time() - t
        finally:
            srv.stop()
        u1, u2 = r1["usage"], r2["usage"]
        row = {"cache_mb": mb, "turn1_prompt": u1["prompt_tokens"], "turn1_s": t1,
               "turn2_prompt": u2["prompt_tokens"],
               "turn2_cached": u2["prompt_tokens_details"]["cached_tokens"], "turn2_s": t2}
        print(f"cache {mb:>3} MiB: turn 1 {u1['prompt_tokens']} prompt tokens {t1:.3f}s; "
              f"turn 2 {u2['prompt_tokens']} prompt tokens "
              f"({row['turn2_cached']} cached) {t2:.3f}s", flush=True)
        out.append(row)
    return out


def nfork(a):
    srv = Server(a, 4, 512)
    out = []
    filler = "The falcon watched the sea from the cliff while the wind turned. "
    per = len(post(srv.base, "/tokenize", {"content": filler})["tokens"])
    try:
        post(srv.base, "/v1/completions", {"prompt": "Warm up", "max_tokens": 8, "temperature": 0})
        for rep in range(a.reps):
            for how in ("n=4", "4 requests"):
                prompt = f"Run {rep} {how}. " + filler * max(1, a.prompt_tokens // per)
                body = {"prompt": prompt, "max_tokens": a.tokens, "temperature": 0.8,
                        "ignore_eos": True, "seed": 7}
                t = time.time()
                if how == "n=4":
                    r = post(srv.base, "/v1/completions", dict(body, n=4))
                    gen, ptok = r["usage"]["completion_tokens"], r["usage"]["prompt_tokens"]
                else:
                    res = [None] * 4

                    def one(i):
                        res[i] = post(srv.base, "/v1/completions", dict(body, seed=7 + i))

                    th = [threading.Thread(target=one, args=(i,)) for i in range(4)]
                    for x in th:
                        x.start()
                    for x in th:
                        x.join()
                    gen = sum(r["usage"]["completion_tokens"] for r in res)
                    ptok = sum(r["usage"]["prompt_tokens"] for r in res)
                dt = time.time() - t
                row = {"how": how, "rep": rep, "prompt_tokens_read": ptok, "generated": gen,
                       "seconds": dt, "tok_s": gen / dt}
                print(f"{how:>10}: {ptok} prompt tokens read, {gen} generated in {dt:.2f}s "
                      f"= {gen / dt:.1f} generated tok/s", flush=True)
                out.append(row)
    finally:
        srv.stop()
    return out


def restart(a):
    import tempfile
    out = []
    for use_dir in (True, False):
        with tempfile.TemporaryDirectory() as d:
            extra = ["--cache-dir", d] if use_dir else []
            body = {"max_tokens": 16, "temperature": 0}
            srv = Server(a, 1, 512, extra)
            try:
                msgs = history(srv.base, a.history_tokens)
                r1 = post(srv.base, "/v1/chat/completions", dict(body, messages=msgs))
            finally:
                srv.stop()
            msgs = msgs + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                           {"role": "user", "content": "Shorter, please."}]
            srv = Server(a, 1, 512, extra)
            try:
                t = time.time()
                r2 = post(srv.base, "/v1/chat/completions", dict(body, messages=msgs))
                t2 = time.time() - t
            finally:
                srv.stop()
        u2 = r2["usage"]
        row = {"cache_dir": use_dir, "turn2_prompt": u2["prompt_tokens"],
               "turn2_cached": u2["prompt_tokens_details"]["cached_tokens"], "turn2_s": t2}
        print(f"restart {'with' if use_dir else 'without'} --cache-dir: turn 2 "
              f"{u2['prompt_tokens']} prompt tokens ({row['turn2_cached']} cached) {t2:.3f}s",
              flush=True)
        out.append(row)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the mamba-gguf binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=0, help="server -t (default: all cores)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--history-tokens", type=int, default=4096)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--steps", nargs="+", default=["throughput", "cache"],
                    choices=["throughput", "cache", "nfork", "restart"])
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    res = {"bin": a.bin, "model": a.model, "threads": a.threads}
    steps = {"throughput": throughput, "cache": cache, "nfork": nfork, "restart": restart}
    for name in a.steps:
        res[name] = steps[name](a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
