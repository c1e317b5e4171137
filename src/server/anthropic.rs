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
//! them, through `extra_body`) and applied. As on the other endpoints,
//! every field is applied or refused with a 400 that names it (tools,
//! images, extended thinking, ...): accepted are only `metadata` and
//! `service_tier` (bookkeeping of Anthropic's side), `cache_control` on
//! text blocks (the cache keeps a state at every message's end anyway),
//! and values that ask for nothing (`tools: []`, `tool_choice` auto or
//! none, `thinking` disabled). Errors are Anthropic's
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
    let empty = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
    match key {
        // Accepted: applied, or bookkeeping of Anthropic's side.
        "model" | "messages" | "system" | "max_tokens" | "stop_sequences" | "stream"
        | "temperature" | "top_p" | "top_k" | "metadata" | "service_tier" => None,
        "tools" if empty => None,
        "tools" => Some("tool use is not implemented by this server"),
        // With no tools, "auto" and "none" both mean a text reply.
        "tool_choice" => match v.get("type").and_then(Value::as_str) {
            _ if v.is_null() => None,
            Some("auto" | "none") => None,
            _ => Some("tool use is not implemented by this server"),
        },
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
            Some(t @ ("tool_use" | "tool_result" | "server_tool_use")) => {
                return Err(bad(format!(
                    "{p}: unsupported content block type '{t}': tool use is not implemented by \
                     this server"
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
            Some(c) => texts_of(c, &format!("{p}.content"))?.concat(),
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
/// the generation prompt).
fn prompt_of(st: &AppState, m: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let (msgs, prefill) = conversation(m)?;
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
    Ok(Prompt { text, bounds })
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
        let prompt = prompt_of(&st, &m)?;
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
        let prompt = prompt_of(&st, &m)?;
        let params = gen_params(&st, &m)?;
        let stream = api::get_bool(&m, "stream")
            .map_err(|e| bad(e.message))?
            .unwrap_or(false);
        Ok((model, prompt, params, stream))
    })();
    let (model, prompt, params, stream) = match parsed {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + st.cfg.timeout;
    let job = Job {
        prompt,
        params,
        tx,
        deadline,
        store: None,
    };
    if st.engine.submit(job).is_err() {
        return error(&ApiError::new(
            429,
            "rate_limit_error",
            "the server is busy (all slots and the queue are full); retry later",
        ));
    }
    let id = format!("msg_{:024x}", st.next_id.fetch_add(1, Ordering::Relaxed));
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
                    let reason = stop_reason(finish_reason, &stop_sequence);
                    return Json(message(
                        json!([{"type": "text", "text": text}]),
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
                    let ok = send(
                        "message_start",
                        json!({"type": "message_start", "message": start}),
                    )
                    .await
                        && send(
                            "content_block_start",
                            json!({"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
                        )
                        .await
                        && send("ping", json!({"type": "ping"})).await;
                    if !ok {
                        return;
                    }
                }
                Event::Token { text, .. } => {
                    if text.is_empty() {
                        continue;
                    }
                    let d = json!({"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": text}});
                    if !send("content_block_delta", d).await {
                        return;
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
                    let reason = stop_reason(finish_reason, &stop_sequence);
                    let _ = send(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    )
                    .await
                        && send(
                            "message_delta",
                            json!({"type": "message_delta",
                                   "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                                   "usage": usage_json(&usage)}),
                        )
                        .await
                        && send("message_stop", json!({"type": "message_stop"})).await;
                    return;
                }
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(srx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
