//! OpenAI's stateful Responses API: `POST /v1/responses`,
//! `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`.
//!
//! A request gives `input` (a string, or a list of messages whose content is
//! a string or `input_text` / `output_text` parts), optionally
//! `instructions` (the system message), `max_output_tokens`, `temperature`,
//! `top_p`, `stream`, `store` (default true), `metadata` and
//! `previous_response_id`; `text` only as `{"format": {"type": "text"}}` and
//! `truncation` only as `"disabled"`, what they are here anyway. Every other
//! field (reasoning, include, top_logprobs, background, ...) is refused with
//! a 400 naming it.
//!
//! Function tools: `tools` (`{"type": "function", "name", "description",
//! "parameters", "strict"}`; other tool types are refused naming them),
//! `tool_choice` (`auto`, `none`, `required`, `{"type": "function",
//! "name"}`) and `parallel_tool_calls`, as on `/v1/chat/completions`
//! (tools.rs: the same generic format and grammar, so the arguments follow
//! the function's schema). A reply that is calls comes back as
//! `function_call` output items (`call_id`, `name`, `arguments`); the
//! input takes `function_call` items (a call made earlier) and
//! `function_call_output` items (its result), which go back into the
//! prompt as chat completions' tool calls and tool messages do, so a
//! continuation by `previous_response_id` reads the calls from the state
//! after them.
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
//! `sequence_number`; a function call streams as its `output_item.added`,
//! `response.function_call_arguments.delta`s as its arguments are
//! generated, `response.function_call_arguments.done` and
//! `output_item.done`.

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
use super::tools::{self, Tools};
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
    /// The function calls made in that conversation: (call_id, name), to
    /// name the function a later `function_call_output` answers.
    #[serde(default)]
    calls: Vec<(String, String)>,
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
    "tools",
    "tool_choice",
    "parallel_tool_calls",
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

/// One item of `input`.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Msg(Message),
    /// A function call made earlier: its call_id, name and arguments (JSON).
    Call(String, String, Value),
    /// A call's result: its call_id and output.
    Output(String, String),
}

/// A string field of an input item.
fn item_str<'a>(obj: &'a Map<String, Value>, p: &str, k: &str) -> Result<&'a str, ApiError> {
    obj.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad(&format!("{p}.{k}"), format!("{p}.{k} must be a string")))
}

/// `input` as items.
fn input_items(m: &Map<String, Value>) -> Result<Vec<Item>, ApiError> {
    match api::opt(m, "input") {
        None => Err(ApiError::bad("input", "'input' is required")),
        Some(Value::String(s)) => Ok(vec![Item::Msg(Message::new("user", s.as_str()))]),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let p = format!("input[{i}]");
                let obj = it
                    .as_object()
                    .ok_or_else(|| ApiError::bad(&p, format!("{p} must be an object")))?;
                match obj.get("type").and_then(Value::as_str) {
                    None | Some("message") => {}
                    Some("function_call") => {
                        let args = item_str(obj, &p, "arguments")?;
                        let args: Value = serde_json::from_str(args).map_err(|e| {
                            ApiError::bad(
                                &format!("{p}.arguments"),
                                format!("{p}.arguments is not JSON: {e}"),
                            )
                        })?;
                        out.push(Item::Call(
                            item_str(obj, &p, "call_id")?.to_string(),
                            item_str(obj, &p, "name")?.to_string(),
                            args,
                        ));
                        continue;
                    }
                    Some("function_call_output") => {
                        let output = match obj.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v @ Value::Array(_)) => content_text(v, &format!("{p}.output"))?,
                            _ => {
                                return Err(ApiError::bad(
                                    &format!("{p}.output"),
                                    format!("{p}.output must be a string or text parts"),
                                ))
                            }
                        };
                        out.push(Item::Output(
                            item_str(obj, &p, "call_id")?.to_string(),
                            output,
                        ));
                        continue;
                    }
                    Some(t) => {
                        return Err(ApiError::bad(
                            &format!("{p}.type"),
                            format!(
                                "{p}.type {t:?} is not supported: only message, \
                                 function_call and function_call_output"
                            ),
                        ))
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
                out.push(Item::Msg(Message::new(
                    role,
                    content_text(content, &format!("{p}.content"))?,
                )));
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::bad(
            "input",
            "'input' must be a string or a non-empty array of items",
        )),
    }
}

/// Input items as chat messages, in tools.rs's generic format as
/// `/v1/chat/completions` has them: calls after an assistant message (or
/// after each other) join it, one per line; results after each other make
/// one user message, each naming its function when `calls` (call_id,
/// name; this input's calls are added) knows it.
fn item_messages(items: &[Item], calls: &mut Vec<(String, String)>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(items.len());
    let mut prev: Option<&Item> = None;
    for it in items {
        match it {
            Item::Msg(m) => out.push(m.clone()),
            Item::Call(id, name, args) => {
                calls.push((id.clone(), name.clone()));
                let text = tools::call_text(name, args);
                match (prev, out.last_mut()) {
                    (Some(Item::Call(..)) | Some(Item::Msg(_)), Some(last))
                        if last.role == "assistant" =>
                    {
                        if !last.content.is_empty() {
                            last.content.push('\n');
                        }
                        last.content.push_str(&text);
                    }
                    _ => out.push(Message::new("assistant", text)),
                }
            }
            Item::Output(id, output) => {
                let name = calls
                    .iter()
                    .rev()
                    .find(|c| &c.0 == id)
                    .map(|c| c.1.as_str());
                let text = tools::result_text(id, name, output);
                match (prev, out.last_mut()) {
                    (Some(Item::Output(..)), Some(last)) => {
                        last.content.push('\n');
                        last.content.push_str(&text);
                    }
                    _ => out.push(Message::new("user", text)),
                }
            }
        }
        prev = Some(it);
    }
    out
}

/// `tools`, `tool_choice` and `parallel_tool_calls` in the Responses API's
/// shapes (a function's fields beside its `type`; a named choice
/// `{"type": "function", "name"}`), read as tools.rs reads chat's.
fn tools_of(m: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let mut chat = Map::new();
    match api::opt(m, "tools") {
        None => {}
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let p = format!("tools[{i}]");
                let o = t
                    .as_object()
                    .ok_or_else(|| ApiError::bad(&p, format!("{p} must be an object")))?;
                match o.get("type").and_then(Value::as_str) {
                    Some("function") => {}
                    Some(other) => {
                        return Err(ApiError::bad(
                            &p,
                            format!(
                                "{p}: tool type '{other}' is not supported: only function tools"
                            ),
                        ))
                    }
                    None => return Err(ApiError::bad(&p, format!("{p}.type is required"))),
                }
                let mut f = o.clone();
                f.remove("type");
                out.push(json!({"type": "function", "function": f}));
            }
            chat.insert("tools".into(), Value::Array(out));
        }
        Some(_) => return Err(ApiError::bad("tools", "'tools' must be an array")),
    }
    match api::opt(m, "tool_choice") {
        None => {}
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            if let Some(k) = o.keys().find(|k| *k != "type" && *k != "name") {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("tool_choice.{k} is not supported"),
                ));
            }
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": o.get("name")}}),
            );
        }
        Some(v @ Value::String(_)) => {
            chat.insert("tool_choice".into(), v.clone());
        }
        Some(_) => {
            return Err(ApiError::bad(
                "tool_choice",
                "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
            ))
        }
    }
    if let Some(v) = api::opt(m, "parallel_tool_calls") {
        chat.insert("parallel_tool_calls".into(), v.clone());
    }
    Tools::parse(&chat)
}

/// A parsed request.
struct Req {
    model: String,
    instructions: Option<String>,
    input: Vec<Item>,
    params: GenParams,
    tools: Option<Tools>,
    /// The reply may be calls (tools, and a tool_choice other than none).
    tool_mode: bool,
    /// `tools` and `tool_choice` as given, for the response object.
    tools_json: Value,
    tool_choice_json: Value,
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
    let input = input_items(&m)?;
    let tools = tools_of(&m)?;
    let mut params = GenParams {
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
    if let Some(t) = &tools {
        // The reply's grammar: text or calls (tools.rs).
        let grammars = st.grammars.as_ref().map_err(|e| {
            ApiError::bad("tools", format!("constrained decoding is unavailable: {e}"))
        })?;
        params.constraint = Some(grammars.compile(&t.spec()).map_err(|e| {
            ApiError::bad("tools", format!("cannot compile the tools' schemas: {e}"))
        })?);
    }
    let tool_mode = tools
        .as_ref()
        .is_some_and(|t| t.choice != tools::Choice::None);
    Ok(Req {
        model,
        instructions,
        input,
        params,
        tools,
        tool_mode,
        tools_json: api::opt(&m, "tools").cloned().unwrap_or_else(|| json!([])),
        tool_choice_json: api::opt(&m, "tool_choice")
            .cloned()
            .unwrap_or_else(|| json!("auto")),
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
    /// Call `i`'s item id and call_id.
    fn call_ids(&self, i: usize) -> (String, String) {
        let hex = self.id.strip_prefix("resp_").unwrap_or(self.id);
        (format!("fc_{hex}_{i}"), tools::call_id(self.id, 0, i))
    }

    fn function_call(&self, i: usize, name: &str, arguments: &str, status: &str) -> Value {
        let (id, call_id) = self.call_ids(i);
        json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
               "name": name, "arguments": arguments})
    }

    /// The output items of a reply's text: its calls, or one message.
    fn output(&self, text: &str) -> Vec<Value> {
        match self
            .req
            .tool_mode
            .then(|| tools::parse_calls(text))
            .flatten()
        {
            Some(calls) => calls
                .iter()
                .enumerate()
                .map(|(i, c)| self.function_call(i, &c.name, &c.arguments, "completed"))
                .collect(),
            None => vec![self.message(text, "completed")],
        }
    }

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
            "parallel_tool_calls": r.tools.as_ref().is_none_or(|t| t.parallel),
            "previous_response_id": r.previous,
            "store": r.store,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "text": {"format": {"type": "text"}},
            "tool_choice": r.tool_choice_json,
            "tools": r.tools_json,
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
    let mut calls = Vec::new();
    if let Some(prev) = &req.previous {
        match find(&st, &ns, prev).await {
            Ok(Some(r)) => {
                history = r.history;
                calls = r.calls;
            }
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
    history.extend(item_messages(&req.input, &mut calls));
    let mut messages = Vec::with_capacity(history.len() + 1);
    if let Some(i) = &req.instructions {
        messages.push(Message::new("system", i.as_str()));
    }
    messages.extend(history.iter().cloned());
    if let Some(t) = &req.tools {
        // The tools are described at the end of the system message.
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content.push_str("\n\n");
                first.content.push_str(&t.describe());
            }
            _ => messages.insert(0, Message::new("system", t.describe())),
        }
    }
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
        calls,
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
    /// The conversation's calls so far (call_id, name).
    calls: Vec<(String, String)>,
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
        let output = sh.output(text);
        let made: Vec<(String, String)> = output
            .iter()
            .filter(|o| o["type"] == "function_call")
            .filter_map(|o| {
                Some((
                    o["call_id"].as_str()?.to_string(),
                    o["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        let output = Value::Array(output);
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let resp = sh.response(status, output, Some(usage), incomplete);
        if self.req.store {
            let mut history = self.history.clone();
            history.push(Message::new("assistant", text));
            let mut calls = self.calls.clone();
            calls.extend(made);
            let r = Record {
                response: resp.clone(),
                history,
                calls,
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
            let mut send_all = |events: Vec<(&'static str, Value)>| {
                let stx = stx.clone();
                let events: Vec<_> = events
                    .into_iter()
                    .map(|(kind, mut v)| {
                        v["type"] = json!(kind);
                        v["sequence_number"] = json!(seq);
                        seq += 1;
                        SseEvent::default().event(kind).data(v.to_string())
                    })
                    .collect();
                async move {
                    for e in events {
                        if stx.send(Ok(e)).await.is_err() {
                            return false;
                        }
                    }
                    true
                }
            };
            let started = self.shape().response("in_progress", json!([]), None, false);
            let mut out = vec![
                ("response.created", json!({"response": started})),
                ("response.in_progress", json!({"response": started})),
            ];
            let mut items = Items::default();
            // Without tools the reply is a message from its start; with
            // them, items open as the reply shows what it is.
            let mut deltas = self.req.tool_mode.then(tools::DeltaStream::default);
            if deltas.is_none() {
                items.delta(&self.shape(), &json!({"content": ""}), &mut out);
            }
            if !send_all(out).await {
                return;
            }
            let mut text = String::new();
            loop {
                let step = tokio::select! {
                    s = self.next() => s,
                    _ = stx.closed() => return,
                };
                let mut out = Vec::new();
                match step {
                    Step::Prompt => continue,
                    Step::Text(t) => {
                        if t.is_empty() {
                            continue;
                        }
                        text.push_str(&t);
                        let sh = self.shape();
                        match deltas.as_mut() {
                            Some(ds) => {
                                for d in ds.push(&t, &self.id, 0) {
                                    items.delta(&sh, &d, &mut out);
                                }
                            }
                            None => items.delta(&sh, &json!({ "content": t }), &mut out),
                        }
                    }
                    Step::Failed(e) => {
                        out.push((
                            "error",
                            json!({"code": e.kind, "message": e.message, "param": Value::Null}),
                        ));
                        let _ = send_all(out).await;
                        return;
                    }
                    Step::Done(reason, usage) => {
                        let resp = self.finish(&text, reason, &usage).await;
                        let sh = self.shape();
                        if let Some(ds) = deltas.as_mut() {
                            for d in ds.finish().0 {
                                items.delta(&sh, &d, &mut out);
                            }
                        }
                        if items.next == 0 && items.open.is_none() {
                            // An empty reply: an empty message.
                            items.delta(&sh, &json!({"content": ""}), &mut out);
                        }
                        items.close(&sh, &mut out);
                        let last = if reason == "length" {
                            "response.incomplete"
                        } else {
                            "response.completed"
                        };
                        out.push((last, json!({ "response": resp })));
                        let _ = send_all(out).await;
                        return;
                    }
                }
                if !send_all(out).await {
                    return;
                }
            }
        });
        Sse::new(tokio_stream::wrappers::ReceiverStream::new(srx))
            .keep_alive(KeepAlive::default())
            .into_response()
    }
}

/// The open output item of a streamed response.
enum Open {
    /// The message, its text so far.
    Message(String),
    /// Function call `call` (its index among the calls): name, arguments so far.
    Call(usize, String, String),
}

/// The output-item events of a streamed response: tools.rs's deltas (text,
/// or a call's name and then pieces of its arguments) become a message item
/// with `output_text.delta`s and `function_call` items with
/// `function_call_arguments.delta`s, each opened and closed in turn.
#[derive(Default)]
struct Items {
    /// The open item and its output_index.
    open: Option<(usize, Open)>,
    next: usize,
    calls: usize,
}

type Events = Vec<(&'static str, Value)>;

impl Items {
    fn delta(&mut self, sh: &Shape, d: &Value, out: &mut Events) {
        if let Some(t) = d.get("content").and_then(Value::as_str) {
            if !matches!(self.open, Some((_, Open::Message(_)))) {
                self.close(sh, out);
                let i = self.next;
                self.next += 1;
                out.push((
                    "response.output_item.added",
                    json!({"output_index": i, "item": sh.message("", "in_progress")}),
                ));
                out.push((
                    "response.content_part.added",
                    json!({"item_id": sh.msg_id, "output_index": i, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}),
                ));
                self.open = Some((i, Open::Message(String::new())));
            }
            if let Some((i, Open::Message(text))) = &mut self.open {
                if !t.is_empty() {
                    text.push_str(t);
                    out.push((
                        "response.output_text.delta",
                        json!({"item_id": sh.msg_id, "output_index": *i, "content_index": 0,
                               "delta": t, "logprobs": []}),
                    ));
                }
            }
        }
        for c in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if c.get("id").is_some() {
                self.close(sh, out);
                let i = self.next;
                self.next += 1;
                let name = c["function"]["name"].as_str().unwrap_or("").to_string();
                out.push((
                    "response.output_item.added",
                    json!({"output_index": i,
                           "item": sh.function_call(self.calls, &name, "", "in_progress")}),
                ));
                self.open = Some((i, Open::Call(self.calls, name, String::new())));
                self.calls += 1;
            }
            let piece = c["function"]["arguments"].as_str().unwrap_or("");
            if let (Some((i, Open::Call(k, _, args))), false) = (&mut self.open, piece.is_empty()) {
                args.push_str(piece);
                out.push((
                    "response.function_call_arguments.delta",
                    json!({"item_id": sh.call_ids(*k).0, "output_index": *i, "delta": piece}),
                ));
            }
        }
    }

    fn close(&mut self, sh: &Shape, out: &mut Events) {
        match self.open.take() {
            None => {}
            Some((i, Open::Message(text))) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                out.push((
                    "response.output_text.done",
                    json!({"item_id": sh.msg_id, "output_index": i, "content_index": 0,
                           "text": text, "logprobs": []}),
                ));
                out.push((
                    "response.content_part.done",
                    json!({"item_id": sh.msg_id, "output_index": i, "content_index": 0, "part": part}),
                ));
                out.push((
                    "response.output_item.done",
                    json!({"output_index": i, "item": sh.message(&text, "completed")}),
                ));
            }
            Some((i, Open::Call(k, name, args))) => {
                out.push((
                    "response.function_call_arguments.done",
                    json!({"item_id": sh.call_ids(k).0, "output_index": i, "name": name,
                           "arguments": args}),
                ));
                out.push((
                    "response.output_item.done",
                    json!({"output_index": i,
                           "item": sh.function_call(k, &name, &args, "completed")}),
                ));
            }
        }
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
        let input_messages = |m: &Map<String, Value>| {
            input_items(m).map(|items| item_messages(&items, &mut Vec::new()))
        };
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
        let other = input_messages(&m(json!({"input": [{"type": "reasoning", "summary": []}]})));
        assert_eq!(
            other.err().and_then(|e| e.param).as_deref(),
            Some("input[0].type")
        );
        // Calls and their results, in the generic format of tools.rs: the
        // calls join the assistant message before them, the results make
        // one user message, each naming the function it answers.
        let items = input_items(&m(json!({"input": [
            {"role": "user", "content": "2+3? 1+1?"},
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{\"a\": 2, \"b\": 3}"},
            {"type": "function_call", "call_id": "c2", "name": "add", "arguments": "{\"a\":1,\"b\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "5"},
            {"type": "function_call_output", "call_id": "c0", "output": [{"type": "input_text", "text": "?"}]},
        ]})))
        .expect("items");
        let mut calls = vec![("c0".to_string(), "earlier".to_string())];
        assert_eq!(
            item_messages(&items, &mut calls),
            vec![
                Message::new("user", "2+3? 1+1?"),
                Message::new(
                    "assistant",
                    "<tool_call>{\"name\":\"add\",\"arguments\":{\"a\":2,\"b\":3}}</tool_call>\n\
                     <tool_call>{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":1}}</tool_call>"
                ),
                Message::new(
                    "user",
                    "<tool_result id=\"c1\" name=\"add\">\n5\n</tool_result>\n\
                     <tool_result id=\"c0\" name=\"earlier\">\n?\n</tool_result>"
                ),
            ]
        );
        assert_eq!(calls.len(), 3);
        let bad = input_items(&m(json!({"input": [
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{"}]})));
        assert_eq!(
            bad.err().and_then(|e| e.param).as_deref(),
            Some("input[0].arguments")
        );
    }
}
