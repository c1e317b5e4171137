//! The shared state store (`serve --state-store URL`): a third tier under
//! the prompt cache's memory and disk tiers, on S3-compatible object storage
//! (`s3://bucket/prefix`: AWS S3, SeaweedFS, Ceph RGW, Garage, R2, MinIO) or
//! a shared directory (`file:///dir`), so that any replica of `serve`
//! continues any conversation: a Falcon Mamba conversation's whole cache is
//! one fixed-size state (14 MiB at 1.4B, 38 MiB at 7B).
//!
//! **Objects** are immutable and content-addressed. Under
//! `PREFIX/v1/<model>/<namespace>/` (`<model>`: the first 16 hex digits of
//! the model's identity, [`state_file::model_id`]; `<namespace>`: `public`,
//! or one per API key, a hash of the key):
//! - `s/<H(model identity, state format version, namespace, token ids)>`:
//!   a state, as the bytes of a state file ([`state_file::encode`]: the
//!   model's identity and a SHA-256 checksum inside), its note holding the
//!   token ids it has consumed;
//! - `t/<H(model identity, version, namespace, text)>`: a text index, the
//!   token ids the prompt text up to that point was read as (a JSON array),
//!   so a replica that has only the text finds the state: a reply's tokens
//!   are the ones the model generated, which tokenizing the reply's text
//!   again could not give;
//! - `r/<id>`: a stored Responses API response (responses.rs).
//!
//! **Commits** happen at stable boundaries only: the end of each request's
//! prompt and the end of each reply (every generated token fed, no stop
//! string cutting the text). The scheduler hands the state (shared with the
//! memory tier, no copy) to a bounded write-behind queue and goes on; a
//! full queue drops the commit and counts it. The writer encodes the state
//! file off the async threads, then writes the state and then its text
//! index, each with a conditional create (`PutMode::Create`, S3's
//! `If-None-Match: *`), so replicas racing on one key leave one object and
//! an index never names a state not yet written whole (an S3 object, and the
//! `fs` backend's rename, appear whole or not at all).
//!
//! **Reads** are read-through, in the HTTP handler before the job is queued:
//! a prompt whose longest cached prefix (memory or disk) is shorter than
//! what the store may hold looks up the text points where earlier requests
//! of the same conversation committed, longest first. From the rendered
//! chat and its message boundaries those are: the whole prompt (the same
//! request again, e.g. a retry after a replica died); each earlier prompt's
//! end, a message boundary followed by the template's generation prompt
//! (`<|im_start|>assistant\n`); and each earlier reply's end, an assistant
//! message's end less the template's closing of a message (`<|im_end|>\n`).
//! Both markers are found once by rendering the template. A raw completion
//! prompt has no boundaries: only the whole prompt is looked up. No listing
//! and no mutable index object: each candidate is one GET of a small text
//! index (a 404 is cheap), then one GET of the state. The first state found
//! is checked (checksum, model identity, the token ids its key was made
//! from) and put into the memory tier; the job then restores it as any
//! cached prefix. The whole lookup has a short deadline (`timeout`): past it,
//! or on any store error, the prompt is simply prefilled. One fetch at a
//! time per state key: concurrent requests for one state wait for the first
//! fetch and find it in memory.
//!
//! **Nothing lost, nothing leaked**: an object whose checksum, model
//! identity or tokens do not match is a miss, counted (`rejected`) and
//! logged, never used. With API keys each key is its own namespace: the
//! namespace is in every key's hash and path, so one tenant's states are
//! never restored for another. A store that is down or slow costs hits
//! only: lookups time out into prefill and commits are counted as errors.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectStore, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use super::engine::{lock, Engine, Prompt};
use crate::chat_template::{ChatTemplate, Message};
use crate::model::Model;
use crate::session::Snapshot;
use crate::state_file;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--state-store {url}: {why}")]
    Url { url: String, why: String },
    #[error("--state-store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("--state-store {url}: {source}")]
    Dir {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// `--state-store` settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `s3://bucket[/prefix]` or `file:///dir`.
    pub url: String,
    /// An S3 endpoint (else `AWS_ENDPOINT_URL`, else AWS's); `http://`
    /// endpoints are allowed.
    pub endpoint: Option<String>,
    /// The S3 region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// The deadline of a read-through lookup (and of a response record's
    /// write); a write-behind commit may take ten times it.
    pub timeout: Duration,
    /// Commits waiting to be written; more are dropped (and counted).
    pub queue: usize,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            timeout: Duration::from_millis(1500),
            queue: 8,
        }
    }
}

/// A tenant's part of the store: `public` without API keys, else one per
/// key (a hash of it, never the key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub fn public() -> Namespace {
        Namespace("public".into())
    }

    pub fn of_key(key: &str) -> Namespace {
        let mut h = Sha256::new();
        h.update(b"mamba-gguf tenant\0");
        h.update(key.as_bytes());
        let d: [u8; 32] = h.finalize().into();
        Namespace(format!("k{}", hex(&d[..12])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The store's counters (`/metrics`).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Lookups that restored a state.
    pub hits: AtomicU64,
    /// Lookups that restored nothing (nothing there, nothing usable, or
    /// the store failed or was slow).
    pub misses: AtomicU64,
    /// Store operations that failed or timed out (reads and writes).
    pub errors: AtomicU64,
    /// Objects found damaged, of another model, or not matching their key:
    /// never used.
    pub rejected: AtomicU64,
    /// Objects written, and conditional creates that found the object there.
    pub written: AtomicU64,
    pub exists: AtomicU64,
    /// Commits dropped because the write-behind queue was full.
    pub dropped: AtomicU64,
    /// Commits queued or being written now.
    pub pending: AtomicU64,
    /// Prompt tokens whose state came from the store.
    pub restored_tokens: AtomicU64,
    /// Microseconds spent in the lookups that restored a state (from the
    /// first GET to the state decoded and in the memory tier).
    pub restore_us: AtomicU64,
}

impl StoreCounters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of the counters.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 9] = [
            ("hits_total", "counter", "Lookups that restored a state from the store.", get(&self.hits)),
            ("misses_total", "counter", "Lookups that restored nothing from the store (none there, none usable, or the store failed).", get(&self.misses)),
            ("errors_total", "counter", "Store reads and writes that failed or timed out.", get(&self.errors)),
            ("rejected_total", "counter", "Store objects damaged, of another model or not matching their key: never used.", get(&self.rejected)),
            ("writes_total", "counter", "Objects written to the store.", get(&self.written)),
            ("write_exists_total", "counter", "Conditional creates that found the object already there (another replica wrote it).", get(&self.exists)),
            ("dropped_total", "counter", "Commits dropped because the write-behind queue was full.", get(&self.dropped)),
            ("pending", "gauge", "Commits queued or being written.", get(&self.pending)),
            ("restored_tokens_total", "counter", "Prompt tokens whose state came from the store.", get(&self.restored_tokens)),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(o, "# HELP mamba_gguf_state_store_{name} {help}");
            let _ = writeln!(o, "# TYPE mamba_gguf_state_store_{name} {kind}");
            let _ = writeln!(o, "mamba_gguf_state_store_{name} {v}");
        }
        let secs = get(&self.restore_us) as f64 / 1e6;
        let _ = writeln!(o, "# HELP mamba_gguf_state_store_restore_seconds_total Time spent in lookups that restored a state, from the first GET to the state decoded.");
        let _ = writeln!(
            o,
            "# TYPE mamba_gguf_state_store_restore_seconds_total counter"
        );
        let _ = writeln!(o, "mamba_gguf_state_store_restore_seconds_total {secs:.6}");
        o
    }
}

/// A state to write behind.
struct Commit {
    ns: Namespace,
    text: String,
    tokens: Vec<u32>,
    snap: Arc<Snapshot>,
}

/// What the writer and the readers share.
struct Inner {
    store: Arc<dyn ObjectStore>,
    /// `PREFIX/v1/<model>`.
    base: String,
    model: Arc<Model>,
    model_id: [u8; 32],
    timeout: Duration,
    counters: StoreCounters,
    /// State keys this replica wrote or restored lately (not written again).
    known: Mutex<HashSet<[u8; 32]>>,
}

/// The most keys [`Inner::known`] holds before it starts over.
const KNOWN_MAX: usize = 4096;

/// The shared state store of one model.
pub struct StateStore {
    inner: Arc<Inner>,
    tx: tokio::sync::mpsc::Sender<Commit>,
    /// One fetch at a time per state key.
    fetching: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// The chat template's generation prompt and its closing of a message.
    gen_prompt: String,
    closing: String,
}

/// What the note of a store object holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    tokens: Vec<u32>,
}

impl Inner {
    fn state_key(&self, ns: &Namespace, tokens: &[u32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"mamba-gguf state\0");
        h.update(self.model_id);
        h.update(state_file::VERSION.to_le_bytes());
        h.update(ns.0.as_bytes());
        h.update([0]);
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        h.finalize().into()
    }

    fn text_key(&self, ns: &Namespace, text: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"mamba-gguf text\0");
        h.update(self.model_id);
        h.update(state_file::VERSION.to_le_bytes());
        h.update(ns.0.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.finalize().into()
    }

    fn path(&self, ns: &Namespace, kind: &str, name: &str) -> ObjPath {
        ObjPath::from(format!("{}/{}/{kind}/{name}", self.base, ns.0))
    }

    fn remember(&self, key: [u8; 32]) -> bool {
        let mut k = lock(&self.known);
        if k.len() >= KNOWN_MAX {
            k.clear();
        }
        k.insert(key)
    }

    /// A conditional create; Ok(true) when written, Ok(false) when the
    /// object was there.
    async fn create(&self, path: &ObjPath, bytes: Vec<u8>) -> Result<bool, String> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self.store.put_opts(path, PutPayload::from(bytes), opts);
        match tokio::time::timeout(self.timeout * 10, put).await {
            Ok(Ok(_)) => {
                StoreCounters::add(&self.counters.written);
                Ok(true)
            }
            Ok(Err(object_store::Error::AlreadyExists { .. }))
            | Ok(Err(object_store::Error::Precondition { .. })) => {
                StoreCounters::add(&self.counters.exists);
                Ok(false)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn write(self: &Arc<Self>, c: Commit) -> Result<(), String> {
        let key = self.state_key(&c.ns, &c.tokens);
        let state = self.path(&c.ns, "s", &hex(&key));
        let index = self.path(&c.ns, "t", &hex(&self.text_key(&c.ns, &c.text)));
        let inner = self.clone();
        let tokens = c.tokens.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let note = serde_json::to_string(&Note { tokens }).unwrap_or_default();
            state_file::encode_with_id(&inner.model_id, &c.snap, &note)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.create(&state, bytes).await?;
        let ids = serde_json::to_vec(&c.tokens).map_err(|e| e.to_string())?;
        self.create(&index, ids).await?;
        Ok(())
    }

    /// GET with the deadline; Ok(None) when there is no such object. The
    /// body as object_store collected it (a state is ~38 MiB at 7B: no copy).
    async fn get(&self, path: &ObjPath, deadline: Instant) -> Result<Option<Bytes>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let get = async {
            let r = self.store.get(path).await?;
            r.bytes().await
        };
        match tokio::time::timeout(left, get).await {
            Ok(Ok(b)) => Ok(Some(b)),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// Where in a prompt earlier requests of its conversation committed states
/// (byte offsets, longest first): its end; each message boundary followed
/// by the generation prompt (an earlier prompt's end); the end of each
/// assistant message (one that starts with the generation prompt) less the
/// template's closing (an earlier reply's end).
pub fn candidates(prompt: &Prompt, gen_prompt: &str, closing: &str) -> Vec<usize> {
    let text = prompt.text.as_str();
    let mut out = vec![text.len()];
    let mut prev = 0;
    for &b in &prompt.bounds {
        if gen_prompt.is_empty() {
            break;
        }
        if text.get(b..).is_some_and(|r| r.starts_with(gen_prompt)) {
            out.push(b + gen_prompt.len());
        }
        // An assistant message: it starts with the generation prompt.
        let message = text.get(prev..b).unwrap_or("");
        if !closing.is_empty() && message.starts_with(gen_prompt) && message.ends_with(closing) {
            out.push(b - closing.len());
        }
        prev = b;
    }
    out.retain(|&p| p > 0 && p <= text.len() && text.is_char_boundary(p));
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.dedup();
    out
}

/// The template's generation prompt and its closing of an assistant
/// message, found by rendering it (empty when it does not show them).
fn markers(t: &ChatTemplate) -> (String, String) {
    let user = [Message::new("user", "x")];
    let gen_prompt = match (t.render(&user, true), t.render(&user, false)) {
        (Ok(a), Ok(b)) => a.strip_prefix(b.as_str()).unwrap_or("").to_string(),
        _ => String::new(),
    };
    let mark = "\u{2063}m\u{2063}";
    let convo = [Message::new("user", "x"), Message::new("assistant", mark)];
    let closing = t
        .render(&convo, false)
        .ok()
        .and_then(|r| r.find(mark).map(|i| r[i + mark.len()..].to_string()))
        .unwrap_or_default();
    (gen_prompt, closing)
}

impl StateStore {
    /// Opens the store at `cfg.url` for `model` and starts its writer (on
    /// the current tokio runtime).
    pub fn open(
        cfg: &StoreConfig,
        model: Arc<Model>,
        template: &ChatTemplate,
    ) -> Result<StateStore, StoreError> {
        let url = cfg.url.as_str();
        let bad = |why: &str| StoreError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (store, prefix): (Arc<dyn ObjectStore>, String) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket (s3://BUCKET/PREFIX)"));
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                let env_endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .ok();
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e);
                }
                if cfg
                    .endpoint
                    .as_deref()
                    .or(env_endpoint.as_deref())
                    .is_some_and(|e| e.starts_with("http://"))
                {
                    b = b.with_allow_http(true);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                // A slow or down store costs hits, not minutes: one retry,
                // and connections given up quickly.
                b = b
                    .with_retry(object_store::RetryConfig {
                        max_retries: 1,
                        retry_timeout: cfg.timeout * 4,
                        ..object_store::RetryConfig::default()
                    })
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        format!("{}ms", cfg.timeout.as_millis()),
                    )
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                        format!("{}ms", cfg.timeout.as_millis() * 10),
                    );
                let s = b.build().map_err(|source| StoreError::Open {
                    url: url.to_string(),
                    source,
                })?;
                (Arc::new(s), prefix.trim_matches('/').to_string())
            } else if let Some(dir) = url.strip_prefix("file://") {
                if !dir.starts_with('/') {
                    return Err(bad("a file:// URL takes an absolute path (file:///dir)"));
                }
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                    url: url.to_string(),
                    source,
                })?;
                let s = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(
                    |source| StoreError::Open {
                        url: url.to_string(),
                        source,
                    },
                )?;
                (Arc::new(s), String::new())
            } else {
                return Err(bad("must be s3://BUCKET/PREFIX or file:///DIR"));
            };
        let model_id = state_file::model_id(&model);
        let base = [prefix.as_str(), "v1", &hex(&model_id[..8])]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let inner = Arc::new(Inner {
            store,
            base,
            model,
            model_id,
            timeout: cfg.timeout,
            counters: StoreCounters::default(),
            known: Mutex::new(HashSet::new()),
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Commit>(cfg.queue.max(1));
        let w = inner.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let key = w.state_key(&c.ns, &c.tokens);
                if let Err(e) = w.write(c).await {
                    StoreCounters::add(&w.counters.errors);
                    // Written again by a later commit of the same state.
                    lock(&w.known).remove(&key);
                    eprintln!("state store: a commit was not written: {e}");
                }
                w.counters.pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
        let (gen_prompt, closing) = markers(template);
        Ok(StateStore {
            inner,
            tx,
            fetching: Mutex::new(HashMap::new()),
            gen_prompt,
            closing,
        })
    }

    pub fn counters(&self) -> &StoreCounters {
        &self.inner.counters
    }

    /// The object store and the path prefix of this model's objects, for
    /// the response records (responses.rs).
    pub(super) fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub(super) fn record_path(&self, ns: &Namespace, id: &str) -> ObjPath {
        self.inner.path(ns, "r", id)
    }

    pub(super) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Queues the state after `text` / `tokens` for writing (from the
    /// scheduler thread: never blocks). A full queue drops it, counted.
    pub fn commit(&self, ns: &Namespace, text: &str, tokens: &[u32], snap: Arc<Snapshot>) {
        let key = self.inner.state_key(ns, tokens);
        if !self.inner.remember(key) {
            return;
        }
        let c = Commit {
            ns: ns.clone(),
            text: text.to_string(),
            tokens: tokens.to_vec(),
            snap,
        };
        self.inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(c).is_err() {
            self.inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
            StoreCounters::add(&self.inner.counters.dropped);
            lock(&self.inner.known).remove(&key);
        }
    }

    /// Read-through: when the store may hold a longer prefix state of
    /// `prompt` than the local tiers, fetches the longest it has into the
    /// memory tier. Returns the tokens restored (0: nothing).
    pub async fn read_through(
        &self,
        engine: &Engine,
        ns: &Namespace,
        prompt: &Prompt,
        max_tokens: usize,
    ) -> usize {
        let text = prompt.text.as_str();
        let have = engine.cached_prefix(text, max_tokens);
        let cands: Vec<usize> = candidates(prompt, &self.gen_prompt, &self.closing)
            .into_iter()
            .filter(|&p| p > have)
            .collect();
        if cands.is_empty() {
            return 0;
        }
        let started = Instant::now();
        let deadline = started + self.inner.timeout;
        let c = &self.inner.counters;
        let mut failed = false;
        for p in cands {
            let part = &text[..p];
            let ipath = self
                .inner
                .path(ns, "t", &hex(&self.inner.text_key(ns, part)));
            let tokens = match self.inner.get(&ipath, deadline).await {
                Ok(None) => continue,
                Ok(Some(b)) => match serde_json::from_slice::<Vec<u32>>(&b) {
                    Ok(t) if !t.is_empty() && t.len() <= max_tokens => t,
                    _ => {
                        StoreCounters::add(&c.rejected);
                        eprintln!("state store: {ipath}: not a text index, ignored");
                        continue;
                    }
                },
                Err(e) => {
                    eprintln!("state store: {ipath}: {e}");
                    failed = true;
                    break;
                }
            };
            match self.fetch(engine, ns, part, &tokens, deadline).await {
                Ok(true) => {
                    StoreCounters::add(&c.hits);
                    c.restored_tokens
                        .fetch_add(tokens.len() as u64, Ordering::Relaxed);
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    c.restore_us.fetch_add(us, Ordering::Relaxed);
                    return tokens.len();
                }
                Ok(false) => continue,
                Err(e) => {
                    eprintln!("state store: {e}");
                    failed = true;
                    break;
                }
            }
        }
        // A lookup that restored nothing is a miss, whatever the reason; a
        // store that failed or was slow is an error as well.
        StoreCounters::add(&c.misses);
        if failed {
            StoreCounters::add(&c.errors);
        }
        0
    }

    /// Fetches the state of `tokens` into the memory tier as the one after
    /// `text`: Ok(false) when it is missing or unusable (counted).
    async fn fetch(
        &self,
        engine: &Engine,
        ns: &Namespace,
        text: &str,
        tokens: &[u32],
        deadline: Instant,
    ) -> Result<bool, String> {
        let key = self.inner.state_key(ns, tokens);
        let gate = lock(&self.fetching).entry(key).or_default().clone();
        let _one = gate.lock().await;
        // Fetched meanwhile by a request that held the gate.
        let done = engine.cached_prefix(text, usize::MAX) >= text.len();
        let r = if done {
            Ok(true)
        } else {
            self.fetch_one(engine, ns, text, tokens, key, deadline)
                .await
        };
        drop(_one);
        let mut f = lock(&self.fetching);
        if Arc::strong_count(&gate) <= 2 {
            f.remove(&key);
        }
        r
    }

    async fn fetch_one(
        &self,
        engine: &Engine,
        ns: &Namespace,
        text: &str,
        tokens: &[u32],
        key: [u8; 32],
        deadline: Instant,
    ) -> Result<bool, String> {
        let path = self.inner.path(ns, "s", &hex(&key));
        let Some(bytes) = self.inner.get(&path, deadline).await? else {
            return Ok(false);
        };
        let inner = self.inner.clone();
        let want = tokens.to_vec();
        let name = path.to_string();
        let decoded = tokio::task::spawn_blocking(move || {
            let (snap, note) =
                state_file::decode_with_id(&inner.model, &inner.model_id, &bytes, &name)
                    .map_err(|e| e.to_string())?;
            match serde_json::from_str::<Note>(&note) {
                Ok(n) if n.tokens == want && snap.n_past as usize == want.len() => Ok(snap),
                _ => Err(format!(
                    "{name}: its tokens are not those its key was made from"
                )),
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        match decoded {
            Ok(snap) => {
                self.inner.remember(key);
                engine.put_restored(text, tokens, snap);
                Ok(true)
            }
            Err(e) => {
                StoreCounters::add(&self.inner.counters.rejected);
                eprintln!("state store: rejected (never used), removed: {e}");
                // Never valid under its key: removed, so that the next
                // commit of this state writes it whole (a conditional
                // create would otherwise keep the bad one).
                let del = self.inner.store.delete(&path);
                let _ = tokio::time::timeout(self.inner.timeout, del).await;
                lock(&self.inner.known).remove(&key);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_prompt_ends_and_reply_ends_longest_first() {
        let t = ChatTemplate::new(crate::chat_template::CHATML, "", "").expect("compiles");
        let (gen_prompt, closing) = markers(&t);
        assert_eq!(gen_prompt, "<|im_start|>assistant\n");
        assert_eq!(closing, "<|im_end|>\n");
        let msgs = [
            Message::new("system", "S"),
            Message::new("user", "U1"),
            Message::new("assistant", "A1"),
            Message::new("user", "U2"),
        ];
        let (text, bounds) = t.render_with_boundaries(&msgs).expect("renders");
        let prompt = Prompt { text, bounds };
        let c = candidates(&prompt, &gen_prompt, &closing);
        let turn1 = t.render(&msgs[..2], true).expect("renders");
        let reply1 = format!("{turn1}A1");
        let got: Vec<&str> = c.iter().map(|&p| &prompt.text[..p]).collect();
        assert_eq!(
            got,
            vec![prompt.text.as_str(), reply1.as_str(), turn1.as_str()]
        );
        // A raw prompt: itself only.
        let raw = Prompt {
            text: "abc".into(),
            bounds: Vec::new(),
        };
        assert_eq!(candidates(&raw, &gen_prompt, &closing), vec![3]);
    }

    #[test]
    fn namespaces_differ_per_key_and_hide_it() {
        let a = Namespace::of_key("key-a");
        assert_ne!(a, Namespace::of_key("key-b"));
        assert_eq!(a, Namespace::of_key("key-a"));
        assert!(!a.as_str().contains("key-a"));
        assert_ne!(a, Namespace::public());
    }
}
