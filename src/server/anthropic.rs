//! Anthropic's Messages API, what Claude Code, IDE plug-ins and the official
//! `anthropic` clients speak: `POST /v1/messages` (JSON, or Anthropic's
//! server-sent events: `message_start`, `content_block_start`, `ping`,
//! `content_block_delta` with `text_delta`s, `content_block_stop`,
//! `message_delta` with the stop reason and usage, `message_stop`) and
//! `POST /v1/messages/count_tokens`.
//!
//! The prompt goes through the model's chat template and the scheduler as a
//! chat completion's does (`system` as the first message, the turns after
//! it; a final assistant message is a prefill that the reply continues), so
//! the prompt cache serves it too: `usage.cache_read_input_tokens` is the
//! prompt's prefix whose state came from the cache, and `input_tokens` the
//! rest (Anthropic's split: the prompt is their sum). `temperature`,
//! `top_p` and `top_k` are read from the body (as the current client sends
//! them, through `extra_body`) and applied. Tools (`tools` with an
//! `input_schema`, `tool_choice` auto, any, tool or none,
//! `disable_parallel_tool_use`) work as on `/v1/chat/completions`, in
//! tools.rs's generic format and under its grammar: `tool_use` content
//! blocks (stop_reason `tool_use`; streamed as `input_json_delta`s), and
//! `tool_use` / `tool_result` blocks in the history go back into the prompt
//! as that format has them (a result with `is_error` starts with
//! `error: `). As on the other endpoints, every field is applied or refused
//! with a 400 that names it (server tools, images, extended thinking, ...):
//! accepted without effect are only `metadata` and `service_tier`
//! (bookkeeping of Anthropic's side), `cache_control` (the cache keeps a
//! state at every message's end anyway), and `thinking` disabled. Errors are Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`, with 4xx statuses for
//! the request's faults (`x-api-key` is taken as the `--api-key`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::api::{self, ApiError};
use super::engine::{Event, GenParams, Job, Prompt, Usage};
use super::store::Namespace;
use super::tools::{self, Choice, Function, Tools};
use super::AppState;
use crate::chat_template::Message;
use crate::sampler::SamplerConfig;

/// Anthropic's error type for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// Anthropic's error body.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// An error answer in Anthropic's shape.
pub(crate) fn error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error_body(e.status, &e.message))).into_response()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad("", message)
}

/// Why a field of Anthropic's API is refused (None: it is accepted).
fn refused(key: &str, v: &Value) -> Option<&'static str> {
    match key {
        // Accepted: applied, or bookkeeping of Anthropic's side.
        "model" | "messages" | "system" | "max_tokens" | "stop_sequences" | "stream"
        | "temperature" | "top_p" | "top_k" | "metadata" | "service_tier" => None,
        // Checked by tools_of.
        "tools" | "tool_choice" => None,
        "thinking" => match v.get("type").and_then(Value::as_str) {
            _ if v.is_null() => None,
            Some("disabled") => None,
            _ => Some("extended thinking is not implemented (the model has no thinking mode)"),
        },
        "output_config" | "output_format" => Some(
            "structured outputs are not implemented on /v1/messages (use response_format on \
             /v1/chat/completions)",
        ),
        "container" | "mcp_servers" | "context_management" => {
            Some("server-side tools are not implemented by this server")
        }
        _ => Some("this server does not implement it"),
    }
}

/// Refuses every top-level field that is not implemented.
fn check_fields(m: &Map<String, Value>, count_only: bool) -> Result<(), ApiError> {
    let mut fields: Vec<(&String, &Value)> = m.iter().collect();
    fields.sort_by_key(|(k, _)| k.as_str());
    for (k, v) in fields {
        let generation_only = matches!(
            k.as_str(),
            "max_tokens"
                | "stop_sequences"
                | "stream"
                | "temperature"
                | "top_p"
                | "top_k"
                | "metadata"
                | "service_tier"
        );
        let why = if count_only && generation_only {
            Some("count_tokens takes the prompt's fields only")
        } else {
            refused(k, v)
        };
        if let Some(why) = why {
            return Err(bad(format!("unsupported parameter '{k}': {why}")));
        }
    }
    Ok(())
}

/// `tools` and `tool_choice` (Anthropic's shapes) as tools.rs takes them:
/// None when the request gives no tools (then `tool_choice` may only be
/// `auto` or `none`). Server tools (a `type` other than `custom`) are
/// refused.
fn tools_of(m: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let mut functions: Vec<Function> = Vec::new();
    match api::opt(m, "tools") {
        None => {}
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let p = format!("tools[{i}]");
                let o = t
                    .as_object()
                    .ok_or_else(|| bad(format!("{p} must be an object")))?;
                match o.get("type").and_then(Value::as_str) {
                    None | Some("custom") => {}
                    Some(t) => {
                        return Err(bad(format!(
                            "{p}: unsupported tool type '{t}': server tools are not \
                             implemented by this server"
                        )))
                    }
                }
                let known = [
                    "type",
                    "name",
                    "description",
                    "input_schema",
                    "cache_control",
                ];
                if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
                    return Err(bad(format!(
                        "unsupported parameter '{p}.{k}': this server does not implement it"
                    )));
                }
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| tools::valid_name(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "{p}.name must be 1 to 64 letters, digits, '_' or '-'"
                        ))
                    })?;
                if functions.iter().any(|f| f.name == name) {
                    return Err(bad(format!("{p}: a second tool named '{name}'")));
                }
                let description = match o.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(d)) => Some(d.clone()),
                    Some(_) => return Err(bad(format!("{p}.description must be a string"))),
                };
                let parameters = match o.get("input_schema") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => {
                        return Err(bad(format!(
                            "{p}.input_schema: a JSON schema object is required"
                        )))
                    }
                };
                functions.push(Function {
                    name: name.to_string(),
                    description,
                    parameters,
                });
            }
        }
        Some(_) => return Err(bad("tools must be an array")),
    }
    let (choice, parallel) = match api::opt(m, "tool_choice") {
        None => (Choice::Auto, true),
        Some(Value::Object(o)) => {
            let known = ["type", "name", "disable_parallel_tool_use"];
            if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(bad(format!(
                    "unsupported parameter 'tool_choice.{k}': this server does not implement it"
                )));
            }
            let parallel = match o.get("disable_parallel_tool_use") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => !b,
                Some(_) => {
                    return Err(bad(
                        "tool_choice.disable_parallel_tool_use must be a boolean",
                    ))
                }
            };
            let choice = match o.get("type").and_then(Value::as_str) {
                Some("auto") => Choice::Auto,
                Some("any") => Choice::Required,
                Some("none") => Choice::None,
                Some("tool") => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("tool_choice of type 'tool' needs the tool's 'name'"))?;
                    if !functions.iter().any(|f| f.name == name) {
                        return Err(bad(format!(
                            "tool_choice names '{name}', which is not one of the tools"
                        )));
                    }
                    Choice::Named(name.to_string())
                }
                _ => {
                    return Err(bad(
                        "tool_choice.type must be 'auto', 'any', 'tool' or 'none'",
                    ))
                }
            };
            (choice, parallel)
        }
        Some(_) => return Err(bad("tool_choice must be an object")),
    };
    if functions.is_empty() {
        return match choice {
            Choice::Auto | Choice::None => Ok(None),
            _ => Err(bad(
                "tool_choice asks for a tool call, but the request gives no tools",
            )),
        };
    }
    Ok(Some(Tools {
        functions,
        choice,
        parallel,
    }))
}

/// A message's content as the model reads it: text blocks as they are,
/// `tool_use` and `tool_result` blocks in tools.rs's generic format, each
/// on lines of its own (`earlier`: the messages before it, for the name of
/// the tool a result answers).
fn message_text(v: &Value, p: &str, earlier: &[Value]) -> Result<String, ApiError> {
    let Value::Array(blocks) = v else {
        return Ok(texts_of(v, p)?.concat());
    };
    let mut out = String::new();
    let mut last_tool = false;
    for (j, b) in blocks.iter().enumerate() {
        let q = format!("{p}[{j}]");
        let kind = b.get("type").and_then(Value::as_str);
        let allowed: &[&str] = match kind {
            Some("tool_use") => &["type", "id", "name", "input", "cache_control"],
            Some("tool_result") => &[
                "type",
                "tool_use_id",
                "content",
                "is_error",
                "cache_control",
            ],
            _ => {
                // A text block (or a refusal, as for the system prompt).
                let t = texts_of(&Value::Array(vec![b.clone()]), &q)
                    .map_err(|e| bad(e.message.replace(&format!("{q}[0]"), &q)))?
                    .concat();
                if last_tool {
                    out.push('\n');
                }
                out.push_str(&t);
                last_tool = false;
                continue;
            }
        };
        if let Some(k) = b
            .as_object()
            .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
        {
            return Err(bad(format!(
                "unsupported parameter '{q}.{k}': this server does not implement it"
            )));
        }
        let field = |k: &str| -> Result<&str, ApiError> {
            b.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{q}.{k} must be a string")))
        };
        let text = if kind == Some("tool_use") {
            field("id")?;
            let input = b
                .get("input")
                .filter(|i| i.is_object())
                .ok_or_else(|| bad(format!("{q}.input must be an object")))?;
            tools::call_text(field("name")?, input)
        } else {
            let id = field("tool_use_id")?;
            let mut content = match b.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(c) => texts_of(c, &format!("{q}.content"))?.concat(),
            };
            match b.get("is_error") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) => content.insert_str(0, "error: "),
                Some(_) => return Err(bad(format!("{q}.is_error must be a boolean"))),
            }
            // The tool's name, from the tool_use block it answers.
            let name = earlier
                .iter()
                .rev()
                .filter_map(|m| m.get("content").and_then(Value::as_array))
                .flatten()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                .and_then(|c| c.get("name").and_then(Value::as_str));
            tools::result_text(id, name, &content)
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&text);
        last_tool = true;
    }
    Ok(out)
}

/// The texts of a content field (`param` names it in errors): a string, or
/// an array of text blocks (`cache_control` accepted on them: the prompt
/// cache keeps a state at every message's end anyway).
fn texts_of(v: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    let blocks = match v {
        Value::String(s) => return Ok(vec![s.clone()]),
        Value::Array(a) => a,
        _ => {
            return Err(bad(format!(
                "{param} must be a string or an array of content blocks"
            )))
        }
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{param}[{j}]");
        let obj = b
            .as_object()
            .ok_or_else(|| bad(format!("{p} must be a content block object")))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(t @ ("image" | "document")) => {
                return Err(bad(format!(
                    "{p}: unsupported content block type '{t}': this model reads text only"
                )))
            }
            Some(t @ ("tool_use" | "tool_result")) => {
                return Err(bad(format!(
                    "{p}: a '{t}' block belongs in a message's content"
                )))
            }
            Some(t @ "server_tool_use") => {
                return Err(bad(format!(
                    "{p}: unsupported content block type '{t}': server tools are not \
                     implemented by this server"
                )))
            }
            Some(t @ ("thinking" | "redacted_thinking")) => {
                return Err(bad(format!(
                    "{p}: unsupported content block type '{t}': extended thinking is not \
                     implemented"
                )))
            }
            Some(t) => {
                return Err(bad(format!("{p}: unsupported content block type '{t}'")));
            }
            None => return Err(bad(format!("{p}.type must be a string"))),
        }
        if let Some(k) = obj
            .keys()
            .find(|k| !["type", "text", "cache_control"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unsupported parameter '{p}.{k}': this server does not implement it"
            )));
        }
        let t = obj
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{p}.text must be a string")))?;
        parts.push(t.to_string());
    }
    Ok(parts)
}

/// The conversation: `system` (a string, or text blocks joined by blank
/// lines) first, then `messages` (roles `user` and `assistant`). A final
/// assistant message is returned apart: the reply continues it.
fn conversation(m: &Map<String, Value>) -> Result<(Vec<Message>, Option<String>), ApiError> {
    let mut out = Vec::new();
    if let Some(v) = api::opt(m, "system") {
        let s = texts_of(v, "system")?.join("\n\n");
        if !s.is_empty() {
            out.push(Message::new("system", s));
        }
    }
    let arr = match m.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(bad("messages: field required")),
        Some(_) => return Err(bad("messages must be an array")),
    };
    if arr.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    for (i, v) in arr.iter().enumerate() {
        let p = format!("messages[{i}]");
        let obj = v
            .as_object()
            .ok_or_else(|| bad(format!("{p} must be an object")))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["role", "content"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unsupported parameter '{p}.{k}': this server does not implement it"
            )));
        }
        let role = match obj.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            Some(r) => {
                return Err(bad(format!(
                    "{p}.role is '{r}': it must be 'user' or 'assistant' (give the system \
                     prompt as the top-level 'system')"
                )))
            }
            None => return Err(bad(format!("{p}.role: field required"))),
        };
        let content = match obj.get("content") {
            None | Some(Value::Null) => return Err(bad(format!("{p}.content: field required"))),
            Some(c) => message_text(c, &format!("{p}.content"), &arr[..i])?,
        };
        out.push(Message::new(role, content));
    }
    let prefill = match out.last() {
        Some(last) if last.role == "assistant" => out.pop().map(|m| m.content),
        _ => None,
    };
    Ok((out, prefill))
}

/// The prompt text and its message boundaries (the prefill, if any, after
/// the generation prompt), and the request's tools (described at the end of
/// the system message).
fn prompt_of(st: &AppState, m: &Map<String, Value>) -> Result<(Prompt, Option<Tools>), ApiError> {
    let (mut msgs, prefill) = conversation(m)?;
    let tools = tools_of(m)?;
    if let Some(t) = &tools {
        match msgs.first_mut() {
            Some(first) if first.role == "system" => {
                first.content.push_str("\n\n");
                first.content.push_str(&t.describe());
            }
            _ => msgs.insert(0, Message::new("system", t.describe())),
        }
    }
    let (mut text, bounds) = st
        .template
        .render_with_boundaries(&msgs)
        .map_err(|e| bad(format!("messages: {e}")))?;
    if let Some(p) = prefill {
        text.push_str(&p);
    }
    if text.is_empty() && !st.tok.add_bos() {
        return Err(bad("messages: the prompt is empty"));
    }
    Ok((Prompt { text, bounds }, tools))
}

/// The prompt's tokens as the scheduler reads it afresh (no cached prefix):
/// the BOS token if the model takes one, then each piece between message
/// boundaries tokenized on its own.
fn fresh_token_count(st: &AppState, prompt: &Prompt) -> Result<usize, ApiError> {
    let text = prompt.text.as_str();
    let mut n = usize::from(st.tok.add_bos() && st.tok.bos_id().is_some());
    let mut pos = 0;
    let ends = prompt
        .bounds
        .iter()
        .copied()
        .filter(|&b| b > 0 && b < text.len())
        .chain(std::iter::once(text.len()));
    for end in ends {
        let piece = text.get(pos..end).ok_or_else(|| {
            ApiError::new(500, "api_error", "a message boundary splits a character")
        })?;
        n += st
            .tok
            .encode(piece, false)
            .map_err(|e| bad(format!("messages: {e}")))?
            .len();
        pos = end;
    }
    Ok(n)
}

/// Sampling and length: `max_tokens` (required, as Anthropic's API),
/// `stop_sequences`, `temperature` (0 to 1, default 1), `top_p`, `top_k`.
fn gen_params(st: &AppState, m: &Map<String, Value>) -> Result<GenParams, ApiError> {
    let max = st.limits.max_tokens;
    let max_tokens = match api::opt(m, "max_tokens") {
        None => return Err(bad("max_tokens: field required")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n as usize <= max => n as usize,
            Some(n) if n >= 1 => {
                return Err(bad(format!(
                    "max_tokens is {n}, more than this server's limit of {max} (--max-tokens)"
                )))
            }
            _ => return Err(bad("max_tokens must be an integer of at least 1")),
        },
    };
    let stop = match api::opt(m, "stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad("stop_sequences must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("stop_sequences must be an array of strings")),
    };
    let range = |e: ApiError| bad(e.message);
    let temp = api::get_f32(m, "temperature", 0.0, 1.0)
        .map_err(range)?
        .unwrap_or(1.0);
    let top_p = api::get_f32(m, "top_p", 0.0, 1.0)
        .map_err(range)?
        .unwrap_or(1.0);
    let top_k = api::get_uint(m, "top_k").map_err(range)?.unwrap_or(0) as usize;
    if let Some(md) = api::opt(m, "metadata") {
        if !md.is_object() {
            return Err(bad("metadata must be an object"));
        }
    }
    Ok(GenParams {
        max_tokens,
        sampler: SamplerConfig {
            temp,
            top_k,
            top_p,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: rand::random::<u64>() >> 1,
            ..SamplerConfig::default()
        },
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        logprobs: None,
        ignore_eos: false,
        n: 1,
        constraint: None,
    })
}

/// A reply's calls as Anthropic's `tool_use` content blocks.
fn tool_use_blocks(calls: &[tools::Call], msg_id: &str) -> Value {
    json!(calls
        .iter()
        .enumerate()
        .map(|(i, c)| json!({
            "type": "tool_use",
            "id": tools::call_id(msg_id, 0, i),
            "name": c.name,
            "input": serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!({})),
        }))
        .collect::<Vec<_>>())
}

/// The content-block events of a streamed reply that may be tool calls:
/// tools.rs's deltas (text, or a call's name then its arguments) become
/// text blocks with `text_delta`s and `tool_use` blocks with
/// `input_json_delta`s, each opened and closed in turn.
#[derive(Default)]
struct Blocks {
    /// The open block's index and whether it is text.
    open: Option<(usize, bool)>,
    next: usize,
}

type SseOut = Vec<(&'static str, Value)>;

impl Blocks {
    fn start(&mut self, block: Value, text: bool, out: &mut SseOut) {
        self.close(out);
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.open = Some((self.next, text));
        self.next += 1;
    }

    fn close(&mut self, out: &mut SseOut) {
        if let Some((i, _)) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn delta(&mut self, d: &Value, out: &mut SseOut) {
        if let Some(t) = d.get("content").and_then(Value::as_str) {
            if !matches!(self.open, Some((_, true))) {
                self.start(json!({"type": "text", "text": ""}), true, out);
            }
            let i = self.open.map_or(0, |o| o.0);
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                       "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        for c in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = c.get("id") {
                let block = json!({"type": "tool_use", "id": id,
                                   "name": c["function"]["name"], "input": {}});
                self.start(block, false, out);
            }
            if let Some(a) = c["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                let i = self.open.map_or(0, |o| o.0);
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i,
                           "delta": {"type": "input_json_delta", "partial_json": a}}),
                ));
            }
        }
    }
}

fn stop_reason(finish: &str, stop_sequence: &Option<String>) -> &'static str {
    match (finish, stop_sequence) {
        ("length", _) => "max_tokens",
        (_, Some(_)) => "stop_sequence",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` are the prompt tokens read,
/// `cache_read_input_tokens` those whose state came from the prompt cache.
fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens),
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    })
}

pub async fn count_tokens(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = move || -> Result<Value, ApiError> {
        let m = api::parse_object(&super::body_bytes(body)?)?;
        check_fields(&m, true)?;
        if let Some(v) = api::opt(&m, "model") {
            if !v.is_string() {
                return Err(bad("model must be a string"));
            }
        }
        let (prompt, _) = prompt_of(&st, &m)?;
        Ok(json!({"input_tokens": fresh_token_count(&st, &prompt)?}))
    };
    // Tokenizing a long prompt is CPU work: off the async runtime.
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => error(&ApiError::new(500, "api_error", e.to_string())),
    }
}

pub async fn messages(
    State(st): State<Arc<AppState>>,
    ns: Option<axum::Extension<Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = (|| -> Result<_, ApiError> {
        let m = api::parse_object(&super::body_bytes(body)?)?;
        check_fields(&m, false)?;
        let model = match api::opt(&m, "model") {
            None => st.cfg.model_name.clone(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("model must be a string")),
        };
        let (prompt, tools) = prompt_of(&st, &m)?;
        let mut params = gen_params(&st, &m)?;
        if let Some(t) = &tools {
            // The reply's grammar: text or calls (tools.rs).
            let grammars = st
                .grammars
                .as_ref()
                .map_err(|e| bad(format!("tools: constrained decoding is unavailable: {e}")))?;
            params.constraint = Some(
                grammars
                    .compile(&t.spec())
                    .map_err(|e| bad(format!("tools: cannot compile the input schemas: {e}")))?,
            );
        }
        let stream = api::get_bool(&m, "stream")
            .map_err(|e| bad(e.message))?
            .unwrap_or(false);
        let calls = tools.is_some_and(|t| t.choice != Choice::None);
        Ok((model, prompt, params, stream, calls))
    })();
    let (model, prompt, params, stream, tool_mode) = match parsed {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    // The state store: read through it, and commit this job's states (in
    // the key's namespace), as for chat completions.
    let ns = ns.map(|e| e.0).filter(|_| st.engine.store().is_some());
    if let (Some(s), Some(ns)) = (st.engine.store(), &ns) {
        s.read_through(&st.engine, ns, &prompt, st.cfg.max_prompt_tokens)
            .await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + st.cfg.timeout;
    let job = Job {
        prompt,
        params,
        tx,
        deadline,
        store: ns,
    };
    if st.engine.submit(job).is_err() {
        return error(&ApiError::new(
            429,
            "rate_limit_error",
            "the server is busy (all slots and the queue are full); retry later",
        ));
    }
    let id = format!("msg_{:024x}", st.next_id.fetch_add(1, Ordering::Relaxed));
    let msg_id = id.clone();
    let timeout = tokio::time::Instant::from_std(deadline);
    let message = move |content: Value, stop: Value, stop_seq: Value, usage: Value| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": stop_seq, "usage": usage,
        })
    };
    if !stream {
        let mut text = String::new();
        loop {
            let ev = match tokio::time::timeout_at(timeout, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    return error(&ApiError::new(500, "api_error", "the scheduler stopped"))
                }
                Err(_) => return error(&ApiError::new(504, "timeout", "request timed out")),
            };
            match ev {
                Event::Prompt { .. } => {}
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Error {
                    status, message, ..
                } => return error(&ApiError::new(status, "api_error", message)),
                Event::Done {
                    finish_reason,
                    stop_sequence,
                    usage,
                    ..
                } => {
                    let mut reason = stop_reason(finish_reason, &stop_sequence);
                    let calls = tool_mode.then(|| tools::parse_calls(&text)).flatten();
                    let content = match calls {
                        Some(calls) => {
                            if finish_reason == "stop" {
                                reason = "tool_use";
                            }
                            tool_use_blocks(&calls, &msg_id)
                        }
                        None => json!([{"type": "text", "text": text}]),
                    };
                    return Json(message(
                        content,
                        json!(reason),
                        json!(stop_sequence),
                        usage_json(&usage),
                    ))
                    .into_response();
                }
            }
        }
    }
    // Anthropic's events. message_start goes out once the prompt is read,
    // with its token counts; when the client goes, the stream and then `rx`
    // are dropped and the scheduler frees the slot.
    let (stx, srx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let send = |name: &'static str, v: Value| {
            let stx = stx.clone();
            async move {
                stx.send(Ok(SseEvent::default().event(name).data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        let mut message = Some(message);
        let mut deltas = tool_mode.then(tools::DeltaStream::default);
        let mut blocks = Blocks::default();
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout_at(timeout, rx.recv()) => r,
                _ = stx.closed() => return,
            };
            let ev = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    let _ = send("error", error_body(500, "the scheduler stopped")).await;
                    return;
                }
                Err(_) => {
                    let _ = send("error", error_body(504, "request timed out")).await;
                    return;
                }
            };
            match ev {
                Event::Prompt {
                    prompt_tokens,
                    cached_tokens,
                } => {
                    let Some(msg) = message.take() else { continue };
                    let u = Usage {
                        prompt_tokens,
                        cached_tokens,
                        completion_tokens: 0,
                    };
                    let start = msg(json!([]), Value::Null, Value::Null, usage_json(&u));
                    let mut out = vec![(
                        "message_start",
                        json!({"type": "message_start", "message": start}),
                    )];
                    // With tools, blocks open as the reply shows what it is.
                    if deltas.is_none() {
                        blocks.start(json!({"type": "text", "text": ""}), true, &mut out);
                    }
                    out.push(("ping", json!({"type": "ping"})));
                    for (name, v) in out {
                        if !send(name, v).await {
                            return;
                        }
                    }
                }
                Event::Token { text, .. } => {
                    if text.is_empty() {
                        continue;
                    }
                    if let Some(ds) = deltas.as_mut() {
                        let mut out = Vec::new();
                        for d in ds.push(&text, &msg_id, 0) {
                            blocks.delta(&d, &mut out);
                        }
                        for (name, v) in out {
                            if !send(name, v).await {
                                return;
                            }
                        }
                        continue;
                    }
                    let mut out = Vec::new();
                    blocks.delta(&json!({ "content": text }), &mut out);
                    for (name, v) in out {
                        if !send(name, v).await {
                            return;
                        }
                    }
                }
                Event::Error {
                    status, message, ..
                } => {
                    let _ = send("error", error_body(status, &message)).await;
                    return;
                }
                Event::Done {
                    finish_reason,
                    stop_sequence,
                    usage,
                    ..
                } => {
                    let mut reason = stop_reason(finish_reason, &stop_sequence);
                    let mut out = Vec::new();
                    if let Some(ds) = deltas.as_mut() {
                        let (rest, calls) = ds.finish();
                        for d in rest {
                            blocks.delta(&d, &mut out);
                        }
                        if calls && finish_reason == "stop" {
                            reason = "tool_use";
                        }
                    }
                    blocks.close(&mut out);
                    out.push((
                        "message_delta",
                        json!({"type": "message_delta",
                               "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                               "usage": usage_json(&usage)}),
                    ));
                    out.push(("message_stop", json!({"type": "message_stop"})));
                    for (name, v) in out {
                        if !send(name, v).await {
                            return;
                        }
                    }
                    return;
                }
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(srx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
