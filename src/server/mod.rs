//! An OpenAI-compatible HTTP server (axum on tokio) over the runtime:
//! `POST /v1/completions`, `POST /v1/chat/completions` (JSON or server-sent
//! events), `GET /v1/models`, `GET /health`, `POST /tokenize`,
//! `POST /detokenize`.
//!
//! Inference runs on the [`engine`]'s scheduler thread, never on the async
//! runtime; requests decoding at the same time share one batched forward per
//! token. Prompts restore the longest cached prefix state ([`cache`]); the
//! response's `usage.prompt_tokens_details.cached_tokens` says how many prompt
//! tokens that saved. `GET /health` reports the slots, the running and
//! waiting requests, the cache, and the decode counters (`steps` batched
//! forwards, `tokens` they fed, `max_batch` the most in one step).
//!
//! ```no_run
//! use std::sync::Arc;
//! use mamba_gguf::{server::{self, ServerConfig}, Model};
//! let model = Arc::new(Model::load("model.gguf")?);
//! let cfg = ServerConfig { port: 0, ..ServerConfig::default() };
//! let handle = server::spawn(model, cfg)?;
//! println!("listening on http://{}", handle.addr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
/// The prompt cache (moved to the library root: `chat` uses it too).
pub use crate::prefix_cache as cache;
pub mod engine;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::chat_template::ChatTemplate;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use api::{ApiError, Limits};
use engine::{Engine, EngineConfig, Event, Job, Prompt, Usage};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Requests generating at once (slots stepped together in one batch).
    pub parallel: usize,
    /// Requests waiting beyond those; more get 429.
    pub queue: usize,
    /// Prompt cache budget in MiB (0 disables it).
    pub cache_mb: usize,
    /// Largest request body in bytes.
    pub max_body: usize,
    pub max_prompt_tokens: usize,
    /// The most `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Whole-request time limit.
    pub timeout: Duration,
    /// The id `/v1/models` lists (requests may name any model).
    pub model_name: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            parallel: 1,
            queue: 8,
            cache_mb: 512,
            max_body: 4 << 20,
            max_prompt_tokens: 32_768,
            max_tokens: 4096,
            default_max_tokens: 256,
            timeout: Duration::from_secs(600),
            model_name: "mamba-gguf".into(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the scheduler thread: {0}")]
    Scheduler(std::io::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Template(#[from] crate::chat_template::TemplateError),
}

struct AppState {
    engine: Engine,
    tok: Arc<Tokenizer>,
    template: ChatTemplate,
    cfg: ServerConfig,
    limits: Limits,
    next_id: AtomicU64,
    /// The backend and device the model runs on, for `/health`.
    backend: &'static str,
    device: String,
}

/// A server running on its own threads; dropping the handle stops it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds, starts the scheduler and serves on background threads.
pub fn spawn(model: Arc<Model>, cfg: ServerConfig) -> Result<ServerHandle, ServerError> {
    let tok = Arc::new(Tokenizer::from_model_file(model.gguf())?);
    let template = ChatTemplate::from_tokenizer(&tok)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let addr_s = format!("{}:{}", cfg.host, cfg.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr_s))
        .map_err(|source| ServerError::Bind {
            addr: addr_s.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: addr_s,
        source,
    })?;
    let (backend, device) = (model.backend().name(), model.backend().device());
    let engine = Engine::start(
        model,
        tok.clone(),
        EngineConfig {
            parallel: cfg.parallel.max(1),
            queue: cfg.queue,
            cache_bytes: cfg.cache_mb.saturating_mul(1 << 20),
            max_prompt_tokens: cfg.max_prompt_tokens,
        },
    )
    .map_err(ServerError::Scheduler)?;
    let state = Arc::new(AppState {
        engine,
        tok,
        template,
        limits: Limits {
            max_tokens: cfg.max_tokens,
            default_max_tokens: cfg.default_max_tokens.min(cfg.max_tokens),
        },
        cfg,
        next_id: AtomicU64::new(1),
        backend,
        device,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let app = router(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        })
        .map_err(ServerError::Runtime)?;
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async {
            error_response(&ApiError::new(404, "not_found_error", "no such endpoint"))
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body())).into_response()
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status().as_u16();
        let msg = if status == 413 {
            "request body is too large".to_string()
        } else {
            format!("cannot read the request body: {r}")
        };
        ApiError::new(status, "invalid_request_error", msg)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    Json(json!({
        "status": "ok",
        "backend": st.backend,
        "device": st.device,
        "slots": st.cfg.parallel,
        "running": s.running,
        "waiting": s.waiting,
        "cache": {"entries": s.cache_entries, "bytes": s.cache_bytes, "hits": s.cache_hits, "misses": s.cache_misses},
        "decode": {"steps": s.decode_steps, "tokens": s.decode_tokens, "max_batch": s.max_batch},
    }))
    .into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model_name, "object": "model", "created": 0, "owned_by": "mamba-gguf"}],
    }))
    .into_response()
}

async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = || -> Result<Value, ApiError> {
        let m = api::parse_object(&body_bytes(body)?)?;
        let text = match m.get("content") {
            Some(Value::String(s)) => s,
            _ => return Err(ApiError::bad("content", "'content' must be a string")),
        };
        let add = api::get_bool(&m, "add_special")?.unwrap_or(false);
        let pieces = api::get_bool(&m, "with_pieces")?.unwrap_or(false);
        let ids = st
            .tok
            .encode(text, add)
            .map_err(|e| ApiError::bad("content", e.to_string()))?;
        if pieces {
            let v: Vec<Value> = ids
                .iter()
                .map(|&id| json!({"id": id, "piece": st.tok.token_piece(id)}))
                .collect();
            Ok(json!({ "tokens": v }))
        } else {
            Ok(json!({ "tokens": ids }))
        }
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = || -> Result<Value, ApiError> {
        let m = api::parse_object(&body_bytes(body)?)?;
        let arr = match m.get("tokens") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::bad(
                    "tokens",
                    "'tokens' must be an array of token ids",
                ))
            }
        };
        let n = st.tok.vocab_size();
        let mut ids = Vec::with_capacity(arr.len());
        for v in arr {
            match v.as_u64() {
                Some(id) if (id as usize) < n => ids.push(id as u32),
                _ => {
                    return Err(ApiError::bad(
                        "tokens",
                        format!("{v} is not a token id (vocabulary size {n})"),
                    ))
                }
            }
        }
        Ok(json!({ "content": st.tok.decode(&ids) }))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// What differs between the two generation endpoints.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

struct Request {
    prompt: Prompt,
    params: engine::GenParams,
    stream: bool,
    include_usage: bool,
    return_tokens: bool,
    model: String,
}

fn parse_request(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Result<Request, ApiError> {
    let m = api::parse_object(&body_bytes(body)?)?;
    let model = match m.get("model") {
        None | Some(Value::Null) => st.cfg.model_name.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad("model", "'model' must be a string")),
    };
    let chat = matches!(kind, Kind::Chat);
    let prompt = if chat {
        let msgs = api::messages(&m)?;
        let (text, bounds) = st
            .template
            .render_with_boundaries(&msgs)
            .map_err(|e| ApiError::bad("messages", e.to_string()))?;
        Prompt { text, bounds }
    } else {
        Prompt {
            text: api::prompt(&m)?,
            bounds: Vec::new(),
        }
    };
    if prompt.text.is_empty() && !st.tok.add_bos() {
        return Err(ApiError::bad(
            if chat { "messages" } else { "prompt" },
            "the prompt is empty",
        ));
    }
    let logprobs = api::logprobs(&m, chat)?;
    let params = api::gen_params(&m, &st.limits, logprobs)?;
    let (stream, include_usage) = api::stream(&m)?;
    let return_tokens = api::get_bool(&m, "return_tokens")?.unwrap_or(false);
    Ok(Request {
        prompt,
        params,
        stream,
        include_usage,
        return_tokens,
        model,
    })
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Kind::Completion).await
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Kind::Chat).await
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// One generated token as the response reports it.
struct Tok {
    id: Option<u32>,
    text: String,
    logprob: Option<f32>,
}

fn logprobs_json(kind: Kind, tok: &Tokenizer, toks: &[Tok]) -> Value {
    let real: Vec<&Tok> = toks.iter().filter(|t| t.id.is_some()).collect();
    match kind {
        Kind::Chat => json!({"content": real.iter().map(|t| {
            let id = t.id.unwrap_or(0);
            json!({"token": tok.token_piece(id), "logprob": t.logprob, "bytes": tok.token_bytes(id), "top_logprobs": []})
        }).collect::<Vec<_>>()}),
        Kind::Completion => {
            let mut off = 0usize;
            let mut offsets = Vec::new();
            for t in &real {
                offsets.push(off);
                off += t.text.len();
            }
            json!({
                "tokens": real.iter().map(|t| tok.token_piece(t.id.unwrap_or(0))).collect::<Vec<_>>(),
                "token_logprobs": real.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": Value::Null,
                "text_offset": offsets,
            })
        }
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choice: Value, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }
}

fn api_from_event(status: u16, kind: &'static str, message: String) -> ApiError {
    ApiError::new(status, kind, message)
}

async fn generate(st: Arc<AppState>, body: Result<Bytes, BytesRejection>, kind: Kind) -> Response {
    let req = match parse_request(&st, body, kind) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + st.cfg.timeout;
    let job = Job {
        prompt: req.prompt,
        params: req.params.clone(),
        tx,
        deadline,
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
    let n = st.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        id: match kind {
            Kind::Chat => format!("chatcmpl-{n}"),
            Kind::Completion => format!("cmpl-{n}"),
        },
        created: now_secs(),
        model: req.model.clone(),
        kind,
    };
    let timeout = tokio::time::Instant::from_std(deadline);
    if !req.stream {
        let mut toks = Vec::new();
        loop {
            let ev = match tokio::time::timeout_at(timeout, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    return error_response(&ApiError::new(
                        500,
                        "server_error",
                        "the scheduler stopped",
                    ))
                }
                Err(_) => {
                    return error_response(&ApiError::new(504, "timeout", "request timed out"))
                }
            };
            match ev {
                Event::Token { id, text, logprob } => toks.push(Tok { id, text, logprob }),
                Event::Error {
                    status,
                    kind,
                    message,
                } => return error_response(&api_from_event(status, kind, message)),
                Event::Done {
                    finish_reason,
                    usage,
                } => {
                    let text: String = toks.iter().map(|t| t.text.as_str()).collect();
                    let lp = if req.params.logprobs {
                        logprobs_json(kind, &st.tok, &toks)
                    } else {
                        Value::Null
                    };
                    let mut choice = match kind {
                        Kind::Chat => json!({
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": lp,
                            "finish_reason": finish_reason,
                        }),
                        Kind::Completion => json!({
                            "index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason,
                        }),
                    };
                    if req.return_tokens {
                        choice["token_ids"] =
                            json!(toks.iter().filter_map(|t| t.id).collect::<Vec<_>>());
                    }
                    return Json(meta.wrap(false, choice, Some(usage_json(&usage))))
                        .into_response();
                }
            }
        }
    }
    // Streaming: a task turns scheduler events into SSE events; when the client
    // goes, the SSE stream and then `rx` are dropped and the scheduler frees
    // the slot.
    let (stx, srx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    let tok = st.tok.clone();
    let (return_tokens, logprobs, include_usage) =
        (req.return_tokens, req.params.logprobs, req.include_usage);
    tokio::spawn(async move {
        let send = |v: Value| {
            let stx = stx.clone();
            async move {
                stx.send(Ok(SseEvent::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        if matches!(kind, Kind::Chat) {
            let c = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": Value::Null, "finish_reason": Value::Null});
            if !send(meta.wrap(true, c, None)).await {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout_at(timeout, rx.recv()) => r,
                _ = stx.closed() => return,
            };
            let ev = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => {
                    let _ = send(ApiError::new(504, "timeout", "request timed out").body()).await;
                    return;
                }
            };
            match ev {
                Event::Token { id, text, logprob } => {
                    if text.is_empty() && !(return_tokens || logprobs) {
                        continue;
                    }
                    let t = Tok { id, text, logprob };
                    let lp = if logprobs {
                        logprobs_json(kind, &tok, std::slice::from_ref(&t))
                    } else {
                        Value::Null
                    };
                    let mut c = match kind {
                        Kind::Chat => {
                            json!({"index": 0, "delta": {"content": t.text}, "logprobs": lp, "finish_reason": Value::Null})
                        }
                        Kind::Completion => {
                            json!({"index": 0, "text": t.text, "logprobs": lp, "finish_reason": Value::Null})
                        }
                    };
                    if return_tokens {
                        c["token_ids"] = json!(t.id.into_iter().collect::<Vec<_>>());
                    }
                    if !send(meta.wrap(true, c, None)).await {
                        return;
                    }
                }
                Event::Error {
                    status,
                    kind,
                    message,
                } => {
                    let _ = send(api_from_event(status, kind, message).body()).await;
                    return;
                }
                Event::Done {
                    finish_reason,
                    usage,
                } => {
                    let c = match kind {
                        Kind::Chat => {
                            json!({"index": 0, "delta": {}, "logprobs": Value::Null, "finish_reason": finish_reason})
                        }
                        Kind::Completion => {
                            json!({"index": 0, "text": "", "logprobs": Value::Null, "finish_reason": finish_reason})
                        }
                    };
                    // The usage also rides on the last choice chunk (as
                    // llama.cpp does); with include_usage, OpenAI's extra
                    // chunk with no choices follows.
                    if !send(meta.wrap(true, c, Some(usage_json(&usage)))).await {
                        return;
                    }
                    if include_usage
                        && !send(meta.wrap(true, Value::Null, Some(usage_json(&usage)))).await
                    {
                        return;
                    }
                    let _ = stx.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    return;
                }
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(srx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
