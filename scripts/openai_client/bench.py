#!/usr/bin/env python3
"""Benchmarks a running `mamba-gguf serve` (stdlib only, not a test).

  bench.py --base-url http://127.0.0.1:8080 cache   [--history-tokens 4096]
  bench.py --base-url http://127.0.0.1:8080 parallel [--clients 1 2 4]

`cache`: builds a chat history of about N tokens (filler user messages), asks
a first turn, then times the second turn (which repeats the first reply).
Run it against a server with --cache-mb 512 and one with --cache-mb 0.
`parallel`: K clients each stream a completion of T tokens at once; prints
total generated tokens per second.
"""

import argparse
import json
import threading
import time
import urllib.request


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def tokens(base, text):
    return len(post(base, "/tokenize", {"content": text})["tokens"])


def bench_cache(base, n):
    filler = "The quick brown fox jumps over the lazy dog near the river bank. "
    per = tokens(base, filler)
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    total = 0
    while total < n:
        k = min(40, max(1, (n - total) // per))
        msgs.append({"role": "user", "content": filler * k})
        msgs.append({"role": "assistant", "content": "Noted."})
        total += k * per + 8
    msgs.append({"role": "user", "content": "Summarise."})
    t = time.time()
    r1 = post(base, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
    t1 = time.time() - t
    msgs.append({"role": "assistant", "content": r1["choices"][0]["message"]["content"]})
    msgs.append({"role": "user", "content": "Shorter, please."})
    t = time.time()
    r2 = post(base, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
    t2 = time.time() - t
    u1, u2 = r1["usage"], r2["usage"]
    print(f"turn 1: {u1['prompt_tokens']} prompt tokens ({u1['prompt_tokens_details']['cached_tokens']} cached), "
          f"{u1['completion_tokens']} generated, {t1:.3f}s")
    print(f"turn 2: {u2['prompt_tokens']} prompt tokens ({u2['prompt_tokens_details']['cached_tokens']} cached), "
          f"{u2['completion_tokens']} generated, {t2:.3f}s")


def bench_parallel(base, clients, n):
    for k in clients:
        done = []

        def one(i):
            r = post(base, "/v1/completions", {"prompt": f"Story number {i}:", "max_tokens": n,
                                               "temperature": 0, "ignore_eos": True})
            done.append(r["usage"]["completion_tokens"])

        t = time.time()
        th = [threading.Thread(target=one, args=(i,)) for i in range(k)]
        for x in th:
            x.start()
        for x in th:
            x.join()
        dt = time.time() - t
        print(f"{k} client(s): {sum(done)} tokens in {dt:.2f}s = {sum(done) / dt:.1f} tok/s total")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("what", choices=["cache", "parallel"])
    ap.add_argument("--history-tokens", type=int, default=4096)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    if a.what == "cache":
        bench_cache(a.base_url, a.history_tokens)
    else:
        bench_parallel(a.base_url, a.clients, a.tokens)


if __name__ == "__main__":
    main()
