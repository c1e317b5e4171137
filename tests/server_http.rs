//! The OpenAI-compatible server through a real HTTP client (reqwest) on
//! 127.0.0.1, against the tiny Falcon Mamba fixture (real vocabulary, random
//! weights, f32 so that chunked and token-by-token prefill agree bit for bit).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mamba_gguf::chat_template::{ChatTemplate, Message};
use mamba_gguf::server::{self, ServerConfig, ServerHandle};
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::{Model, Sampler, SamplerConfig, Session};
use serde_json::{json, Value};

fn model() -> Arc<Model> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llamacpp/falcon-mamba-tiny-f32.gguf");
    Arc::new(Model::load(p).expect("fixture model loads"))
}

fn start(model: Arc<Model>, f: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut cfg = ServerConfig {
        port: 0,
        timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    f(&mut cfg);
    server::spawn(model, cfg).expect("server starts")
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn post(h: &ServerHandle, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("http://{}{path}", h.addr))
        .json(body)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON answer"))
}

/// Greedy generation with the library, from a fresh session fed `prompt` at
/// once: (tokens, log-probabilities), stopping at an EOS id.
fn library_greedy(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut s = Session::new(model);
    let mut logits = s.feed(prompt).expect("feeds").to_vec();
    let mut sampler = Sampler::new(SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    });
    let mut hist = prompt.to_vec();
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let id = sampler.sample(&logits, &hist);
        if tok.eos_ids().contains(&id) {
            break;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        lps.push(logits[id as usize] - max - lse.ln() as f32);
        ids.push(id);
        hist.push(id);
        logits = s.feed(&[id]).expect("feeds").to_vec();
    }
    (ids, lps)
}

fn ids_of(choice: &Value) -> Vec<u32> {
    choice["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

fn chat_logprobs(choice: &Value) -> Vec<f32> {
    choice["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content")
        .iter()
        .map(|v| v["logprob"].as_f64().expect("logprob") as f32)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4, "{what}: token {i}: {x} vs {y}");
    }
}

fn msgs_json(m: &[Message]) -> Value {
    json!(m
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect::<Vec<_>>())
}

#[test]
fn chat_matches_library_and_second_turn_starts_from_cache() {
    let model = model();
    let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
    let tmpl = ChatTemplate::from_tokenizer(&tok).expect("template");
    // Two slots: the follow-up may land on the other one, and must still
    // find the state the first left in the shared cache.
    let h = start(model.clone(), |c| c.parallel = 2);
    let n = 12;
    let mut msgs = vec![
        Message::new("system", "You are terse."),
        Message::new("user", "Name three colours."),
    ];
    let req = |m: &[Message]| {
        json!({"model": "x", "messages": msgs_json(m), "temperature": 0, "max_tokens": n,
               "logprobs": true, "return_tokens": true})
    };

    // Turn 1: equals the library's greedy generation on the rendered prompt.
    let (st, r1) = post(&h, "/v1/chat/completions", &req(&msgs));
    assert_eq!(st, 200, "{r1}");
    assert_eq!(r1["object"], "chat.completion");
    let c1 = &r1["choices"][0];
    let text1 = tmpl.render(&msgs, true).expect("renders");
    let p1 = tok.encode(&text1, tok.add_bos()).expect("encodes");
    let (lib_ids, lib_lp) = library_greedy(&model, &tok, &p1, n);
    assert_eq!(ids_of(c1), lib_ids);
    assert_close(&chat_logprobs(c1), &lib_lp, "turn 1");
    let reply = c1["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert_eq!(reply, tok.decode(&lib_ids));
    assert_eq!(c1["message"]["role"], "assistant");
    let u1 = &r1["usage"];
    assert_eq!(u1["prompt_tokens"], p1.len());
    assert_eq!(u1["completion_tokens"], lib_ids.len());
    assert_eq!(u1["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        c1["finish_reason"],
        if lib_ids.len() == n { "length" } else { "stop" }
    );

    // Turn 2: the cache covers the first prompt and the reply.
    msgs.push(Message::new("assistant", reply.clone()));
    msgs.push(Message::new("user", "And three more?"));
    let (st, r2) = post(&h, "/v1/chat/completions", &req(&msgs));
    assert_eq!(st, 200, "{r2}");
    let c2 = &r2["choices"][0];
    let cached = p1.len() + lib_ids.len();
    assert_eq!(
        r2["usage"]["prompt_tokens_details"]["cached_tokens"],
        cached
    );
    // A cold run of the same tokens: the first prompt, the generated reply as
    // generated, then the rest of the rendering tokenized between message
    // boundaries.
    let (full2, bounds) = tmpl.render_with_boundaries(&msgs).expect("renders");
    let seen = format!("{text1}{reply}");
    assert!(full2.starts_with(&seen));
    let mut cold: Vec<u32> = p1.clone();
    cold.extend_from_slice(&lib_ids);
    let mut pos = seen.len();
    let start = pos;
    let ends: Vec<usize> = bounds
        .iter()
        .copied()
        .filter(|&b| b > start)
        .chain([full2.len()])
        .collect();
    for end in ends {
        cold.extend(tok.encode(&full2[pos..end], false).expect("encodes"));
        pos = end;
    }
    assert_eq!(r2["usage"]["prompt_tokens"], cold.len());
    let (cold_ids, cold_lp) = library_greedy(&model, &tok, &cold, n);
    assert_eq!(ids_of(c2), cold_ids);
    assert_close(&chat_logprobs(c2), &cold_lp, "turn 2");

    // The same request again comes entirely from the cache and gives the same.
    let (_, r3) = post(&h, "/v1/chat/completions", &req(&msgs));
    assert_eq!(
        r3["usage"]["prompt_tokens_details"]["cached_tokens"],
        cold.len()
    );
    assert_eq!(ids_of(&r3["choices"][0]), cold_ids);
}

/// Reads an SSE response: the JSON of every `data:` line before `[DONE]`.
fn read_sse(r: reqwest::blocking::Response) -> Vec<Value> {
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut out = Vec::new();
    let mut done = false;
    for line in BufReader::new(r).lines() {
        let line = line.expect("line");
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        out.push(serde_json::from_str(data).expect("chunk is JSON"));
    }
    assert!(done, "stream ends with [DONE]");
    out
}

fn stream_ids(chunks: &[Value]) -> Vec<u32> {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["token_ids"].as_array())
        .flatten()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn streaming_equals_non_streaming() {
    let h = start(model(), |c| c.cache_mb = 0);
    let base = json!({"prompt": "Once upon a time", "temperature": 0, "max_tokens": 10, "return_tokens": true});
    let (st, plain) = post(&h, "/v1/completions", &base);
    assert_eq!(st, 200, "{plain}");
    assert_eq!(plain["object"], "text_completion");
    let mut sreq = base.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let r = client()
        .post(format!("http://{}/v1/completions", h.addr))
        .json(&sreq)
        .send()
        .expect("request");
    let chunks = read_sse(r);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, plain["choices"][0]["text"].as_str().expect("text"));
    assert_eq!(stream_ids(&chunks), ids_of(&plain["choices"][0]));
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"].as_array().map(|a| a.len()), Some(0));
    assert_eq!(last["usage"], plain["usage"]);

    // Chat streaming: a role delta first, content deltas, a finish reason.
    let r = client()
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(
            &json!({"messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
                      "max_tokens": 6, "stream": true}),
        )
        .send()
        .expect("request");
    let chunks = read_sse(r);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let fin = chunks.last().expect("chunks");
    assert!(fin["choices"][0]["finish_reason"].is_string(), "{fin}");
}

#[test]
fn concurrent_streams_equal_sequential() {
    let model = model();
    let prompts = ["The sky is", "Rust is a language", "1, 2, 3,", "Dear diary"];
    let body = |p: &str| json!({"prompt": p, "temperature": 0, "max_tokens": 16, "stream": true, "return_tokens": true});
    let seq: Vec<Vec<u32>> = {
        let h = start(model.clone(), |c| c.cache_mb = 0);
        prompts
            .iter()
            .map(|p| {
                let r = client()
                    .post(format!("http://{}/v1/completions", h.addr))
                    .json(&body(p))
                    .send()
                    .expect("request");
                stream_ids(&read_sse(r))
            })
            .collect()
    };
    let h = start(model, |c| {
        c.parallel = prompts.len();
        c.cache_mb = 0;
    });
    let addr = h.addr;
    let par: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let b = body(p);
                s.spawn(move || {
                    let r = client()
                        .post(format!("http://{addr}/v1/completions"))
                        .json(&b)
                        .send()
                        .expect("request");
                    stream_ids(&read_sse(r))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert_eq!(par, seq);
    assert!(seq.iter().all(|s| !s.is_empty()));
}

#[test]
fn bad_requests_get_400_and_the_server_keeps_serving() {
    let h = start(model(), |c| c.max_body = 64 << 10);
    let c = client();
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("/v1/chat/completions", "{not json".into(), None),
        ("/v1/chat/completions", "[1, 2]".into(), None),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": "hi"}).to_string(),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({}).to_string(),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": 1, "content": "x"}]}).to_string(),
            Some("messages[0].role"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": 5}]}).to_string(),
            Some("messages[0].content"),
        ),
        (
            "/v1/completions",
            json!({"prompt": 5}).to_string(),
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": "ten"}).to_string(),
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": -1}).to_string(),
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 1_000_000}).to_string(),
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": "hot"}).to_string(),
            Some("temperature"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stream": "yes"}).to_string(),
            Some("stream"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": [1]}).to_string(),
            Some("stop"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "n": 2}).to_string(),
            Some("n"),
        ),
        (
            "/v1/completions",
            json!({"prompt": ""}).to_string(),
            Some("prompt"),
        ),
        (
            "/detokenize",
            json!({"tokens": [1, 99999999]}).to_string(),
            Some("tokens"),
        ),
        (
            "/tokenize",
            json!({"content": 3}).to_string(),
            Some("content"),
        ),
    ];
    for (path, body, param) in &cases {
        let r = c
            .post(format!("http://{}{path}", h.addr))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .expect("request");
        assert_eq!(r.status().as_u16(), 400, "{path} {body}");
        let v: Value = r.json().expect("JSON error body");
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(e["type"], "invalid_request_error", "{v}");
        let obj = e.as_object().expect("object");
        assert!(obj.contains_key("param") && obj.contains_key("code"), "{v}");
        if let Some(p) = param {
            assert_eq!(e["param"], *p, "{body}: {v}");
        }
    }
    // Too large a body: 413 with the same error shape.
    // The server answers before reading the whole body and then drops the
    // connection; `Connection: close` keeps the client from pooling it and
    // failing the next request on the dead socket (seen about 1 run in 12).
    let big = json!({"prompt": "a ".repeat(100_000)});
    let r = c
        .post(format!("http://{}/v1/completions", h.addr))
        .header("connection", "close")
        .json(&big)
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().expect("JSON error body");
    assert!(v["error"]["message"].is_string(), "{v}");
    // Unknown path.
    let r = c
        .get(format!("http://{}/v2/nothing", h.addr))
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);

    // Still serving.
    let (st, ok) = post(
        &h,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(st, 200, "{ok}");
    assert!(ok["choices"][0]["text"].is_string());
}

#[test]
fn tokenize_models_health() {
    let model = model();
    let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
    let h = start(model, |_| {});
    let text = "Hello wörld, 123";
    let (st, t) = post(&h, "/tokenize", &json!({"content": text}));
    assert_eq!(st, 200);
    let ids: Vec<u32> = t["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    assert_eq!(ids, tok.encode(text, false).expect("encodes"));
    let (st, d) = post(&h, "/detokenize", &json!({"tokens": ids}));
    assert_eq!(st, 200);
    assert_eq!(d["content"], text);
    let (_, p) = post(
        &h,
        "/tokenize",
        &json!({"content": "Hi", "with_pieces": true}),
    );
    assert_eq!(p["tokens"][0]["piece"], "Hi");

    let m: Value = client()
        .get(format!("http://{}/v1/models", h.addr))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["object"], "model");
    let hl: Value = client()
        .get(format!("http://{}/health", h.addr))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(hl["status"], "ok");
    assert_eq!(hl["backend"], "CPU");
    assert!(hl["device"].as_str().is_some_and(|d| d.starts_with("CPU")));
}

fn health(h: &ServerHandle) -> Value {
    client()
        .get(format!("http://{}/health", h.addr))
        .send()
        .expect("request")
        .json()
        .expect("json")
}

#[test]
fn full_server_answers_429_and_a_disconnect_frees_the_slot() {
    let h = start(model(), |c| {
        c.parallel = 1;
        c.queue = 0;
        c.max_tokens = 100_000;
    });
    // A long streaming request holds the only slot.
    let long = client()
        .post(format!("http://{}/v1/completions", h.addr))
        .json(
            &json!({"prompt": "Go on and on", "max_tokens": 100_000, "temperature": 1.0,
                      "stream": true, "ignore_eos": true}),
        )
        .send()
        .expect("request");
    assert_eq!(long.status().as_u16(), 200);
    let mut lines = BufReader::new(long).lines();
    // Wait until it streams.
    let first = lines.next().expect("a line").expect("line");
    assert!(first.starts_with("data: "), "{first}");
    let (st, busy) = post(
        &h,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(st, 429, "{busy}");
    assert_eq!(busy["error"]["type"], "rate_limit_error");
    assert_eq!(health(&h)["running"], 1);
    // Hang up: the slot is free again well before the long request would end.
    drop(lines);
    let t = Instant::now();
    while health(&h)["running"] != 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "slot not freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, ok) = post(
        &h,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 2}),
    );
    assert_eq!(st, 200, "{ok}");
}

/// Several requests at once are decoded in shared batched steps (the health
/// counters say so: a step fed more than one sequence), and each answer is
/// exactly the one it gets alone on a one-slot server: greedy and seeded
/// sampling, logprobs, and a prompt long enough (several prefill chunks) to
/// be prefilled between the others' decode steps.
#[test]
fn concurrent_requests_share_batched_steps_and_equal_sequential() {
    let model = model();
    let long = "The history of the river valley is long and full of detail. ".repeat(30);
    let bodies: Vec<Value> = vec![
        json!({"prompt": "The sky is", "temperature": 0, "max_tokens": 40, "ignore_eos": true,
               "return_tokens": true, "logprobs": 1}),
        json!({"prompt": "Rust is a language", "temperature": 0.9, "seed": 7, "top_k": 50,
               "max_tokens": 36, "ignore_eos": true, "return_tokens": true}),
        json!({"prompt": long, "temperature": 0, "max_tokens": 24, "ignore_eos": true,
               "return_tokens": true}),
        json!({"prompt": "1, 2, 3,", "temperature": 1.2, "seed": 99, "repeat_penalty": 1.3,
               "max_tokens": 44, "ignore_eos": true, "return_tokens": true, "logprobs": 1}),
        json!({"prompt": "Dear diary", "temperature": 0.7, "seed": 3, "top_p": 0.9,
               "max_tokens": 30, "ignore_eos": true, "return_tokens": true}),
    ];
    let answer = |v: &Value| (v["choices"].clone(), v["usage"].clone());
    let seq: Vec<(Value, Value)> = {
        let h = start(model.clone(), |c| c.cache_mb = 0);
        let out = bodies
            .iter()
            .map(|b| {
                let (st, v) = post(&h, "/v1/completions", b);
                assert_eq!(st, 200, "{v}");
                answer(&v)
            })
            .collect();
        let d = &health(&h)["decode"];
        assert_eq!(d["max_batch"], 1, "one slot: {d}");
        out
    };
    let h = start(model, |c| {
        c.parallel = 4;
        c.cache_mb = 0;
    });
    let addr = h.addr;
    let gate = std::sync::Barrier::new(bodies.len());
    let par: Vec<(Value, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = bodies
            .iter()
            .map(|b| {
                let gate = &gate;
                s.spawn(move || {
                    let c = client();
                    gate.wait();
                    let r = c
                        .post(format!("http://{addr}/v1/completions"))
                        .json(b)
                        .send()
                        .expect("request");
                    assert_eq!(r.status().as_u16(), 200);
                    answer(&r.json::<Value>().expect("JSON answer"))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (i, (p, s)) in par.iter().zip(&seq).enumerate() {
        assert_eq!(p, s, "request {i}: batched answer differs from alone");
    }
    let d = &health(&h)["decode"];
    let (steps, tokens, max) = (
        d["steps"].as_u64().expect("steps"),
        d["tokens"].as_u64().expect("tokens"),
        d["max_batch"].as_u64().expect("max_batch"),
    );
    eprintln!("decode counters: {d}");
    assert!((2..=4).contains(&max), "no batched step: {d}");
    assert!(tokens > steps, "mean batch not above one: {d}");
}

/// A long prompt does not stall a slot that is already decoding: with two
/// slots, a short request submitted just after a ~8000-token prompt gets all
/// of its tokens and its final event while the long prompt is still being
/// prefilled (one chunk per scheduler step, between the batched decode
/// steps). A scheduler that prefilled a prompt to its end first would have
/// the long request's token out before the short request's first.
#[test]
fn a_long_prefill_is_interleaved_with_decoding() {
    use mamba_gguf::server::engine::{Engine, EngineConfig, Event, GenParams, Job, Prompt};
    let model = model();
    let tok = Arc::new(Tokenizer::from_gguf(model.gguf()).expect("tokenizer"));
    let engine = Engine::start(
        model,
        tok.clone(),
        EngineConfig {
            parallel: 2,
            queue: 4,
            cache_bytes: 0,
            max_prompt_tokens: 100_000,
        },
    )
    .expect("scheduler starts");
    let params = |n: usize| GenParams {
        max_tokens: n,
        sampler: SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        logprobs: false,
        ignore_eos: true,
    };
    // Both jobs send into one channel, so the events arrive in the order the
    // scheduler sent them, whatever this thread's timing.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = |text: String, n: usize| Job {
        prompt: Prompt {
            text,
            bounds: Vec::new(),
        },
        params: params(n),
        tx: tx.clone(),
        deadline: Instant::now() + Duration::from_secs(120),
    };
    let long_text = "word ".repeat(8000);
    let long_len =
        tok.encode(&long_text, false).expect("encodes").len() + usize::from(tok.add_bos());
    assert!(long_len >= 4000, "{long_len} tokens");
    engine.submit(job(long_text, 1)).expect("queued");
    engine.submit(job("Hello".into(), 12)).expect("queued");
    // (tokens sent before it, prompt tokens) of each final event, in order.
    let mut done = Vec::new();
    let mut tokens = 0;
    while done.len() < 2 {
        match rx.blocking_recv().expect("an event") {
            Event::Token { id: Some(_), .. } => tokens += 1,
            Event::Token { .. } => {}
            Event::Done { usage, .. } => done.push((tokens, usage.prompt_tokens)),
            Event::Error { message, .. } => panic!("{message}"),
        }
    }
    // The short request finished first, with its 12 tokens and none of the
    // long one's before them; the long one came after, whole.
    assert_ne!(
        done[0].1, long_len,
        "the long prompt finished first: {done:?}"
    );
    assert_eq!(done[0].0, 12, "{done:?}");
    assert_eq!(done[1], (13, long_len));
    // Both slots are freed (just after their final events).
    let t = Instant::now();
    while engine.stats().running != 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "slots not freed");
        std::thread::sleep(Duration::from_millis(5));
    }
}
