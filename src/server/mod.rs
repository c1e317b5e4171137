//! An OpenAI-compatible HTTP server (axum on tokio) over the runtime:
//! `POST /v1/completions`, `POST /v1/chat/completions` (JSON or server-sent
//! events; completions also with token-id prompts, several prompts, and
//! `echo` with the prompt's log-probabilities), `GET /v1/models`,
//! `GET /health`, `POST /tokenize`, `POST /detokenize` (llama.cpp's and
//! vLLM's fields), `GET /tokenizer_info` (vLLM's); Anthropic's `POST /v1/messages` and
//! `POST /v1/messages/count_tokens` (anthropic.rs); Ollama's `/api/*`; a
//! chat page at `GET /` (ui.rs).
//!
//! Inference runs on the [`engine`]'s scheduler thread, never on the async
//! runtime; requests decoding at the same time share one batched forward per
//! token. Prompts restore the longest cached prefix state ([`cache`]); the
//! response's `usage.prompt_tokens_details.cached_tokens` says how many prompt
//! tokens that saved. `GET /health` reports the slots, the running and
//! waiting requests, the cache, and the decode counters (`steps` batched
//! forwards, `tokens` they fed, `max_batch` the most in one step); started
//! by [`spawn_loading`] (as `serve` does), the port answers at once, with
//! 503 on `/health` and everything else until the model is loaded.
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

mod anthropic;
pub mod api;
/// The prompt cache (moved to the library root: `chat` uses it too).
pub use crate::prefix_cache as cache;
pub mod engine;
pub mod metrics;
mod ollama;
mod responses;
mod slots;
pub mod store;
mod tools;
mod ui;

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
use serde_json::{json, Map, Value};
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
    /// Requests generating at once (slots stepped together in one batch);
    /// also the most choices (`n`) one request may ask for. Each slot holds
    /// one recurrent state (38 MiB at 7B) and a 64-token prefill scratch
    /// (18 MiB at 7B). Default 4, as llama.cpp's server.
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
    /// When set, every endpoint but `/health` needs
    /// `Authorization: Bearer <key>` (else 401).
    pub api_key: Option<String>,
    /// Origins browsers may call from (CORS); `*` for any. Empty: no CORS
    /// headers, so browsers on other origins are refused.
    pub cors_origins: Vec<String>,
    /// A directory keeping prefix states on disk across restarts, and its
    /// budget in MiB.
    pub cache_dir: Option<std::path::PathBuf>,
    pub cache_disk_mb: u64,
    /// A system prompt read into the prompt cache before the first request
    /// (`--warm FILE`), so the first chat that starts with it skips it.
    pub warm: Option<String>,
    /// Where the slot API (`POST /slots/{id}?action=save|restore`) keeps
    /// its files (llama.cpp's `--slot-save-path`); None refuses save and
    /// restore with 501.
    pub slot_save_path: Option<std::path::PathBuf>,
    /// More API keys beside `api_key`, each its own tenant: with a state
    /// store, each key's states are a namespace of their own.
    pub api_keys: Vec<String>,
    /// The shared state store (`--state-store`), a third prompt-cache tier
    /// that replicas share (store.rs).
    pub state_store: Option<store::StoreConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            parallel: 4,
            queue: 8,
            cache_mb: 512,
            max_body: 4 << 20,
            max_prompt_tokens: 32_768,
            max_tokens: 4096,
            default_max_tokens: 256,
            timeout: Duration::from_secs(600),
            model_name: "mamba-gguf".into(),
            api_key: None,
            cors_origins: Vec::new(),
            cache_dir: None,
            cache_disk_mb: 4096,
            warm: None,
            slot_save_path: None,
            api_keys: Vec::new(),
            state_store: None,
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
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("--warm: {0}")]
    Warm(String),
    #[error("cannot load the model: {0}")]
    Load(String),
    #[error("--slot-save-path {dir}: {source}")]
    SlotDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cache directory {dir}: {source}")]
    CacheDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

struct AppState {
    engine: Engine,
    /// For the slot API's state files (they name the model they belong to).
    model: Arc<Model>,
    tok: Arc<Tokenizer>,
    template: ChatTemplate,
    cfg: ServerConfig,
    limits: Limits,
    next_id: AtomicU64,
    /// The backend and device the model runs on, for `/health`.
    backend: &'static str,
    device: String,
    /// What Ollama's `/api/tags` and `/api/show` report.
    ollama: ollama::ModelInfo,
    /// The vocabulary indexed for constrained decoding (or why it could not be).
    grammars: Result<crate::constrain::Grammars, String>,
    /// Stored Responses API responses (responses.rs).
    responses: responses::Records,
}

/// A server running on its own threads; dropping the handle stops it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why a server started by [`spawn_loading`] stopped: its model or
    /// its state could not be loaded.
    failed: Arc<std::sync::Mutex<Option<ServerError>>>,
}

impl ServerHandle {
    /// Serves until the process ends, or until loading the model fails
    /// ([`spawn_loading`]): that error.
    pub fn wait(mut self) -> Result<(), ServerError> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match engine::lock(&self.failed).take() {
            Some(e) => Err(e),
            None => Ok(()),
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
    let (rt, listener, addr) = bind(&cfg)?;
    let state = app_state(model, cfg, rt.handle())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let _ = axum::serve(listener, router(state))
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
        failed: Arc::default(),
    })
}

/// Binds first and serves while `load` runs (on a thread of its own):
/// until the model is loaded and the server's state built, every request,
/// `/health` included, gets llama.cpp's 503 `{"error": {"code": 503,
/// "message": "Loading model", "type": "unavailable_error"}}` (so a load
/// balancer or orchestrator sees the replica as not ready yet); then
/// `ready` is called and the API answers on the same socket (connections
/// made meanwhile wait in its backlog). When loading fails the server
/// stops and [`ServerHandle::wait`] returns why.
pub fn spawn_loading<L, R>(
    load: L,
    ready: R,
    cfg: ServerConfig,
) -> Result<ServerHandle, ServerError>
where
    L: FnOnce() -> Result<Arc<Model>, String> + Send + 'static,
    R: FnOnce(SocketAddr, &Model) + Send + 'static,
{
    let (rt, listener, addr) = bind(&cfg)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let failed: Arc<std::sync::Mutex<Option<ServerError>>> = Arc::default();
    let fail = failed.clone();
    let (ltx, lrx) = tokio::sync::oneshot::channel::<Loaded>();
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let state = load()
                .map_err(ServerError::Load)
                .and_then(|model| app_state(model, cfg, &handle));
            let _ = ltx.send(state);
        })
        .map_err(ServerError::Runtime)?;
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let _ = rx.await;
                    let _ = stop_tx.send(true);
                });
                let outcome: Arc<std::sync::Mutex<Option<Loaded>>> = Arc::default();
                let (out, mut stop1) = (outcome.clone(), stop.clone());
                let phase = async move {
                    tokio::select! {
                        r = lrx => {
                            let r = r.unwrap_or_else(|_| Err(ServerError::Load("the loading thread stopped".into())));
                            *engine::lock(&out) = Some(r);
                        }
                        _ = stop1.wait_for(|s| *s) => {}
                    }
                };
                let std_listener = match listener.into_std() {
                    Ok(l) => l,
                    Err(e) => {
                        *engine::lock(&fail) = Some(ServerError::Runtime(e));
                        return;
                    }
                };
                let loading = std_listener
                    .try_clone()
                    .and_then(tokio::net::TcpListener::from_std);
                match loading {
                    Ok(l) => {
                        let _ = axum::serve(l, loading_router())
                            .with_graceful_shutdown(phase)
                            .await;
                    }
                    Err(e) => {
                        *engine::lock(&fail) = Some(ServerError::Runtime(e));
                        return;
                    }
                }
                let state = match engine::lock(&outcome).take() {
                    None => return, // stopped while loading
                    Some(Err(e)) => {
                        *engine::lock(&fail) = Some(e);
                        return;
                    }
                    Some(Ok(state)) => state,
                };
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        *engine::lock(&fail) = Some(ServerError::Runtime(e));
                        return;
                    }
                };
                ready(addr, &state.model);
                let _ = axum::serve(listener, router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            });
        })
        .map_err(ServerError::Runtime)?;
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
        failed,
    })
}

/// What loading the model and building the server's state came to.
type Loaded = Result<Arc<AppState>, ServerError>;

/// What answers every request while the model loads ([`spawn_loading`]).
fn loading_router() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})),
        )
            .into_response()
    })
}

/// The server's runtime and its bound listener.
fn bind(
    cfg: &ServerConfig,
) -> Result<(tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr), ServerError> {
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
    Ok((rt, listener, addr))
}

/// Starts the scheduler and builds what the handlers share (`rt` runs the
/// state store's writer).
fn app_state(
    model: Arc<Model>,
    cfg: ServerConfig,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<AppState>, ServerError> {
    let tok = Arc::new(Tokenizer::from_model_file(model.gguf())?);
    let template = ChatTemplate::from_tokenizer(&tok)?;
    let (backend, device) = (model.backend().name(), model.backend().device());
    let vocab = model.hp.n_vocab;
    let cache_bytes = cfg.cache_mb.saturating_mul(1 << 20);
    let disk_cache = match &cfg.cache_dir {
        Some(dir) => Some(
            crate::prefix_cache::PrefixCache::with_disk(
                cache_bytes,
                dir,
                cfg.cache_disk_mb.saturating_mul(1 << 20),
                &model,
            )
            .map_err(|source| ServerError::CacheDir {
                dir: dir.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let ollama = ollama::ModelInfo::of(&model);
    let grammars = crate::constrain::Grammars::new(&tok);
    if let Some(dir) = &cfg.slot_save_path {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::SlotDir {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    let engine = Engine::start(
        model.clone(),
        tok.clone(),
        EngineConfig {
            parallel: cfg.parallel.max(1),
            queue: cfg.queue,
            cache_bytes: cfg.cache_mb.saturating_mul(1 << 20),
            max_prompt_tokens: cfg.max_prompt_tokens,
            keep_slots: cfg.slot_save_path.is_some(),
        },
    )
    .map_err(ServerError::Scheduler)?;
    if let Some(c) = disk_cache {
        engine.set_cache(c);
    }
    if let Some(sc) = &cfg.state_store {
        // The store's writer runs on the server's runtime.
        let _rt = rt.enter();
        let s = store::StateStore::open(sc, model.clone(), &template)?;
        engine.set_store(Arc::new(s));
    }
    if let Some(system) = &cfg.warm {
        warm(&engine, &template, system, cfg.timeout)?;
    }
    let state = Arc::new(AppState {
        engine,
        model,
        tok,
        template,
        limits: Limits {
            max_tokens: cfg.max_tokens,
            default_max_tokens: cfg.default_max_tokens.min(cfg.max_tokens),
            vocab,
            max_n: cfg.parallel.max(1),
        },
        cfg,
        next_id: AtomicU64::new(1),
        backend,
        device,
        ollama,
        grammars,
        responses: responses::Records::default(),
    });
    Ok(state)
}

/// Reads `system` (as a chat's system message when the model has a
/// template) into the prompt cache: a job that generates nothing, whose
/// prefill caches the state at the message's end.
fn warm(
    engine: &Engine,
    template: &ChatTemplate,
    system: &str,
    timeout: Duration,
) -> Result<(), ServerError> {
    let (text, bounds) = template
        .render_with_boundaries(&[crate::chat_template::Message::new("system", system)])
        .map_err(|e| ServerError::Warm(e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt: Prompt { text, bounds },
        params: engine::GenParams {
            max_tokens: 0,
            sampler: crate::sampler::SamplerConfig::default(),
            stop: Vec::new(),
            logprobs: None,
            ignore_eos: false,
            n: 1,
            constraint: None,
        },
        tx,
        deadline: Instant::now() + timeout,
        store: None,
    };
    engine
        .submit(job)
        .map_err(|_| ServerError::Warm("the scheduler did not take the job".into()))?;
    loop {
        match rx.blocking_recv() {
            Some(Event::Done { .. }) => return Ok(()),
            Some(Event::Error { message, .. }) => return Err(ServerError::Warm(message)),
            Some(Event::Token { .. } | Event::Prompt { .. }) => {}
            None => return Err(ServerError::Warm("the scheduler stopped".into())),
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body;
    let cors = cors_layer(&state.cfg.cors_origins);
    let router = Router::new()
        .merge(ui::router())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/slots", get(slots::list))
        .route("/slots/{id}", post(slots::action))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .fallback(|| async {
            error_response(&ApiError::new(404, "not_found_error", "no such endpoint"))
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state);
    match cors {
        Some(c) => router.layer(c),
        None => router,
    }
}

/// Counts the request for `/metrics` (per API), then `--api-key`: the key
/// on every request but `/health` (and CORS preflights, which browsers send
/// without credentials), as `Authorization: Bearer <key>` or as Anthropic's
/// clients send it, `x-api-key: <key>`.
async fn authorize(
    State(st): State<Arc<AppState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() == axum::http::Method::POST {
        st.engine.metrics().api_request(req.uri().path());
    }
    // The tenant, for the state store's namespaces: one per key.
    req.extensions_mut().insert(store::Namespace::public());
    if st.cfg.api_key.is_none() && st.cfg.api_keys.is_empty() {
        return next.run(req).await;
    }
    let page = req.method() == axum::http::Method::GET && ui::PATHS.contains(&req.uri().path());
    if req.uri().path() == "/health" || page || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let headers = req.headers();
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    // Compared in constant time, so the answer's timing says nothing of the key.
    let same = |g: &str, key: &str| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    };
    let matched = given.and_then(|g| {
        st.cfg
            .api_key
            .iter()
            .chain(&st.cfg.api_keys)
            .find(|k| same(g, k))
    });
    let ok = matched.is_some();
    if let Some(k) = matched {
        req.extensions_mut().insert(store::Namespace::of_key(k));
    }
    let message = "missing or wrong API key (Authorization: Bearer <key>, or x-api-key: <key>)";
    if ok {
        next.run(req).await
    } else if req.uri().path().starts_with("/v1/messages") {
        anthropic::error(&ApiError::new(401, "authentication_error", message))
    } else {
        error_response(&ApiError {
            status: 401,
            message: message.into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        })
    }
}

/// `--cors-origin`: the origins allowed, `*` for any.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
                header::HeaderName::from_static("anthropic-version"),
                header::HeaderName::from_static("anthropic-beta"),
            ]),
    )
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

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut text = st
        .engine
        .metrics()
        .render(&st.engine.stats(), st.cfg.parallel.max(1));
    if let Some(s) = st.engine.store() {
        text.push_str(&s.counters().render());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
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
        // llama.cpp's `content` / `add_special`, or vLLM's `prompt` /
        // `add_special_tokens` (lm-evaluation-harness's remote tokenizer).
        let (key, special) = if m.contains_key("prompt") {
            ("prompt", "add_special_tokens")
        } else {
            ("content", "add_special")
        };
        let text = match m.get(key) {
            Some(Value::String(s)) => s,
            _ => return Err(ApiError::bad(key, format!("'{key}' must be a string"))),
        };
        let add = api::get_bool(&m, special)?.unwrap_or(false);
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
            Ok(json!({ "tokens": v, "count": ids.len() }))
        } else {
            Ok(json!({ "tokens": ids, "count": ids.len() }))
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
        // `content` as llama.cpp answers, `prompt` as vLLM does.
        let text = st.tok.decode(&ids);
        Ok(json!({ "content": text, "prompt": text }))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// vLLM's `GET /tokenizer_info`, which lm-evaluation-harness's remote
/// tokenizer reads (with `/tokenize` and `/detokenize`), so it tokenizes
/// with the model's own tokenizer and needs no Hugging Face download.
async fn tokenizer_info(State(st): State<Arc<AppState>>) -> Response {
    let tok = &st.tok;
    let piece = |id: Option<u32>| id.map(|i| tok.decode(&[i]));
    Json(json!({
        "tokenizer_class": "mamba-gguf",
        "vocab_size": tok.vocab_size(),
        "bos_token": piece(tok.bos_id()),
        "eos_token": piece(tok.eos_ids().first().copied()),
        "pad_token": Value::Null,
        "add_bos_token": tok.add_bos(),
        "chat_template": tok.chat_template(),
        "model_max_length": st.cfg.max_prompt_tokens,
    }))
    .into_response()
}

/// What differs between the two generation endpoints.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

struct Request {
    /// One prompt (chat), or one or more (completions: each with its own
    /// `n` choices, in order).
    prompts: Vec<(Prompt, engine::PromptOptions)>,
    params: engine::GenParams,
    stream: bool,
    include_usage: bool,
    return_tokens: bool,
    model: String,
    /// The reply may be tool calls (tools.rs), to be parsed out of its text.
    tool_calls: bool,
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
    api::check_fields(&m, chat)?;
    let tools = if chat { tools::Tools::parse(&m)? } else { None };
    let prompts = if chat {
        let mut msgs = api::messages(&m)?;
        if let Some(t) = &tools {
            // The tools are described at the end of the system message.
            match msgs.first_mut() {
                Some(first) if first.role == "system" => {
                    first.content.push_str("\n\n");
                    first.content.push_str(&t.describe());
                }
                _ => msgs.insert(
                    0,
                    crate::chat_template::Message::new("system", t.describe()),
                ),
            }
        }
        let (text, bounds) = st
            .template
            .render_with_boundaries(&msgs)
            .map_err(|e| ApiError::bad("messages", e.to_string()))?;
        if text.is_empty() && !st.tok.add_bos() {
            return Err(ApiError::bad("messages", "the prompt is empty"));
        }
        vec![(Prompt { text, bounds }, engine::PromptOptions::default())]
    } else {
        let echo = api::get_bool(&m, "echo")?.unwrap_or(false);
        let mut out = Vec::new();
        for p in api::prompts(&m, st.limits.vocab)? {
            out.push(match p {
                api::PromptIn::Text(text) => {
                    if text.is_empty() && !st.tok.add_bos() {
                        return Err(ApiError::bad("prompt", "the prompt is empty"));
                    }
                    let opts = engine::PromptOptions { ids: None, echo };
                    (
                        Prompt {
                            text,
                            bounds: Vec::new(),
                        },
                        opts,
                    )
                }
                api::PromptIn::Ids(ids) => {
                    let text = st.tok.decode(&ids);
                    let opts = engine::PromptOptions {
                        ids: Some(ids),
                        echo,
                    };
                    (
                        Prompt {
                            text,
                            bounds: Vec::new(),
                        },
                        opts,
                    )
                }
            });
        }
        out
    };
    let logprobs = api::logprobs(&m, chat)?;
    let mut params = api::gen_params(&m, &st.limits, logprobs)?;
    if let Some(spec) = api::output_spec(&m)? {
        let param = if matches!(spec, crate::constrain::Spec::Lark(_)) {
            "grammar"
        } else {
            "response_format"
        };
        let grammars = st.grammars.as_ref().map_err(|e| {
            ApiError::bad(param, format!("constrained decoding is unavailable: {e}"))
        })?;
        params.constraint = Some(
            grammars
                .compile(&spec)
                .map_err(|e| ApiError::bad(param, format!("cannot compile the {param}: {e}")))?,
        );
    }
    let (stream, include_usage) = api::stream(&m)?;
    let return_tokens = api::get_bool(&m, "return_tokens")?.unwrap_or(false);
    if let Some(t) = &tools {
        // The reply's grammar is the tools' (text or calls).
        let format = if api::opt(&m, "grammar").is_some() {
            "grammar"
        } else {
            "response_format"
        };
        for (param, given) in [
            (format, params.constraint.is_some()),
            ("logprobs", logprobs.is_some()),
            ("return_tokens", return_tokens),
        ] {
            if given {
                return Err(ApiError::bad(
                    param,
                    format!("'{param}' cannot be combined with tools here"),
                ));
            }
        }
        let grammars = st.grammars.as_ref().map_err(|e| {
            ApiError::bad("tools", format!("constrained decoding is unavailable: {e}"))
        })?;
        params.constraint = Some(grammars.compile(&t.spec()).map_err(|e| {
            ApiError::bad("tools", format!("cannot compile the tools' schemas: {e}"))
        })?);
    }
    Ok(Request {
        prompts,
        params,
        stream,
        include_usage,
        return_tokens,
        model,
        tool_calls: tools.is_some_and(|t| t.choice != tools::Choice::None),
    })
}

async fn completions(
    State(st): State<Arc<AppState>>,
    ns: Option<axum::Extension<store::Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Kind::Completion, ns.map(|e| e.0)).await
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    ns: Option<axum::Extension<store::Namespace>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Kind::Chat, ns.map(|e| e.0)).await
}

/// Adds choice `index`'s counts to a request's: each prompt was read once
/// (its first choice, of `per_prompt`, reports it), every choice's tokens
/// count.
fn add_choice_usage(total: &mut Usage, index: usize, per_prompt: usize, u: &Usage) {
    if index.is_multiple_of(per_prompt.max(1)) {
        total.prompt_tokens += u.prompt_tokens;
        total.cached_tokens += u.cached_tokens;
    }
    total.completion_tokens += u.completion_tokens;
}

/// The events of a request's prompts after the first, one job after the
/// other (submitted when the previous one is done, waiting while the queue
/// is full), merged into one stream with choice indices counted on: prompt
/// k's choice i is `k * n + i`, as OpenAI orders them.
fn chain_prompts(
    st: Arc<AppState>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    rest: Vec<(Prompt, engine::PromptOptions)>,
    params: engine::GenParams,
    deadline: Instant,
) -> mpsc::UnboundedReceiver<Event> {
    let (out, merged) = mpsc::unbounded_channel();
    let n = params.n.max(1);
    tokio::spawn(async move {
        let mut rest = rest.into_iter();
        let mut offset = 0;
        loop {
            let mut open = n;
            while open > 0 {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = out.closed() => return,
                };
                let ev = match ev {
                    None => return,
                    Some(Event::Token {
                        index,
                        id,
                        text,
                        logprob,
                        top,
                    }) => Event::Token {
                        index: index + offset,
                        id,
                        text,
                        logprob,
                        top,
                    },
                    Some(Event::Done {
                        index,
                        finish_reason,
                        stop_sequence,
                        usage,
                        timings,
                    }) => {
                        open -= 1;
                        Event::Done {
                            index: index + offset,
                            finish_reason,
                            stop_sequence,
                            usage,
                            timings,
                        }
                    }
                    Some(e @ Event::Error { .. }) => {
                        let _ = out.send(e);
                        return;
                    }
                    Some(e) => e,
                };
                if out.send(ev).is_err() {
                    return;
                }
            }
            let Some((prompt, opts)) = rest.next() else {
                return;
            };
            offset += n;
            let (tx, next) = mpsc::unbounded_channel();
            rx = next;
            loop {
                let job = Job {
                    prompt: prompt.clone(),
                    params: params.clone(),
                    tx: tx.clone(),
                    deadline,
                    store: None,
                };
                if st.engine.submit_with(job, opts.clone()).is_ok() {
                    break;
                }
                if Instant::now() > deadline || out.is_closed() {
                    let _ = out.send(Event::Error {
                        status: 504,
                        kind: "timeout",
                        message: "request timed out".into(),
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    merged
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// llama.cpp's `timings` object.
fn timings_json(t: &engine::Timings) -> Value {
    let per = |n: usize, ms: f64| {
        if n > 0 {
            (ms / n as f64, 1e3 * n as f64 / ms.max(1e-9))
        } else {
            (0.0, 0.0)
        }
    };
    let (p_tok, p_sec) = per(t.prompt_n, t.prompt_ms);
    let (g_tok, g_sec) = per(t.predicted_n, t.predicted_ms);
    json!({
        "prompt_n": t.prompt_n,
        "prompt_ms": t.prompt_ms,
        "prompt_per_token_ms": p_tok,
        "prompt_per_second": p_sec,
        "predicted_n": t.predicted_n,
        "predicted_ms": t.predicted_ms,
        "predicted_per_token_ms": g_tok,
        "predicted_per_second": g_sec,
    })
}

/// One generated token as the response reports it.
struct Tok {
    id: Option<u32>,
    text: String,
    logprob: Option<f32>,
    top: Vec<(u32, f32)>,
}

fn logprobs_json(kind: Kind, tok: &Tokenizer, toks: &[Tok]) -> Value {
    let real: Vec<&Tok> = toks.iter().filter(|t| t.id.is_some()).collect();
    match kind {
        Kind::Chat => json!({"content": real.iter().map(|t| {
            let id = t.id.unwrap_or(0);
            let top: Vec<Value> = t.top.iter().map(|&(i, lp)| {
                json!({"token": tok.token_piece(i), "logprob": lp, "bytes": tok.token_bytes(i)})
            }).collect();
            json!({"token": tok.token_piece(id), "logprob": t.logprob, "bytes": tok.token_bytes(id), "top_logprobs": top})
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
                "top_logprobs": if real.iter().all(|t| t.top.is_empty()) {
                    Value::Null
                } else {
                    // One {piece: logprob} object per token (pieces that
                    // repeat keep the best, as OpenAI's format can hold one).
                    // The first token of an echoed prompt has none: null.
                    json!(real.iter().map(|t| {
                        if t.logprob.is_none() {
                            return Value::Null;
                        }
                        let mut o = Map::new();
                        for &(i, lp) in &t.top {
                            o.entry(tok.token_piece(i)).or_insert(json!(lp));
                        }
                        Value::Object(o)
                    }).collect::<Vec<_>>())
                },
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
    /// The sampler's seed (the request's, or the fresh one it got).
    seed: u64,
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
            "system_fingerprint": concat!("mamba-gguf-", env!("CARGO_PKG_VERSION")),
            "seed": self.seed,
            "choices": match choice {
                Value::Null => json!([]),
                Value::Array(a) => Value::Array(a),
                c => json!([c]),
            },
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

async fn generate(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
    ns: Option<store::Namespace>,
) -> Response {
    let req = match parse_request(&st, body, kind) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + st.cfg.timeout;
    let mut prompts = req.prompts.into_iter();
    let Some((prompt, opts)) = prompts.next() else {
        return error_response(&ApiError::bad("prompt", "'prompt' must not be empty"));
    };
    // The state store: read through it (a prompt of text, read through
    // the prompt cache), and commit this job's states.
    let ns = ns.filter(|_| st.engine.store().is_some());
    if let (Some(s), Some(ns)) = (st.engine.store(), &ns) {
        if opts.ids.is_none() && !opts.echo {
            s.read_through(&st.engine, ns, &prompt, st.cfg.max_prompt_tokens)
                .await;
        }
    }
    let job = Job {
        prompt,
        params: req.params.clone(),
        tx,
        deadline,
        store: ns,
    };
    if st.engine.submit_with(job, opts).is_err() {
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
        seed: req.params.sampler.seed,
    };
    let timeout = tokio::time::Instant::from_std(deadline);
    let rest: Vec<_> = prompts.collect();
    let per_prompt = req.params.n.max(1);
    let n_choices = per_prompt * (1 + rest.len());
    if !rest.is_empty() {
        rx = chain_prompts(st.clone(), rx, rest, req.params.clone(), deadline);
    }
    if !req.stream {
        let mut toks: Vec<Vec<Tok>> = (0..n_choices).map(|_| Vec::new()).collect();
        let mut done: Vec<Option<(&'static str, Usage, engine::Timings)>> = vec![None; n_choices];
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
                Event::Prompt { .. } => {}
                Event::Token {
                    index,
                    id,
                    text,
                    logprob,
                    top,
                } => {
                    if let Some(t) = toks.get_mut(index) {
                        t.push(Tok {
                            id,
                            text,
                            logprob,
                            top,
                        })
                    }
                }
                Event::Error {
                    status,
                    kind,
                    message,
                } => return error_response(&api_from_event(status, kind, message)),
                Event::Done {
                    index,
                    finish_reason,
                    usage,
                    timings,
                    ..
                } => {
                    if let Some(d) = done.get_mut(index) {
                        *d = Some((finish_reason, usage, timings));
                    }
                    if done.iter().any(Option::is_none) {
                        continue;
                    }
                    let mut choices = Vec::with_capacity(n_choices);
                    let mut total = Usage::default();
                    for (index, (toks, d)) in toks.iter().zip(&done).enumerate() {
                        let Some((finish_reason, usage, _)) = d else {
                            continue;
                        };
                        add_choice_usage(&mut total, index, per_prompt, usage);
                        let text: String = toks.iter().map(|t| t.text.as_str()).collect();
                        let lp = if req.params.logprobs.is_some() {
                            logprobs_json(kind, &st.tok, toks)
                        } else {
                            Value::Null
                        };
                        let calls = req.tool_calls.then(|| tools::parse_calls(&text)).flatten();
                        let mut choice = match (kind, calls) {
                            (Kind::Chat, Some(calls)) => json!({
                                "index": index,
                                "message": {"role": "assistant", "content": Value::Null,
                                            "tool_calls": tools::calls_json(&calls, &meta.id, index)},
                                "logprobs": lp,
                                "finish_reason": if *finish_reason == "stop" { "tool_calls" } else { finish_reason },
                            }),
                            (Kind::Chat, None) => json!({
                                "index": index,
                                "message": {"role": "assistant", "content": text},
                                "logprobs": lp,
                                "finish_reason": finish_reason,
                            }),
                            (Kind::Completion, _) => json!({
                                "index": index, "text": text, "logprobs": lp, "finish_reason": finish_reason,
                            }),
                        };
                        if req.return_tokens {
                            choice["token_ids"] =
                                json!(toks.iter().filter_map(|t| t.id).collect::<Vec<_>>());
                        }
                        choices.push(choice);
                    }
                    let mut body =
                        meta.wrap(false, Value::Array(choices), Some(usage_json(&total)));
                    if let Some((_, _, t)) = &done[0] {
                        body["timings"] = timings_json(t);
                    }
                    return Json(body).into_response();
                }
            }
        }
    }
    // Streaming: a task turns scheduler events into SSE events; when the client
    // goes, the SSE stream and then `rx` are dropped and the scheduler frees
    // the slot.
    let (stx, srx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    let tok = st.tok.clone();
    let (return_tokens, logprobs, include_usage) = (
        req.return_tokens,
        req.params.logprobs.is_some(),
        req.include_usage,
    );
    // With tools, each choice's text becomes content or tool-call deltas.
    let mut tool_deltas: Option<Vec<tools::DeltaStream>> = req.tool_calls.then(|| {
        (0..n_choices)
            .map(|_| tools::DeltaStream::default())
            .collect()
    });
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
            for index in 0..n_choices {
                let c = json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": Value::Null, "finish_reason": Value::Null});
                if !send(meta.wrap(true, c, None)).await {
                    return;
                }
            }
        }
        let mut open = n_choices;
        let mut total = Usage::default();
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
                Event::Prompt { .. } => {}
                Event::Token {
                    index,
                    id,
                    text,
                    logprob,
                    top,
                } => {
                    if text.is_empty() && !(return_tokens || logprobs) {
                        continue;
                    }
                    if let Some(ds) = tool_deltas.as_mut().and_then(|d| d.get_mut(index)) {
                        for d in ds.push(&text, &meta.id, index) {
                            let c = json!({"index": index, "delta": d, "logprobs": Value::Null, "finish_reason": Value::Null});
                            if !send(meta.wrap(true, c, None)).await {
                                return;
                            }
                        }
                        continue;
                    }
                    let t = Tok {
                        id,
                        text,
                        logprob,
                        top,
                    };
                    let lp = if logprobs {
                        logprobs_json(kind, &tok, std::slice::from_ref(&t))
                    } else {
                        Value::Null
                    };
                    let mut c = match kind {
                        Kind::Chat => {
                            json!({"index": index, "delta": {"content": t.text}, "logprobs": lp, "finish_reason": Value::Null})
                        }
                        Kind::Completion => {
                            json!({"index": index, "text": t.text, "logprobs": lp, "finish_reason": Value::Null})
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
                    index,
                    finish_reason,
                    usage,
                    timings,
                    ..
                } => {
                    let mut finish_reason = finish_reason;
                    if let Some(ds) = tool_deltas.as_mut().and_then(|d| d.get_mut(index)) {
                        let (rest, calls) = ds.finish();
                        for d in rest {
                            let c = json!({"index": index, "delta": d, "logprobs": Value::Null, "finish_reason": Value::Null});
                            if !send(meta.wrap(true, c, None)).await {
                                return;
                            }
                        }
                        if calls && finish_reason == "stop" {
                            finish_reason = "tool_calls";
                        }
                    }
                    let c = match kind {
                        Kind::Chat => {
                            json!({"index": index, "delta": {}, "logprobs": Value::Null, "finish_reason": finish_reason})
                        }
                        Kind::Completion => {
                            json!({"index": index, "text": "", "logprobs": Value::Null, "finish_reason": finish_reason})
                        }
                    };
                    add_choice_usage(&mut total, index, per_prompt, &usage);
                    open = open.saturating_sub(1);
                    if open > 0 {
                        if !send(meta.wrap(true, c, None)).await {
                            return;
                        }
                        continue;
                    }
                    let usage = total;
                    // The usage also rides on the last choice chunk (as
                    // llama.cpp does); with include_usage, OpenAI's extra
                    // chunk with no choices follows.
                    let mut last = meta.wrap(true, c, Some(usage_json(&usage)));
                    last["timings"] = timings_json(&timings);
                    if !send(last).await {
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
