//! The server under abuse, on loopback, with bounded loops: 200 idle
//! connections held open, 1,000 malformed requests (bad JSON, wrong types,
//! 10 MB bodies, huge max_tokens, deeply nested JSON, invalid UTF-8, header
//! floods), then 64 concurrent streams whose clients hang up at random
//! points. Afterwards `/health` answers, a normal request gets the same
//! answer as before the abuse, no slot or queue entry is left taken, and the
//! process's resident memory grew by less than a stated bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::server::{self, ServerConfig, ServerHandle};
use mamba_gguf::Model;
use serde_json::{json, Value};

/// Resident memory may grow by this much over the whole abuse (the model is
/// 37 MB; buffers for 200 idle sockets, 64 streams and the prompt cache).
const RSS_GROWTH_BOUND_MIB: u64 = 200;

fn start() -> ServerHandle {
    let p = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let model = Arc::new(Model::load(p).expect("model"));
    server::spawn(
        model,
        ServerConfig {
            port: 0,
            parallel: 4,
            queue: 64,
            timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .expect("server starts")
}

/// Sends raw bytes on a fresh connection and returns the status code of the
/// answer (0 when the server closed the connection without one).
fn raw(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(bytes).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post_raw(addr: SocketAddr, path: &str, body: &[u8]) -> u16 {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req)
}

fn health(addr: SocketAddr) -> Value {
    reqwest::blocking::get(format!("http://{addr}/health"))
        .expect("health")
        .json()
        .expect("JSON")
}

fn greedy(addr: SocketAddr) -> Value {
    let v: Value = reqwest::blocking::Client::new()
        .post(format!("http://{addr}/v1/completions"))
        .json(&json!({"prompt": "The falcon", "max_tokens": 8, "temperature": 0}))
        .send()
        .expect("request")
        .json()
        .expect("JSON");
    v["choices"][0]["text"].clone()
}

/// A small deterministic generator (no dependency on the rand crate's API).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

pub fn the_server_survives_abuse() {
    let h = start();
    let addr = h.addr;
    let before = greedy(addr);
    let rss0 = mamba_gguf::procmem::rss_kib().unwrap_or(0);

    // 1. 200 idle connections held open, half of them mid-header.
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr).expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le");
        }
        idle.push(s);
    }
    // The server still answers while they hang.
    assert_eq!(greedy(addr), before);

    // 2. 1,000 malformed requests.
    let big = vec![b'a'; 10 << 20];
    let mut nested = String::new();
    for _ in 0..5000 {
        nested.push('[');
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/completions", b"{not json".to_vec()),
        ("/v1/completions", b"[1, 2, 3]".to_vec()),
        ("/v1/completions", br#"{"prompt": 5}"#.to_vec()),
        (
            "/v1/completions",
            br#"{"prompt": "x", "max_tokens": 99999999999}"#.to_vec(),
        ),
        (
            "/v1/completions",
            br#"{"prompt": "x", "temperature": "hot"}"#.to_vec(),
        ),
        ("/v1/chat/completions", br#"{"messages": "hi"}"#.to_vec()),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": 1}]}"#.to_vec(),
        ),
        ("/v1/completions", b"{\"prompt\": \"\xff\xfe\"}".to_vec()),
        ("/v1/completions", nested.clone().into_bytes()),
        (
            "/api/generate",
            br#"{"prompt": "x", "options": {"num_predict": "many"}}"#.to_vec(),
        ),
        ("/tokenize", br#"{"content": null}"#.to_vec()),
        ("/v1/completions", big.clone()),
    ];
    let mut answered = [0usize; 6]; // 2xx, 400, 413, 431, other 4xx/5xx, closed
    let mut rng = Lcg(7);
    for i in 0..1000 {
        let status = if i % 50 == 49 {
            // A header flood: 500 headers.
            let mut req = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
            for k in 0..500 {
                req.extend_from_slice(format!("X-Flood-{k}: {}\r\n", "v".repeat(64)).as_bytes());
            }
            req.extend_from_slice(b"Connection: close\r\n\r\n");
            raw(addr, &req)
        } else {
            let (path, body) = &cases[rng.next() as usize % cases.len()];
            // 10 MB bodies are costly to send; one in ten of their draws.
            if body.len() > 1 << 20 && i % 10 != 0 {
                continue;
            }
            post_raw(addr, path, body)
        };
        let k = match status {
            200..=299 => 0,
            400 => 1,
            413 => 2,
            431 => 3,
            0 => 5,
            _ => 4,
        };
        answered[k] += 1;
        assert!(
            !(200..=299).contains(&status),
            "a malformed request was accepted"
        );
        assert!(status != 500, "a malformed request crashed a handler");
    }
    eprintln!(
        "malformed: 400 {} / 413 {} / 431 {} / other {} / closed {}",
        answered[1], answered[2], answered[3], answered[4], answered[5]
    );
    assert!(answered[1] > 500, "{answered:?}");

    // 3. 64 concurrent streams, clients hanging up at random points.
    let mut threads = Vec::new();
    for j in 0..64u64 {
        threads.push(std::thread::spawn(move || {
            let mut rng = Lcg(1000 + j);
            let hang_after = rng.next() % 12;
            let r = reqwest::blocking::Client::new()
                .post(format!("http://{addr}/v1/completions"))
                .json(
                    &json!({"prompt": format!("Stream {j} says"), "max_tokens": 16,
                              "stream": true, "ignore_eos": true, "seed": j}),
                )
                .send();
            let Ok(mut r) = r else { return };
            let mut buf = [0u8; 64];
            for _ in 0..hang_after {
                if matches!(r.read(&mut buf), Ok(0) | Err(_)) {
                    break;
                }
            }
            // Dropping `r` closes the connection mid-stream.
        }));
    }
    for t in threads {
        t.join().expect("client thread");
    }
    drop(idle);

    // Afterwards: every slot and queue entry given back, the same answer.
    let t = Instant::now();
    loop {
        let hl = health(addr);
        if hl["running"] == 0 && hl["waiting"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "slots not freed: {hl}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(health(addr)["status"], "ok");
    assert_eq!(greedy(addr), before);
    let rss1 = mamba_gguf::procmem::rss_kib().unwrap_or(0);
    let growth = rss1.saturating_sub(rss0) / 1024;
    eprintln!("RSS {} -> {} MiB (+{growth} MiB)", rss0 / 1024, rss1 / 1024);
    assert!(growth < RSS_GROWTH_BOUND_MIB, "RSS grew by {growth} MiB");
    drop(h);
}
