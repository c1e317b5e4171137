//! OpenAI's stateful Responses API: `POST /v1/responses`,
//! `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`.
//!
//! A request gives `input` (a string, or a list of messages whose content is
//! a string or `input_text` / `output_text` parts), optionally
//! `instructions` (the system message), `max_output_tokens`, `temperature`,
//! `top_p`, `stream`, `store` (default true), `metadata` and
//! `previous_response_id`; `text` only as `{"format": {"type": "text"}}` and
//! `truncation` only as `"disabled"`, what they are here anyway. Every other
//! field (tools, reasoning, include, top_logprobs, background, ...) is
//! refused with a 400 naming it.
//!
//! A stored response keeps its conversation (the messages before it and its
//! reply, without the instructions, which OpenAI does not carry over): a
//! request naming it as `previous_response_id` continues that conversation
//! with only its new input, rendered through the chat template as one chat.
//! The records live in this process (the most recent [`KEEP`]) and, with a
//! state store (`--state-store`), in the store too (`r/<id>` in the key's
//! namespace), written before the response is answered: any replica on the
//! store finds the response, and the state after its reply is then found by
//! the store's read-through as the end of an earlier reply (store.rs), so
//! the continuation reads only the new input. `DELETE` removes the record
//! (the content-addressed states stay: other conversations may share them).
//! With API keys, a key sees only its own responses.
//!
//! Streaming sends the Responses events (`response.created`,
//! `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`...,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, then `response.completed`, or
//! `response.incomplete` when `max_output_tokens` cut it), each with its
//! `sequence_number`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::api::{self, ApiError};
use super::engine::{lock, Event, GenParams, Job, Prompt, Usage};
use super::store::Namespace;
use super::{body_bytes, error_response, now_secs, AppState};
use crate::chat_template::Message;
use crate::sampler::SamplerConfig;

/// Records kept in memory (the oldest dropped first).
pub const KEEP: usize = 1024;

/// A stored response: what `GET` answers, and the conversation it ends.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    response: Value,
    /// The messages before it and its reply (no instructions).
    history: Vec<Message>,
}

/// A record's key: its namespace and id.
type RecordKey = (Namespace, String);

/// The responses this process keeps, by namespace and id, and their order
/// (oldest first).
#[derive(Default)]
pub struct Records {
    map: Mutex<(HashMap<RecordKey, Record>, VecDeque<RecordKey>)>,
}

impl Records {
    fn put(&self, ns: &Namespace, id: &str, r: Record) {
        let mut g = lock(&self.map);
        let (map, order) = &mut *g;
        let key = (ns.clone(), id.to_string());
        if map.insert(key.clone(), r).is_none() {
            order.push_back(key);
        }
        while order.len() > KEEP {
            if let Some(k) = order.pop_front() {
                map.remove(&k);
            }
        }
    }

    fn get(&self, ns: &Namespace, id: &str) -> Option<Record> {
        lock(&self.map)
            .0
            .get(&(ns.clone(), id.to_string()))
            .cloned()
    }

    fn remove(&self, ns: &Namespace, id: &str) -> bool {
        let mut g = lock(&self.map);
        let (map, order) = &mut *g;
        let key = (ns.clone(), id.to_string());
        order.retain(|k| *k != key);
        map.remove(&key).is_some()
    }
}

/// The fields this endpoint takes.
const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "store",
    "previous_response_id",
    "metadata",
    "text",
    "truncation",
];

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A response id as this server makes them (so one never names a path).
fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_").is_some_and(|h| {
        !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The text of a message's content: a string or a list of text parts.
fn content_text(v: &Value, p: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for (j, part) in parts.iter().enumerate() {
                let pp = format!("{p}[{j}]");
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("input_text" | "output_text" | "text", Some(t)) => s.push_str(t),
                    ("input_text" | "output_text" | "text", None) => {
                        return Err(ApiError::bad(&format!("{pp}.text"), format!("{pp}.text must be a string")))
                    }
                    _ => {
                        return Err(ApiError::bad(
                            &format!("{pp}.type"),
                            format!("{pp}.type {kind:?} is not supported: only text parts (input_text, output_text)"),
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(ApiError::bad(
            p,
            format!("{p} must be a string or an array of text parts"),
        )),
    }
}

/// `input` as messages.
fn input_messages(m: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    match api::opt(m, "input") {
        None => Err(ApiError::bad("input", "'input' is required")),
        Some(Value::String(s)) => Ok(vec![Message::new("user", s.as_str())]),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let p = format!("input[{i}]");
                let obj = it
                    .as_object()
                    .ok_or_else(|| ApiError::bad(&p, format!("{p} must be an object")))?;
                if let Some(t) = obj.get("type").and_then(Value::as_str) {
                    if t != "message" {
                        return Err(ApiError::bad(
                            &format!("{p}.type"),
                            format!("{p}.type {t:?} is not supported: only messages"),
                        ));
                    }
                }
                let role = match obj.get("role").and_then(Value::as_str) {
                    Some("developer") | Some("system") => "system",
                    Some("user") => "user",
                    Some("assistant") => "assistant",
                    _ => {
                        return Err(ApiError::bad(
                            &format!("{p}.role"),
                            format!("{p}.role must be user, assistant, system or developer"),
                        ))
                    }
                };
                let content = obj.get("content").ok_or_else(|| {
                    ApiError::bad(&format!("{p}.content"), format!("{p}.content is required"))
                })?;
                out.push(Message::new(
                    role,
                    content_text(content, &format!("{p}.content"))?,
                ));
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::bad(
            "input",
            "'input' must be a string or a non-empty array of messages",
        )),
    }
}

/// A parsed request.
struct Req {
    model: String,
    instructions: Option<String>,
    input: Vec<Message>,
    params: GenParams,
    stream: bool,
    store: bool,
    previous: Option<String>,
    metadata: Value,
    temperature: f32,
    top_p: f32,
    max_output_tokens: Option<usize>,
}

fn parse(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Req, ApiError> {
    let m = api::parse_object(&body_bytes(body)?)?;
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad(
            k,
            format!("'{k}' is not supported by this server"),
        ));
    }
    if let Some(t) = api::opt(&m, "text") {
        let kind = t.pointer("/format/type").and_then(Value::as_str);
        let only_format = t
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "format"));
        if !(only_format && matches!(kind, None | Some("text"))) {
            return Err(ApiError::bad(
                "text",
                "only text: {format: {type: \"text\"}} is supported",
            ));
        }
    }
    if let Some(t) = api::opt(&m, "truncation") {
        if t.as_str() != Some("disabled") {
            return Err(ApiError::bad(
                "truncation",
                "only truncation \"disabled\" is supported",
            ));
        }
    }
    let model = match api::opt(&m, "model") {
        None => st.cfg.model_name.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad("model", "'model' must be a string")),
    };
    let instructions = match api::opt(&m, "instructions") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad(
                "instructions",
                "'instructions' must be a string",
            ))
        }
    };
    let metadata = match api::opt(&m, "metadata") {
        None => json!({}),
        Some(v @ Value::Object(o)) if o.values().all(Value::is_string) && o.len() <= 16 => {
            v.clone()
        }
        Some(_) => {
            return Err(ApiError::bad(
                "metadata",
                "'metadata' must be an object of at most 16 string values",
            ))
        }
    };
    let previous = match api::opt(&m, "previous_response_id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad(
                "previous_response_id",
                "'previous_response_id' must be a string",
            ))
        }
    };
    let max = st.limits.max_tokens;
    let max_output_tokens = match api::get_uint(&m, "max_output_tokens")? {
        None => None,
        Some(n) if n >= 1 && n as usize <= max => Some(n as usize),
        Some(n) => {
            return Err(ApiError::bad(
                "max_output_tokens",
                format!("'max_output_tokens' is {n}: it must be 1 to {max} (--max-tokens)"),
            ))
        }
    };
    let temperature = api::get_f32(&m, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = api::get_f32(&m, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let stream = api::get_bool(&m, "stream")?.unwrap_or(false);
    let store = api::get_bool(&m, "store")?.unwrap_or(true);
    let input = input_messages(&m)?;
    let params = GenParams {
        max_tokens: max_output_tokens.unwrap_or(st.limits.default_max_tokens),
        sampler: SamplerConfig {
            temp: temperature,
            top_p,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: rand::random::<u64>() >> 1,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        logprobs: None,
        ignore_eos: false,
        n: 1,
        constraint: None,
    };
    Ok(Req {
        model,
        instructions,
        input,
        params,
        stream,
        store,
        previous,
        metadata,
        temperature,
        top_p,
        max_output_tokens,
    })
}

/// A record: with a state store, the store's (the one copy every replica
/// sees; this process's only when writing it there failed), else this
/// process's.
async fn find(st: &AppState, ns: &Namespace, id: &str) -> Result<Option<Record>, ApiError> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(s) = st.engine.store() else {
        return Ok(st.responses.get(ns, id));
    };
    let path = s.record_path(ns, id);
    let get = async {
        let r = s.object_store().get(&path).await?;
        r.bytes().await
    };
    match tokio::time::timeout(s.timeout(), get).await {
        Ok(Ok(b)) => Ok(serde_json::from_slice::<Record>(&b).ok()),
        Ok(Err(object_store::Error::NotFound { .. })) => Ok(st.responses.get(ns, id)),
        Ok(Err(e)) => Err(ApiError::new(
            503,
            "server_error",
            format!("the state store: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            503,
            "server_error",
            "the state store did not answer in time",
        )),
    }
}

/// Keeps a record: with a state store there (awaited, so that another
/// replica finds it as soon as the client has the answer), here when that
/// fails; without one, here.
async fn keep(st: &AppState, ns: &Namespace, id: &str, r: Record) {
    if let Some(s) = st.engine.store() {
        let path = s.record_path(ns, id);
        let why = match serde_json::to_vec(&r) {
            Ok(bytes) => {
                let put = s.object_store().put(&path, bytes.into());
                match tokio::time::timeout(s.timeout(), put).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        eprintln!("state store: response {id} kept by this replica only: {why}");
    }
    st.responses.put(ns, id, r);
}

fn ns_of(ns: Option<Extension<Namespace>>) -> Namespace {
    ns.map(|e| e.0).unwrap_or_else(Namespace::public)
}

/// The response object.
struct Shape<'a> {
    id: &'a str,
    msg_id: &'a str,
    created: u64,
    req: &'a Req,
}

impl Shape<'_> {
    fn message(&self, text: &str, status: &str) -> Value {
        let content = if status == "in_progress" {
            json!([])
        } else {
            json!([{"type": "output_text", "text": text, "annotations": []}])
        };
        json!({"id": self.msg_id, "type": "message", "status": status, "role": "assistant", "content": content})
    }

    fn response(
        &self,
        status: &str,
        output: Value,
        usage: Option<&Usage>,
        incomplete: bool,
    ) -> Value {
        let r = self.req;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": Value::Null,
            "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "model": r.model,
            "output": output,
            "parallel_tool_calls": false,
            "previous_response_id": r.previous,
            "store": r.store,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "truncation": "disabled",
            "metadata": r.metadata,
            "usage": usage.map(|u| json!({
                "input_tokens": u.prompt_tokens,
                "input_tokens_details": {"cached_tokens": u.cached_tokens},
                "output_tokens": u.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.prompt_tokens + u.completion_tokens,
            })),
        })
    }
}

/// `POST /v1/responses`.
pub(super) async fn create(
    State(st): State<Arc<AppState>>,
    ns: Option<Extension<Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ns = ns_of(ns);
    let req = match parse(&st, body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let mut history = Vec::new();
    if let Some(prev) = &req.previous {
        match find(&st, &ns, prev).await {
            Ok(Some(r)) => history = r.history,
            Ok(None) => {
                let mut e = ApiError::bad(
                    "previous_response_id",
                    format!(
                        "no stored response {prev:?} (never stored, deleted, or another key's)"
                    ),
                );
                e.status = 404;
                return error_response(&e);
            }
            Err(e) => return error_response(&e),
        }
    }
    history.extend(req.input.iter().cloned());
    let mut messages = Vec::with_capacity(history.len() + 1);
    if let Some(i) = &req.instructions {
        messages.push(Message::new("system", i.as_str()));
    }
    messages.extend(history.iter().cloned());
    let (text, bounds) = match st.template.render_with_boundaries(&messages) {
        Ok(t) => t,
        Err(e) => return error_response(&ApiError::bad("input", e.to_string())),
    };
    let prompt = Prompt { text, bounds };
    // `store: false`: nothing of this response is kept, its states included.
    let store_ns = st.engine.store().filter(|_| req.store).map(|_| ns.clone());
    if let (Some(s), Some(sns)) = (st.engine.store(), &store_ns) {
        s.read_through(&st.engine, sns, &prompt, st.cfg.max_prompt_tokens)
            .await;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + st.cfg.timeout;
    let job = Job {
        prompt,
        params: req.params.clone(),
        tx,
        deadline,
        store: store_ns,
    };
    if st.engine.submit(job).is_err() {
        return error_response(&ApiError {
            status: 429,
            message: "the server is busy (all slots and the queue are full); retry later".into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("server_busy"),
        });
    }
    let run = Run {
        st,
        ns,
        id: new_id("resp"),
        msg_id: new_id("msg"),
        created: now_secs(),
        req,
        history,
        rx,
        timeout: tokio::time::Instant::from_std(deadline),
    };
    if run.req.stream {
        run.stream()
    } else {
        run.whole().await
    }
}

/// A submitted request and what answering it needs.
struct Run {
    st: Arc<AppState>,
    ns: Namespace,
    id: String,
    msg_id: String,
    created: u64,
    req: Req,
    history: Vec<Message>,
    rx: mpsc::UnboundedReceiver<Event>,
    timeout: tokio::time::Instant,
}

/// What the next event says.
enum Step {
    Prompt,
    Text(String),
    Done(&'static str, Usage),
    Failed(ApiError),
}

impl Run {
    async fn next(&mut self) -> Step {
        match tokio::time::timeout_at(self.timeout, self.rx.recv()).await {
            Ok(Some(Event::Prompt { .. })) => Step::Prompt,
            Ok(Some(Event::Token { text, .. })) => Step::Text(text),
            Ok(Some(Event::Done {
                finish_reason,
                usage,
                ..
            })) => Step::Done(finish_reason, usage),
            Ok(Some(Event::Error {
                status,
                kind,
                message,
            })) => Step::Failed(ApiError::new(status, kind, message)),
            Ok(None) => Step::Failed(ApiError::new(500, "server_error", "the scheduler stopped")),
            Err(_) => Step::Failed(ApiError::new(504, "timeout", "request timed out")),
        }
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            id: &self.id,
            msg_id: &self.msg_id,
            created: self.created,
            req: &self.req,
        }
    }

    /// The finished response; kept when `store`.
    async fn finish(&self, text: &str, reason: &str, usage: &Usage) -> Value {
        let incomplete = reason == "length";
        let sh = self.shape();
        let output = json!([sh.message(text, "completed")]);
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let resp = sh.response(status, output, Some(usage), incomplete);
        if self.req.store {
            let mut history = self.history.clone();
            history.push(Message::new("assistant", text));
            let r = Record {
                response: resp.clone(),
                history,
            };
            keep(&self.st, &self.ns, &self.id, r).await;
        }
        resp
    }

    async fn whole(mut self) -> Response {
        let mut text = String::new();
        loop {
            match self.next().await {
                Step::Prompt => {}
                Step::Text(t) => text.push_str(&t),
                Step::Failed(e) => return error_response(&e),
                Step::Done(reason, usage) => {
                    return Json(self.finish(&text, reason, &usage).await).into_response()
                }
            }
        }
    }

    fn stream(mut self) -> Response {
        let (stx, srx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut send = |kind: &'static str, mut v: Value| {
                v["type"] = json!(kind);
                v["sequence_number"] = json!(seq);
                seq += 1;
                let stx = stx.clone();
                async move {
                    stx.send(Ok(SseEvent::default().event(kind).data(v.to_string())))
                        .await
                        .is_ok()
                }
            };
            let (item, part) = (
                json!(self.msg_id),
                json!({"type": "output_text", "text": "", "annotations": []}),
            );
            let started = self.shape().response("in_progress", json!([]), None, false);
            let opening = [
                ("response.created", json!({"response": started})),
                ("response.in_progress", json!({"response": started})),
                (
                    "response.output_item.added",
                    json!({"output_index": 0, "item": self.shape().message("", "in_progress")}),
                ),
                (
                    "response.content_part.added",
                    json!({"item_id": item, "output_index": 0, "content_index": 0, "part": part}),
                ),
            ];
            for (k, v) in opening {
                if !send(k, v).await {
                    return;
                }
            }
            let mut text = String::new();
            loop {
                let step = tokio::select! {
                    s = self.next() => s,
                    _ = stx.closed() => return,
                };
                match step {
                    Step::Prompt => {}
                    Step::Text(t) => {
                        if t.is_empty() {
                            continue;
                        }
                        text.push_str(&t);
                        let v = json!({"item_id": item, "output_index": 0, "content_index": 0, "delta": t, "logprobs": []});
                        if !send("response.output_text.delta", v).await {
                            return;
                        }
                    }
                    Step::Failed(e) => {
                        let _ = send(
                            "error",
                            json!({"code": e.kind, "message": e.message, "param": Value::Null}),
                        )
                        .await;
                        return;
                    }
                    Step::Done(reason, usage) => {
                        let resp = self.finish(&text, reason, &usage).await;
                        let done_part =
                            json!({"type": "output_text", "text": text, "annotations": []});
                        let last = if reason == "length" {
                            "response.incomplete"
                        } else {
                            "response.completed"
                        };
                        let closing = [
                            (
                                "response.output_text.done",
                                json!({"item_id": item, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
                            ),
                            (
                                "response.content_part.done",
                                json!({"item_id": item, "output_index": 0, "content_index": 0, "part": done_part}),
                            ),
                            (
                                "response.output_item.done",
                                json!({"output_index": 0, "item": self.shape().message(&text, "completed")}),
                            ),
                            (last, json!({"response": resp})),
                        ];
                        for (k, v) in closing {
                            if !send(k, v).await {
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
}

/// `GET /v1/responses/{id}`.
pub(super) async fn get(
    State(st): State<Arc<AppState>>,
    ns: Option<Extension<Namespace>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match find(&st, &ns_of(ns), &id).await {
        Ok(Some(r)) => Json(r.response).into_response(),
        Ok(None) => error_response(&not_found(&id)),
        Err(e) => error_response(&e),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        format!("no stored response {id:?}"),
    )
}

/// `DELETE /v1/responses/{id}`.
pub(super) async fn delete(
    State(st): State<Arc<AppState>>,
    ns: Option<Extension<Namespace>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let ns = ns_of(ns);
    let found = match find(&st, &ns, &id).await {
        Ok(f) => f.is_some(),
        Err(e) => return error_response(&e),
    };
    if !found {
        return error_response(&not_found(&id));
    }
    st.responses.remove(&ns, &id);
    if let Some(s) = st.engine.store() {
        let path = s.record_path(&ns, &id);
        match tokio::time::timeout(s.timeout(), s.object_store().delete(&path)).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => {
                return error_response(&ApiError::new(
                    503,
                    "server_error",
                    format!("the state store: {e}"),
                ))
            }
            Err(_) => {
                return error_response(&ApiError::new(
                    503,
                    "server_error",
                    "the state store did not answer in time",
                ))
            }
        }
    }
    Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_no_path() {
        assert!(valid_id(&new_id("resp")));
        assert!(!valid_id("resp_../../x"));
        assert!(!valid_id("resp_"));
        assert!(!valid_id("msg_abc"));
    }

    #[test]
    fn input_forms() {
        let m = |v: Value| v.as_object().cloned().unwrap_or_default();
        let one = input_messages(&m(json!({"input": "hi"}))).expect("a string");
        assert_eq!(one, vec![Message::new("user", "hi")]);
        let list = input_messages(&m(json!({"input": [
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        ]})))
        .expect("a list");
        assert_eq!(
            list,
            vec![
                Message::new("system", "be brief"),
                Message::new("user", "ab")
            ]
        );
        let img = input_messages(&m(
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
        ));
        assert_eq!(
            img.err().and_then(|e| e.param).as_deref(),
            Some("input[0].content[0].type")
        );
        let call = input_messages(&m(
            json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]}),
        ));
        assert_eq!(
            call.err().and_then(|e| e.param).as_deref(),
            Some("input[0].type")
        );
    }
}
