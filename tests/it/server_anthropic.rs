//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`)
//! through a real HTTP client against the tiny Falcon Mamba fixture: the
//! answer is the chat completion's for the same conversation, usage splits
//! the prompt into read and cached tokens, the stream has Anthropic's event
//! types in order, sampling fields are applied, every unimplemented field is
//! refused in Anthropic's error shape, and `/metrics` counts requests per API.
//! The official `anthropic` client runs in tests/solo/server_anthropic.rs.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::server::{self, ServerConfig, ServerHandle};
use mamba_gguf::Model;
use serde_json::{json, Value};

fn start(f: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let p = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let model = Arc::new(Model::load(p).expect("fixture model loads"));
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

fn post_raw(h: &ServerHandle, path: &str, body: String) -> (u16, Value) {
    let r = client()
        .post(format!("http://{}{path}", h.addr))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON answer"))
}

fn post(h: &ServerHandle, path: &str, body: &Value) -> (u16, Value) {
    post_raw(h, path, body.to_string())
}

fn ok(h: &ServerHandle, body: &Value) -> Value {
    let (status, v) = post(h, "/v1/messages", body);
    assert_eq!(status, 200, "{v}");
    v
}

fn text(v: &Value) -> String {
    let c = v["content"].as_array().expect("content");
    assert_eq!(c.len(), 1, "{v}");
    assert_eq!(c[0]["type"], "text", "{v}");
    c[0]["text"].as_str().expect("text").to_string()
}

fn count(h: &ServerHandle, body: &Value) -> u64 {
    let (status, v) = post(h, "/v1/messages/count_tokens", body);
    assert_eq!(status, 200, "{v}");
    v["input_tokens"].as_u64().expect("input_tokens")
}

/// The whole prompt a usage object reports (read + from the cache).
fn prompt_total(u: &Value) -> u64 {
    u["input_tokens"].as_u64().expect("input_tokens")
        + u["cache_read_input_tokens"].as_u64().expect("cache reads")
}

#[test]
fn messages_answer_as_chat_completions_and_report_cache_reads() {
    let h = start(|_| {});
    let user = json!([{"role": "user", "content": "Tell me about the falcon."}]);
    let base = json!({"model": "m", "system": "Be brief.", "messages": user, "max_tokens": 12, "temperature": 0});
    let prompt_only = json!({"model": "m", "system": "Be brief.", "messages": user});
    let n_prompt = count(&h, &prompt_only);
    let a = ok(&h, &base);
    assert_eq!(a["type"], "message", "{a}");
    assert_eq!(a["role"], "assistant", "{a}");
    assert_eq!(a["model"], "m", "{a}");
    assert!(
        a["id"].as_str().is_some_and(|i| i.starts_with("msg_")),
        "{a}"
    );
    let out = a["usage"]["output_tokens"].as_u64().expect("output_tokens");
    let reason = if out == 12 { "max_tokens" } else { "end_turn" };
    assert_eq!(a["stop_reason"], reason, "{a}");
    assert_eq!(a["stop_sequence"], Value::Null, "{a}");
    // A fresh prompt: all read, none cached; count_tokens says the same.
    assert_eq!(a["usage"]["cache_read_input_tokens"], 0, "{a}");
    assert_eq!(a["usage"]["input_tokens"].as_u64(), Some(n_prompt), "{a}");
    let reply = text(&a);
    // The chat completion of the same conversation: same text, same prompt.
    let (status, c) = post(
        &h,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Tell me about the falcon."}],
                "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["choices"][0]["message"]["content"], reply.as_str());
    assert_eq!(c["usage"]["prompt_tokens"].as_u64(), Some(n_prompt));
    // System as text blocks (joined by a blank line, cache_control taken).
    let blocks = json!([{"type": "text", "text": "Be"},
                        {"type": "text", "text": "brief.", "cache_control": {"type": "ephemeral"}}]);
    let mut b = base.clone();
    b["system"] = blocks.clone();
    let mut s = base.clone();
    s["system"] = json!("Be\n\nbrief.");
    assert_eq!(text(&ok(&h, &b)), text(&ok(&h, &s)));
    let mut bc = prompt_only.clone();
    bc["system"] = blocks;
    let mut sc = prompt_only.clone();
    sc["system"] = json!("Be\n\nbrief.");
    assert_eq!(count(&h, &bc), count(&h, &sc));
    // The next turn starts from the state the first left: the whole first
    // exchange is read from the cache.
    let mut two = base.clone();
    two["messages"] = json!([
        {"role": "user", "content": "Tell me about the falcon."},
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
        {"role": "user", "content": "And the sea?"},
    ]);
    let t2 = ok(&h, &two);
    let cached = t2["usage"]["cache_read_input_tokens"].as_u64().unwrap();
    assert_eq!(cached, n_prompt + out, "{t2}");
    assert!(t2["usage"]["input_tokens"].as_u64().unwrap() > 0, "{t2}");
    let mut two_count = two.clone();
    for k in ["max_tokens", "temperature"] {
        two_count.as_object_mut().unwrap().remove(k);
    }
    // count_tokens counts a fresh read of the prompt: what a server without
    // the cache reads (with it, the reply's part is the generated tokens,
    // which may not be how its text tokenizes afresh).
    let fresh = start(|c| c.cache_mb = 0);
    let f2 = ok(&fresh, &two);
    assert_eq!(f2["usage"]["cache_read_input_tokens"], 0, "{f2}");
    assert_eq!(count(&h, &two_count), prompt_total(&f2["usage"]));
    // A final assistant message is a prefill the reply continues: its text
    // is in the prompt.
    let mut pre = prompt_only.clone();
    pre["messages"] = json!([{"role": "user", "content": "Tell me about the falcon."},
                             {"role": "assistant", "content": "The falcon"}]);
    assert!(count(&h, &pre) > n_prompt);
    pre["max_tokens"] = json!(4);
    let p = ok(&h, &pre);
    assert_eq!(
        prompt_total(&p["usage"]),
        count(&h, &{
            let mut c = pre.clone();
            c.as_object_mut().unwrap().remove("max_tokens");
            c
        })
    );
    // A stop sequence from inside the greedy reply cuts it there.
    let chars: Vec<char> = reply.chars().collect();
    assert!(chars.len() >= 6, "reply too short to cut: {reply:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut st = base.clone();
    st["stop_sequences"] = json!(["NEVER-IN-THE-TEXT", stop]);
    let cut = ok(&h, &st);
    assert_eq!(cut["stop_reason"], "stop_sequence", "{cut}");
    assert_eq!(cut["stop_sequence"], stop.as_str(), "{cut}");
    let at = reply.find(stop.as_str()).unwrap();
    assert_eq!(text(&cut), reply[..at], "{cut}");
}

/// temperature, top_k and top_p are read from the body and applied:
/// temperature 0 is the greedy answer every time; temperature 1 differs
/// between requests (fresh seeds) unless top_k 1 or a tiny top_p leaves the
/// greedy token only.
#[test]
fn sampling_fields_take_effect() {
    let h = start(|_| {});
    let base = json!({"messages": [{"role": "user", "content": "Once upon a time"}],
                      "max_tokens": 10});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        text(&ok(&h, &b))
    };
    let greedy = with(json!({"temperature": 0}));
    assert_eq!(with(json!({"temperature": 0})), greedy);
    assert_eq!(with(json!({"temperature": 1, "top_k": 1})), greedy);
    assert_eq!(with(json!({"temperature": 1, "top_p": 0.000001})), greedy);
    let hot: Vec<String> = (0..6).map(|_| with(json!({"temperature": 1}))).collect();
    let mut distinct = hot.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "temperature 1, six times one text: {hot:?}"
    );
}

/// The stream: message_start (with the prompt's usage), content_block_start,
/// ping, text deltas, content_block_stop, message_delta (stop reason and the
/// final usage), message_stop; each event's name is its data's type, and
/// the deltas add up to the non-streamed answer.
#[test]
fn messages_stream_has_anthropics_events_in_order() {
    let h = start(|c| c.cache_mb = 0);
    let body = json!({"system": [{"type": "text", "text": "Be brief."}],
                      "messages": [{"role": "user", "content": "Hello!"}],
                      "max_tokens": 9, "temperature": 0});
    let plain = ok(&h, &body);
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = client()
        .post(format!("http://{}/v1/messages", h.addr))
        .json(&sb)
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = None;
    for line in BufReader::new(r).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).expect("data is JSON");
            let n = name.take().expect("every data has its event line");
            assert_eq!(v["type"], n.as_str(), "{v}");
            events.push((n, v));
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let k = names.len();
    assert!(k >= 6, "{names:?}");
    assert_eq!(
        names[..3],
        ["message_start", "content_block_start", "ping"],
        "{names:?}"
    );
    assert_eq!(
        names[k - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    assert!(names[3..k - 3].iter().all(|n| *n == "content_block_delta"));
    let start = &events[0].1["message"];
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["output_tokens"], 0);
    assert_eq!(
        start["usage"]["input_tokens"],
        plain["usage"]["input_tokens"]
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let mut streamed = String::new();
    for (_, v) in &events[3..k - 3] {
        assert_eq!(v["index"], 0);
        assert_eq!(v["delta"]["type"], "text_delta");
        streamed.push_str(v["delta"]["text"].as_str().expect("delta text"));
    }
    assert_eq!(streamed, text(&plain));
    let delta = &events[k - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], plain["stop_reason"]);
    assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
    assert_eq!(delta["usage"], plain["usage"]);
}

/// Every refusal is Anthropic's error shape with a 4xx status and a message
/// naming the field: required fields, bad values, and each field or
/// content block this server does not implement (never silently ignored).
/// Neutral values of those (no tools, thinking disabled) are accepted.
/// (Tool use itself: `tool_use_follows_the_schemas`.)
#[test]
fn errors_have_anthropics_shape_and_name_the_field() {
    let h = start(|c| c.max_body = 64 << 10);
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    let with = |extra: Value| {
        let mut b = json!({"model": "m", "messages": msgs, "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b.to_string()
    };
    let img = json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]);
    let tool_use = json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": 42}]}]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("/v1/messages", "{not json".into(), "JSON"),
        ("/v1/messages", "[1]".into(), "object"),
        (
            "/v1/messages",
            with(json!({"max_tokens": null})),
            "max_tokens",
        ),
        ("/v1/messages", with(json!({"max_tokens": 0})), "max_tokens"),
        (
            "/v1/messages",
            with(json!({"max_tokens": 100000})),
            "max_tokens",
        ),
        ("/v1/messages", with(json!({"messages": null})), "messages"),
        ("/v1/messages", with(json!({"messages": []})), "messages"),
        (
            "/v1/messages",
            with(json!({"messages": [{"role": "system", "content": "x"}]})),
            "messages[0].role",
        ),
        (
            "/v1/messages",
            with(json!({"messages": [{"role": "user"}]})),
            "messages[0].content",
        ),
        ("/v1/messages", with(json!({"messages": img})), "image"),
        ("/v1/messages", with(json!({"messages": tool_use})), "input"),
        (
            "/v1/messages",
            with(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            "server tools",
        ),
        (
            "/v1/messages",
            with(json!({"tool_choice": {"type": "any"}})),
            "tool_choice",
        ),
        (
            "/v1/messages",
            with(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})),
            "thinking",
        ),
        (
            "/v1/messages",
            with(json!({"temperature": 1.5})),
            "temperature",
        ),
        ("/v1/messages", with(json!({"top_p": "high"})), "top_p"),
        ("/v1/messages", with(json!({"top_k": -1})), "top_k"),
        (
            "/v1/messages",
            with(json!({"stop_sequences": "x"})),
            "stop_sequences",
        ),
        ("/v1/messages", with(json!({"stream": "yes"})), "stream"),
        ("/v1/messages", with(json!({"frobnicate": 1})), "frobnicate"),
        ("/v1/messages", with(json!({"system": 7})), "system"),
        (
            "/v1/messages",
            with(json!({"system": [{"type": "text", "text": "x", "citations": []}]})),
            "system[0].citations",
        ),
        (
            "/v1/messages/count_tokens",
            json!({"messages": msgs, "max_tokens": 3}).to_string(),
            "max_tokens",
        ),
        (
            "/v1/messages/count_tokens",
            json!({"messages": msgs, "tools": [{"name": "f"}]}).to_string(),
            "tools",
        ),
        (
            "/v1/messages/count_tokens",
            json!({"messages": []}).to_string(),
            "messages",
        ),
    ];
    for (path, body, names) in &cases {
        let (status, v) = post_raw(&h, path, body.clone());
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["type"], "error", "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}: {v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(names), "{body}: {msg:?} does not name {names}");
    }
    // Too large a body: 413, request_too_large.
    let big = with(json!({"system": "x".repeat(70 << 10)}));
    let (status, v) = post_raw(&h, "/v1/messages", big);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["type"], "request_too_large", "{v}");
    // Neutral values of unimplemented features are accepted.
    let (status, v) = post_raw(
        &h,
        "/v1/messages",
        with(json!({"tools": [], "thinking": {"type": "disabled"},
                    "tool_choice": {"type": "auto"}, "metadata": {"user_id": "u1"}})),
    );
    assert_eq!(status, 200, "{v}");
    // The server still answers.
    let (status, v) = post_raw(&h, "/v1/messages", with(json!({})));
    assert_eq!(status, 200, "{v}");
}

/// With `--api-key`, Anthropic's clients authenticate with `x-api-key`
/// (the Bearer header works too); a wrong key is a 401 in Anthropic's shape.
#[test]
fn api_key_by_x_api_key_and_anthropic_401() {
    let h = start(|c| c.api_key = Some("sekret-1".into()));
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let send = |header: Option<(&str, &str)>| {
        let mut r = client()
            .post(format!("http://{}/v1/messages", h.addr))
            .json(&body);
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        let r = r.send().expect("request");
        (r.status().as_u16(), r.json::<Value>().expect("JSON"))
    };
    for bad in [
        None,
        Some(("x-api-key", "sekret-2")),
        Some(("x-api-key", "")),
    ] {
        let (status, v) = send(bad);
        assert_eq!(status, 401, "{bad:?}: {v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    }
    assert_eq!(send(Some(("x-api-key", "sekret-1"))).0, 200);
    assert_eq!(send(Some(("authorization", "Bearer sekret-1"))).0, 200);
}

/// `/metrics` counts the requests each API received, refused ones included.
#[test]
fn metrics_count_requests_per_api() {
    let h = start(|_| {});
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    let calls = [
        ("/v1/messages", json!({"messages": msgs, "max_tokens": 2})),
        ("/v1/messages", json!({"messages": msgs})),
        ("/v1/messages/count_tokens", json!({"messages": msgs})),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 2}),
        ),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 2})),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 2})),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 2})),
        (
            "/api/generate",
            json!({"prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
        ),
        (
            "/api/chat",
            json!({"messages": msgs, "stream": false, "options": {"num_predict": 2}}),
        ),
    ];
    for (path, body) in &calls {
        post(&h, path, body);
    }
    let text = client()
        .get(format!("http://{}/metrics", h.addr))
        .send()
        .expect("request")
        .text()
        .expect("text");
    let value = |api: &str| -> u64 {
        let name = format!("mamba_gguf_api_requests_total{{api=\"{api}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .unwrap_or_else(|| panic!("{api} missing:\n{text}"))
            .parse()
            .expect("number")
    };
    assert_eq!(value("anthropic_messages"), 2);
    assert_eq!(value("anthropic_count_tokens"), 1);
    assert_eq!(value("openai_chat"), 1);
    assert_eq!(value("openai_completions"), 3);
    assert_eq!(value("ollama_generate"), 1);
    assert_eq!(value("ollama_chat"), 1);
}

/// Tool use on /v1/messages: `tool_choice` any / tool / none; `tool_use`
/// blocks whose input follows the tool's `input_schema` (stop_reason
/// tool_use); the stream's `tool_use` blocks and `input_json_delta`s equal
/// the non-streamed blocks; `tool_use` and `tool_result` blocks go back into
/// the prompt as the chat completions API's tool calls and tool messages do
/// (tools.rs's generic format: the same prompt, token for token).
#[test]
fn tool_use_follows_the_schemas() {
    let h = start(|_| {});
    let tools = json!([{"name": "add", "description": "Adds two integers.", "input_schema": {
        "type": "object", "properties": {
            "a": {"type": "integer", "minimum": -99, "maximum": 99},
            "b": {"type": "integer", "minimum": -99, "maximum": 99}},
        "required": ["a", "b"], "additionalProperties": false}}]);
    let body = |choice: Value| {
        json!({"messages": [{"role": "user", "content": "2 + 3?"}], "tools": tools,
               "tool_choice": choice, "max_tokens": 100, "temperature": 0})
    };
    let check = |b: &Value| {
        assert_eq!(b["type"], "tool_use", "{b}");
        assert_eq!(b["name"], "add", "{b}");
        assert!(b["id"].as_str().is_some_and(|s| !s.is_empty()), "{b}");
        let o = b["input"].as_object().expect("input");
        assert_eq!(o.len(), 2, "{b}");
        for k in ["a", "b"] {
            assert!(
                o[k].as_i64().is_some_and(|v| (-99..=99).contains(&v)),
                "{b}"
            );
        }
    };
    for choice in [
        json!({"type": "any"}),
        json!({"type": "tool", "name": "add"}),
    ] {
        let v = ok(&h, &body(choice));
        assert_eq!(v["stop_reason"], "tool_use", "{v}");
        let blocks = v["content"].as_array().expect("content");
        assert!(!blocks.is_empty(), "{v}");
        blocks.iter().for_each(check);
    }
    let v = ok(
        &h,
        &body(json!({"type": "any", "disable_parallel_tool_use": true})),
    );
    assert_eq!(v["content"].as_array().map(Vec::len), Some(1), "{v}");
    let none = ok(&h, &body(json!({"type": "none"})));
    assert_eq!(none["content"][0]["type"], "text", "{none}");
    assert!(!text(&none).starts_with("<tool_call>"));

    // Streamed: the same blocks, built from the events.
    let plain = ok(&h, &body(json!({"type": "any"})));
    let mut sb = body(json!({"type": "any"}));
    sb["stream"] = json!(true);
    let r = client()
        .post(format!("http://{}/v1/messages", h.addr))
        .json(&sb)
        .send()
        .expect("request");
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut reason = Value::Null;
    for line in BufReader::new(r).lines() {
        let line = line.expect("line");
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(d).expect("JSON");
        match v["type"].as_str() {
            Some("content_block_start") => {
                assert_eq!(v["index"], blocks.len());
                blocks.push(v["content_block"].clone());
                partial.push(String::new());
            }
            Some("content_block_delta") => {
                assert_eq!(v["delta"]["type"], "input_json_delta", "{v}");
                let i = v["index"].as_u64().expect("index") as usize;
                partial[i].push_str(v["delta"]["partial_json"].as_str().expect("partial"));
            }
            Some("message_delta") => reason = v["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    for (b, p) in blocks.iter_mut().zip(&partial) {
        b["input"] = serde_json::from_str(p).expect("input JSON");
    }
    assert_eq!(reason, "tool_use");
    // The same blocks; ids are per request.
    let ids_out = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .map(|b| {
                let mut b = b.clone();
                b.as_object_mut().map(|o| o.remove("id"));
                b
            })
            .collect()
    };
    let plain_blocks = plain["content"].as_array().expect("content");
    assert_eq!(ids_out(&blocks), ids_out(plain_blocks));

    // A round trip reads as the chat completions API's: the same prompt.
    let anthropic = json!({"max_tokens": 1, "system": "Be brief.", "messages": [
        {"role": "user", "content": "2 + 3?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2, "b": 3}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "5"},
            {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "?"}],
             "is_error": true}]},
    ]});
    let openai = json!({"max_tokens": 1, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 3?"},
        {"role": "assistant", "content": "Adding.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "5"},
        {"role": "tool", "tool_call_id": "t2", "content": "error: ?"},
    ]});
    let a = ok(&h, &anthropic);
    let (st, o) = post(&h, "/v1/chat/completions", &openai);
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        prompt_total(&a["usage"]),
        o["usage"]["prompt_tokens"].as_u64().expect("n")
    );
    assert_eq!(
        count(
            &h,
            &anthropic
                .as_object()
                .map(|m| {
                    let mut m = m.clone();
                    m.remove("max_tokens");
                    Value::Object(m)
                })
                .expect("object")
        ),
        o["usage"]["prompt_tokens"].as_u64().expect("n")
    );
}
