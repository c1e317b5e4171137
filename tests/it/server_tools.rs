//! Tool calls on `/v1/chat/completions` through a real HTTP client, against
//! the tiny Falcon Mamba fixture (random weights: whatever it says, the
//! grammar holds it to text or valid calls). Each tool_choice mode; the
//! calls' arguments valid under each function's schema; streamed deltas
//! equal to the non-streamed calls (the arguments in pieces as they are
//! generated); the documented generic format in which calls and tool
//! results go back into the prompt (checked token for token against the
//! chat template); refusals naming the field. The official `openai`
//! client's round trips (chat completions and the Responses API) are
//! tests/solo's (scripts/openai_client/tools.py).

use std::sync::Arc;
use std::time::Duration;

use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::chat_template::{ChatTemplate, Message};
use mamba_gguf::server::{self, ServerConfig, ServerHandle};
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::Model;
use serde_json::{json, Value};

fn post(h: &ServerHandle, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(body)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON answer"))
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
         "parameters": {"type": "object", "properties": {
             "city": {"type": "string", "maxLength": 12},
             "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "required": ["a", "b"], "additionalProperties": false}}},
    ])
}

/// The call's arguments, checked against its function's schema.
fn check_call(c: &Value) -> (String, Value) {
    assert_eq!(c["type"], "function", "{c}");
    assert!(c["id"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    let name = c["function"]["name"].as_str().expect("name").to_string();
    let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().expect("string"))
        .expect("arguments are JSON");
    let o = args.as_object().expect("an object");
    match name.as_str() {
        "get_weather" => {
            assert_eq!(o.len(), 2, "{args}");
            assert!(o["city"].as_str().is_some_and(|s| s.chars().count() <= 12));
            assert!(["celsius", "fahrenheit"].contains(&o["unit"].as_str().unwrap_or("")));
        }
        "add" => {
            assert_eq!(o.len(), 2, "{args}");
            for k in ["a", "b"] {
                assert!(
                    o[k].as_i64().is_some_and(|v| (-1000..=1000).contains(&v)),
                    "{args}"
                );
            }
        }
        _ => panic!("a call to an unknown function: {c}"),
    }
    (name, args)
}

#[test]
fn tool_calls_follow_the_schemas_and_go_back_into_the_prompt() {
    let model = Arc::new(
        Model::load(llamacpp_gguf("falcon-mamba-tiny-f32.gguf")).expect("fixture model loads"),
    );
    let tok = Tokenizer::from_model_file(model.gguf()).expect("tokenizer");
    let tmpl = ChatTemplate::from_tokenizer(&tok).expect("template");
    let h = server::spawn(
        model,
        ServerConfig {
            port: 0,
            timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .expect("server starts");
    let user = json!([{"role": "user", "content": "What is the weather in Paris, and 2 + 3?"}]);
    let req = |choice: Value, extra: Value| {
        let mut b = json!({"messages": user, "tools": tools(), "tool_choice": choice,
                           "temperature": 0, "max_tokens": 120});
        for (k, v) in extra.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    };

    // required: calls only, each valid.
    let (st, r) = post(&h, &req(json!("required"), json!({})));
    assert_eq!(st, 200, "{r}");
    let c = &r["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{r}");
    assert!(c["message"]["content"].is_null(), "{r}");
    let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
    assert!(!calls.is_empty());
    calls.iter().for_each(|c| {
        check_call(c);
    });

    // Streamed: the same calls, as deltas (a name, then its arguments).
    let body = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(&req(json!("required"), json!({"stream": true})))
        .send()
        .and_then(|r| r.text())
        .expect("stream");
    let mut streamed: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut pieces = 0;
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(line).expect("chunk");
        for ch in v["choices"].as_array().into_iter().flatten() {
            assert!(!ch["delta"].get("content").is_some_and(|c| c != ""), "{ch}");
            for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = d["index"].as_u64().expect("index") as usize;
                if i == streamed.len() {
                    streamed.push(json!({"id": d["id"], "type": d["type"],
                        "function": {"name": d["function"]["name"], "arguments": ""}}));
                }
                let args = streamed[i]["function"]["arguments"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
                    + d["function"]["arguments"].as_str().unwrap_or("");
                pieces += usize::from(d["function"]["arguments"] != "");
                streamed[i]["function"]["arguments"] = json!(args);
            }
            if !ch["finish_reason"].is_null() {
                finish = ch["finish_reason"].clone();
            }
        }
    }
    assert_eq!(finish, "tool_calls");
    let strip = |v: &[Value]| -> Vec<Value> { v.iter().map(|c| c["function"].clone()).collect() };
    assert_eq!(strip(&streamed), strip(calls));
    // The arguments arrive as they are generated, not once per call.
    assert!(pieces >= 3 * calls.len(), "{pieces} pieces for {calls:?}");

    // A named function: calls to it alone, one with parallel_tool_calls false.
    let named = json!({"type": "function", "function": {"name": "add"}});
    let (_, r) = post(&h, &req(named, json!({"parallel_tool_calls": false})));
    let calls1 = r["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("calls");
    assert_eq!(calls1.len(), 1, "{r}");
    assert_eq!(check_call(&calls1[0]).0, "add");

    // none: text that is not a call.
    let (_, r) = post(&h, &req(json!("none"), json!({"max_tokens": 12})));
    let m = &r["choices"][0]["message"];
    assert!(m.get("tool_calls").is_none(), "{r}");
    assert!(!m["content"]
        .as_str()
        .expect("text")
        .starts_with("<tool_call>"));

    // The generic format: a call and its result go back into the prompt as
    // the documented text, through the model's chat template.
    let history = json!([
        {"role": "user", "content": "2 + 3?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "5"},
        {"role": "tool", "tool_call_id": "call_x", "content": "?"},
    ]);
    let (st, r) = post(&h, &json!({"messages": history, "max_tokens": 1}));
    assert_eq!(st, 200, "{r}");
    let expect = [
        Message::new("user", "2 + 3?"),
        Message::new(
            "assistant",
            "<tool_call>{\"name\":\"add\",\"arguments\":{\"a\":2,\"b\":3}}</tool_call>",
        ),
        Message::new(
            "user",
            "<tool_result id=\"call_9\" name=\"add\">\n5\n</tool_result>\n\
             <tool_result id=\"call_x\">\n?\n</tool_result>",
        ),
    ];
    let text = tmpl.render(&expect, true).expect("renders");
    let ids = tok.encode(&text, tok.add_bos()).expect("encodes");
    assert_eq!(r["usage"]["prompt_tokens"], ids.len(), "{text}");

    // Refused, naming the field.
    for (body, param) in [
        (
            req(
                json!({"type": "function", "function": {"name": "rm"}}),
                json!({}),
            ),
            "tool_choice",
        ),
        (req(json!("sometimes"), json!({})), "tool_choice"),
        (
            req(
                json!("auto"),
                json!({"response_format": {"type": "json_object"}}),
            ),
            "response_format",
        ),
        (req(json!("auto"), json!({"logprobs": true})), "logprobs"),
        (
            req(json!("auto"), json!({"tools": [{"type": "retrieval"}]})),
            "tools[0]",
        ),
        (
            json!({"messages": user, "tool_choice": "required"}),
            "tool_choice",
        ),
        (json!({"messages": user, "functions": []}), "functions"),
        (
            json!({"messages": [{"role": "tool", "content": "5"}]}),
            "messages[0].tool_call_id",
        ),
    ] {
        let (st, v) = post(&h, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
}
