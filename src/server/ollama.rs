//! Ollama's API, the subset apps that speak only it need (Open WebUI, editor
//! plugins): `GET /api/version`, `GET /api/tags`, `POST /api/show`,
//! `POST /api/generate` and `POST /api/chat`, streamed as NDJSON (one JSON
//! object a line; Ollama streams by default) with Ollama's option names.
//! The same scheduler serves them as the OpenAI endpoints, prefix cache
//! included. As there, every field and option is applied or refused with a
//! 400 naming it; errors are Ollama's `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::api::{self, ApiError};
use super::engine::{Event, GenParams, Job, Prompt, Timings};
use super::store::Namespace;
use super::AppState;
use crate::chat_template::Message;
use crate::sampler::SamplerConfig;

/// What `/api/tags` and `/api/show` say of the model, made once at start.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub size: u64,
    pub family: String,
    pub parameter_size: String,
    pub quantization: String,
    /// GGUF metadata, the tokenizer's long arrays left out.
    pub keys: Map<String, Value>,
}

impl ModelInfo {
    pub fn of(model: &crate::Model) -> ModelInfo {
        let g = model.gguf();
        let n: u64 = g.tensors().iter().map(|t| t.n_elements).sum();
        let parameter_size = if n >= 1_000_000_000 {
            format!("{:.1}B", n as f64 / 1e9)
        } else {
            format!("{}M", n / 1_000_000)
        };
        let family = if model.hp.dt_b_c_rms {
            "falcon-mamba"
        } else {
            "mamba"
        };
        let quantization = model
            .weight_types()
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join("+");
        let mut keys = Map::new();
        for (k, v) in g.metadata() {
            let j = match v {
                gguf::Value::Array(_) => continue,
                gguf::Value::String(s) if s.len() > 512 => continue,
                gguf::Value::String(s) => json!(s),
                gguf::Value::Bool(b) => json!(b),
                gguf::Value::F32(x) => json!(x),
                gguf::Value::F64(x) => json!(x),
                other => match other.as_u64() {
                    Some(u) => json!(u),
                    None => continue,
                },
            };
            keys.insert(k.clone(), j);
        }
        ModelInfo {
            size: g.file_size(),
            family: family.into(),
            parameter_size,
            quantization,
            keys,
        }
    }

    fn details(&self) -> Value {
        json!({
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        })
    }
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(json!({"error": message.into()}))).into_response()
}

fn from_api(e: ApiError) -> Response {
    error(e.status, e.message)
}

/// The name the model is listed under (`<stem>:latest`, Ollama's form).
fn listed_name(st: &AppState) -> String {
    format!("{}:latest", st.cfg.model_name)
}

/// RFC 3339 UTC time of now (Ollama's `created_at`).
fn rfc3339_now() -> String {
    let secs = super::now_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn version() -> Response {
    Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

pub async fn tags(State(st): State<Arc<AppState>>) -> Response {
    let i = &st.ollama;
    Json(json!({"models": [{
        "name": listed_name(&st),
        "model": listed_name(&st),
        "modified_at": rfc3339_now(),
        "size": i.size,
        "digest": "",
        "details": i.details(),
    }]}))
    .into_response()
}

pub async fn show(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = match super::body_bytes(body).and_then(|b| api::parse_object(&b)) {
        Ok(m) => m,
        Err(e) => return from_api(e),
    };
    if let Some(bad) = m
        .keys()
        .find(|k| !["model", "name", "verbose"].contains(&k.as_str()))
    {
        return error(400, format!("unsupported field '{bad}'"));
    }
    let i = &st.ollama;
    Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": st.tok.chat_template().unwrap_or(""),
        "details": i.details(),
        "model_info": i.keys,
        "capabilities": ["completion"],
    }))
    .into_response()
}

/// Ollama's `options` as sampler settings and a token limit (defaults are
/// Ollama's). `num_ctx` is accepted: a Mamba model's state does not depend
/// on the context length, so any context is honoured.
fn options(m: &Map<String, Value>, st: &AppState) -> Result<GenParams, String> {
    let empty = Map::new();
    let o = match m.get("options") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err("'options' must be an object".into()),
    };
    const KNOWN: &[&str] = &[
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "num_predict",
        "stop",
        "seed",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "num_ctx",
    ];
    if let Some(bad) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unsupported option '{bad}'"));
    }
    let f = |k: &str, d: f32, lo: f32, hi: f32| -> Result<f32, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| (lo..=hi).contains(x))
                .ok_or_else(|| format!("option '{k}' must be a number from {lo} to {hi}")),
        }
    };
    let u = |k: &str, d: i64| -> Result<i64, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("option '{k}' must be an integer")),
        }
    };
    let max = st.limits.max_tokens;
    let max_tokens = match u("num_predict", -1)? {
        n if n < 0 => max,
        n => usize::try_from(n).unwrap_or(max).min(max),
    };
    let stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(String::from)
                    .ok_or("option 'stop' must be strings")
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => return Err("option 'stop' must be a list of strings".into()),
    };
    let seed = match o.get("seed") {
        None | Some(Value::Null) => rand::random::<u64>() >> 1,
        Some(v) => v
            .as_i64()
            .map(|s| s as u64)
            .ok_or("option 'seed' must be an integer")?,
    };
    let top_k = u("top_k", 40)?;
    let repeat_last_n = u("repeat_last_n", 64)?;
    if top_k < 0 || repeat_last_n < 0 {
        return Err("options 'top_k' and 'repeat_last_n' must not be negative".into());
    }
    u("num_ctx", 0)?;
    Ok(GenParams {
        max_tokens,
        sampler: SamplerConfig {
            temp: f("temperature", 0.8, 0.0, 100.0)?,
            top_k: top_k as usize,
            top_p: f("top_p", 0.9, 0.0, 1.0)?,
            min_p: f("min_p", 0.0, 0.0, 1.0)?,
            repeat_penalty: f("repeat_penalty", 1.1, 0.0, 10.0)?,
            repeat_last_n: repeat_last_n as usize,
            frequency_penalty: f("frequency_penalty", 0.0, -2.0, 2.0)?,
            presence_penalty: f("presence_penalty", 0.0, -2.0, 2.0)?,
            logit_bias: Vec::new(),
            seed,
        },
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        logprobs: None,
        ignore_eos: false,
        n: 1,
        constraint: None,
    })
}

/// Refuses top-level fields outside `accepted`, and those accepted only
/// empty or false (`images`, `format`, `think`, ...).
fn check_fields(m: &Map<String, Value>, accepted: &[&str]) -> Result<(), String> {
    if let Some(bad) = m.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(format!("unsupported field '{bad}'"));
    }
    for k in ["images", "template", "context", "suffix", "tools", "think"] {
        let set = match m.get(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(format!("'{k}' is not supported by this server"));
        }
    }
    Ok(())
}

fn messages(m: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let arr = m
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("'messages' must be an array")?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            let role = v.get("role").and_then(Value::as_str);
            let content = v.get("content").and_then(Value::as_str).unwrap_or("");
            if v.get("images")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(format!("messages[{i}]: images are not supported"));
            }
            match role {
                Some(r) => Ok(Message::new(r, content)),
                None => Err(format!("messages[{i}].role must be a string")),
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Generate,
    Chat,
}

pub async fn generate(
    State(st): State<Arc<AppState>>,
    ns: Option<axum::Extension<Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run(st, body, Api::Generate, ns.map(|e| e.0)).await
}

pub async fn chat(
    State(st): State<Arc<AppState>>,
    ns: Option<axum::Extension<Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run(st, body, Api::Chat, ns.map(|e| e.0)).await
}

/// The request's prompt (the chat template applied unless `raw`).
fn prompt_of(st: &AppState, m: &Map<String, Value>, api: Api) -> Result<Prompt, String> {
    let render = |msgs: &[Message]| -> Result<Prompt, String> {
        let (text, bounds) = st
            .template
            .render_with_boundaries(msgs)
            .map_err(|e| e.to_string())?;
        Ok(Prompt { text, bounds })
    };
    match api {
        Api::Chat => {
            let msgs = messages(m)?;
            if msgs.is_empty() {
                return Err("'messages' must not be empty".into());
            }
            render(&msgs)
        }
        Api::Generate => {
            let prompt = m
                .get("prompt")
                .and_then(Value::as_str)
                .ok_or("'prompt' must be a string")?;
            let raw = m.get("raw").and_then(Value::as_bool).unwrap_or(false);
            if raw || st.tok.chat_template().is_none() {
                return Ok(Prompt {
                    text: prompt.to_string(),
                    bounds: Vec::new(),
                });
            }
            let mut msgs = Vec::new();
            if let Some(s) = m.get("system").and_then(Value::as_str) {
                msgs.push(Message::new("system", s));
            }
            msgs.push(Message::new("user", prompt));
            render(&msgs)
        }
    }
}

async fn run(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    api: Api,
    ns: Option<Namespace>,
) -> Response {
    let started = Instant::now();
    let m = match super::body_bytes(body).and_then(|b| api::parse_object(&b)) {
        Ok(m) => m,
        Err(e) => return from_api(e),
    };
    let accepted: &[&str] = match api {
        Api::Generate => &[
            "model",
            "prompt",
            "system",
            "raw",
            "stream",
            "options",
            "keep_alive",
            "images",
            "format",
            "template",
            "context",
            "suffix",
            "think",
        ],
        Api::Chat => &[
            "model",
            "messages",
            "stream",
            "options",
            "keep_alive",
            "format",
            "tools",
            "think",
        ],
    };
    let parsed =
        check_fields(&m, accepted).and_then(|()| Ok((prompt_of(&st, &m, api)?, options(&m, &st)?)));
    let (prompt, mut params) = match parsed {
        Ok(p) => p,
        Err(e) => return error(400, e),
    };
    // `format`: "json" or a JSON schema, through the same grammar engine.
    let spec = match m.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f.is_empty() => None,
        Some(Value::String(f)) if f == "json" => Some(crate::constrain::Spec::JsonObject),
        Some(s @ Value::Object(_)) => Some(crate::constrain::Spec::JsonSchema(s.clone())),
        Some(_) => return error(400, "'format' must be \"json\" or a JSON schema"),
    };
    if let Some(spec) = spec {
        let compiled = st
            .grammars
            .as_ref()
            .map_err(|e| e.clone())
            .and_then(|g| g.compile(&spec));
        match compiled {
            Ok(c) => params.constraint = Some(c),
            Err(e) => return error(400, format!("cannot compile the format: {e}")),
        }
    }
    if prompt.text.is_empty() && !st.tok.add_bos() {
        return error(400, "the prompt is empty");
    }
    let stream = match m.get("stream") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return error(400, "'stream' must be a boolean"),
    };
    let model = m
        .get("model")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| listed_name(&st));
    // The state store: read through it, and commit this job's states (in
    // the key's namespace), as for chat completions.
    let ns = ns.filter(|_| st.engine.store().is_some());
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
        return error(
            429,
            "the server is busy (all slots and the queue are full); retry later",
        );
    }
    let piece = move |model: &str, text: &str| -> Value {
        match api {
            Api::Generate => {
                json!({"model": model, "created_at": rfc3339_now(), "response": text, "done": false})
            }
            Api::Chat => json!({"model": model, "created_at": rfc3339_now(),
                                "message": {"role": "assistant", "content": text}, "done": false}),
        }
    };
    let last = move |model: &str, text: &str, reason: &str, prompt_n: usize, t: &Timings| {
        let mut v = piece(model, text);
        let ns = |ms: f64| (ms * 1e6) as u64;
        v["done"] = json!(true);
        v["done_reason"] = json!(reason);
        v["total_duration"] = json!(started.elapsed().as_nanos() as u64);
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(prompt_n);
        v["prompt_eval_duration"] = json!(ns(t.prompt_ms));
        v["eval_count"] = json!(t.predicted_n);
        v["eval_duration"] = json!(ns(t.predicted_ms));
        v
    };
    let timeout = tokio::time::Instant::from_std(deadline);
    if !stream {
        let mut text = String::new();
        loop {
            match tokio::time::timeout_at(timeout, rx.recv()).await {
                Ok(Some(Event::Token { text: t, .. })) => text.push_str(&t),
                Ok(Some(Event::Prompt { .. })) => {}
                Ok(Some(Event::Done {
                    finish_reason,
                    usage,
                    timings,
                    ..
                })) => {
                    let v = last(&model, &text, finish_reason, usage.prompt_tokens, &timings);
                    return Json(v).into_response();
                }
                Ok(Some(Event::Error {
                    status, message, ..
                })) => return error(status, message),
                Ok(None) => return error(500, "the scheduler stopped"),
                Err(_) => return error(504, "request timed out"),
            }
        }
    }
    // NDJSON: a task turns events into lines; when the client goes, the body
    // and then `rx` are dropped and the scheduler frees the slot.
    let (ltx, lrx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let send = |v: Value| {
            let ltx = ltx.clone();
            async move {
                let mut line = v.to_string();
                line.push('\n');
                ltx.send(Ok(Bytes::from(line))).await.is_ok()
            }
        };
        loop {
            let v = match tokio::time::timeout_at(timeout, rx.recv()).await {
                Ok(Some(Event::Token { text, .. })) if text.is_empty() => continue,
                Ok(Some(Event::Prompt { .. })) => continue,
                Ok(Some(Event::Token { text, .. })) => piece(&model, &text),
                Ok(Some(Event::Done {
                    finish_reason,
                    usage,
                    timings,
                    ..
                })) => {
                    let _ = send(last(
                        &model,
                        "",
                        finish_reason,
                        usage.prompt_tokens,
                        &timings,
                    ))
                    .await;
                    return;
                }
                Ok(Some(Event::Error { message, .. })) => {
                    let _ = send(json!({"error": message})).await;
                    return;
                }
                Ok(None) => {
                    let _ = send(json!({"error": "the scheduler stopped"})).await;
                    return;
                }
                Err(_) => {
                    let _ = send(json!({"error": "request timed out"})).await;
                    return;
                }
            };
            if !send(v).await {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(lrx)),
    )
        .into_response()
}
