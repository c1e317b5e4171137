//! `_native.Model`: a loaded model, its tokenizer and chat template, and the
//! one session it generates with (see the crate docs for ownership, locking
//! and the lease).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::chat_template::{ChatTemplate, Message};
use mamba_gguf::session::{Session, DEFAULT_CHUNK};
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::{state_file, Model, ModelError, SamplerConfig};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMapping};

use crate::error;
use crate::stream::{Stream, StreamSpec};

self_cell::self_cell!(
    /// A session together with the model it borrows: the cell owns the
    /// `Arc<Model>` and drops the session first.
    pub struct OwnedSession {
        owner: Arc<Model>,

        #[covariant]
        dependent: Session,
    }
);

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The session and what it has seen.
pub struct Ctx {
    cell: OwnedSession,
    /// The tokens fed since the last reset, in order; None after loading a
    /// state saved without its tokens (then every prompt continues it).
    seen: Option<Vec<u32>>,
    /// A sampled token not fed yet (a generation that stopped at its length
    /// limit leaves its last token unfed, as the CLI's does).
    pub pending: Option<u32>,
    /// A step failed midway: reset before the next prompt.
    dirty: bool,
}

impl Ctx {
    pub fn session<R>(&mut self, f: impl FnOnce(&mut Session<'_>) -> R) -> R {
        self.cell.with_dependent_mut(|_, s| f(s))
    }

    /// The logits after the last fed token.
    pub fn logits(&mut self) -> Result<&[f32], ModelError> {
        // Computed on the host first if a greedy feed left them on a GPU.
        self.session(|s| s.logits().map(|_| ()))?;
        self.cell
            .borrow_dependent()
            .host_logits()
            .ok_or_else(|| ModelError::Backend {
                what: "the logits did not reach the host".into(),
            })
    }

    pub fn chunk(&self) -> usize {
        self.cell.borrow_dependent().chunk()
    }

    pub fn feed(&mut self, ids: &[u32]) -> Result<(), ModelError> {
        let r = self.session(|s| s.feed(ids).map(|_| ()));
        match r {
            Ok(()) => {
                if let Some(seen) = &mut self.seen {
                    seen.extend_from_slice(ids);
                }
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                Err(e)
            }
        }
    }

    /// Feeds the pending token, so the state has seen everything generated.
    pub fn sync(&mut self) -> Result<(), ModelError> {
        match self.pending.take() {
            Some(id) => self.feed(&[id]),
            None => Ok(()),
        }
    }

    /// [`Ctx::sync`] for plain greedy decoding, then the greedy next token:
    /// on a GPU the choice is made there and the logits stay there
    /// ([`Session::feed_greedy`]).
    pub fn sync_greedy(&mut self) -> Result<u32, ModelError> {
        self.sync_with(|s, id| s.feed_greedy(&[id]).map(|_| ()))?;
        self.session(|s| s.greedy())
    }

    /// [`Ctx::sync`] for sampling with a top-k cut and nothing else reading
    /// the logits, then the `k` candidates ([`Session::feed_top_k`]).
    pub fn sync_top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>, ModelError> {
        self.sync_with(|s, id| s.feed_top_k(&[id], k).map(|_| ()))?;
        self.session(|s| s.top_k(k).map(<[_]>::to_vec))
    }

    /// Feeds the pending token with `feed` (a NaN in the logits is the
    /// error of the choice that reads them, not of the feed).
    fn sync_with(
        &mut self,
        feed: impl FnOnce(&mut Session<'_>, u32) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        if let Some(id) = self.pending.take() {
            match self.session(|s| feed(s, id)) {
                // A NaN is the choice's error, below; the token is in.
                Ok(_) | Err(ModelError::NanLogits { .. }) => {
                    if let Some(seen) = &mut self.seen {
                        seen.push(id);
                    }
                }
                Err(e) => {
                    self.dirty = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub fn reset(&mut self) -> Result<(), ModelError> {
        self.pending = None;
        self.seen = Some(Vec::new());
        self.session(|s| s.reset())?;
        self.dirty = false;
        Ok(())
    }

    /// The prompt tokens still to feed for `prompt`: the tail past what the
    /// state has seen when the prompt extends it (a follow-up, or a prompt
    /// after `load_state`), else all of it after a reset.
    pub fn begin(&mut self, prompt: &[u32]) -> Result<Vec<u32>, ModelError> {
        if self.dirty {
            self.reset()?;
        }
        match &self.seen {
            None => {
                self.sync()?;
                Ok(prompt.to_vec())
            }
            Some(seen) if prompt.starts_with(seen) => {
                let rest = prompt[seen.len()..].to_vec();
                // The pending token is either the next prompt token (fed
                // with the rest) or not part of this prompt at all.
                self.pending = None;
                Ok(rest)
            }
            Some(_) => {
                self.reset()?;
                Ok(prompt.to_vec())
            }
        }
    }

    /// Marks the state unusable after a failed step.
    pub fn poison(&mut self) {
        self.dirty = true;
    }
}

/// Who generates on a model now (see the crate docs).
#[derive(Default)]
pub struct Lease {
    holder: Mutex<Option<ThreadId>>,
    freed: Condvar,
}

/// The lease, held; given back when dropped.
pub struct Held {
    inner: Arc<Inner>,
}

impl Drop for Held {
    fn drop(&mut self) {
        *lock(&self.inner.lease.holder) = None;
        self.inner.lease.freed.notify_all();
    }
}

/// What a `Model` and its streams share.
pub struct Inner {
    pub model: Arc<Model>,
    pub tok: Tokenizer,
    template: Result<ChatTemplate, String>,
    pool: Option<rayon::ThreadPool>,
    pub ctx: Mutex<Ctx>,
    lease: Lease,
    pub path: String,
    pub verbose: bool,
    /// The vocabulary indexed for structured output, made on first use.
    grammars: std::sync::OnceLock<Result<mamba_gguf::constrain::Grammars, String>>,
}

impl Inner {
    /// A compiled structured-output constraint (see `start`); the
    /// vocabulary is indexed once per model, with the GIL released.
    fn constraint(
        &self,
        py: Python<'_>,
        kind: &str,
        text: &str,
    ) -> PyResult<mamba_gguf::constrain::Constraint> {
        use mamba_gguf::constrain::{Grammars, Spec};
        let spec = match kind {
            "json_object" => Spec::JsonObject,
            "json_schema" => Spec::JsonSchema(
                serde_json::from_str(text)
                    .map_err(|e| error::value(format!("the JSON schema is not JSON: {e}")))?,
            ),
            "lark" => Spec::Lark(text.to_string()),
            other => {
                return Err(error::value(format!(
                    "unknown constraint kind {other:?} (json_object, json_schema or lark)"
                )))
            }
        };
        let grammars = py.detach(|| self.grammars.get_or_init(|| Grammars::new(&self.tok)));
        let g = grammars.as_ref().map_err(|e| {
            error::value(format!(
                "structured output is not available for this vocabulary: {e}"
            ))
        })?;
        py.detach(|| g.compile(&spec))
            .map_err(|e| error::value(format!("the {kind} constraint does not compile: {e}")))
    }

    /// Runs `f` on this model's threads: its own pool when `n_threads` was
    /// given, else rayon's global one.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Takes the lease: waits (GIL released, Ctrl-C checked every 100 ms)
    /// while another thread generates; refuses at once when this thread
    /// already holds it.
    pub fn lease(self: &Arc<Self>, py: Python<'_>) -> PyResult<Held> {
        let me = std::thread::current().id();
        loop {
            let got = py.detach(|| {
                let mut h = lock(&self.lease.holder);
                if h.is_some_and(|t| t != me) {
                    h = self
                        .lease
                        .freed
                        .wait_timeout(h, Duration::from_millis(100))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                match *h {
                    None => {
                        *h = Some(me);
                        Some(true)
                    }
                    Some(t) if t == me => None,
                    Some(_) => Some(false),
                }
            });
            match got {
                Some(true) => {
                    return Ok(Held {
                        inner: self.clone(),
                    })
                }
                Some(false) => py.check_signals()?,
                None => {
                    return Err(error::other(
                        "this Model is busy: a generation started in this thread is not finished \
                         (iterate its stream to the end or call its close()); use one Model per \
                         concurrent generation",
                    ))
                }
            }
        }
    }

    /// Runs `f` on the session with the GIL released, on the model's threads.
    pub fn with_ctx<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Ctx) -> R + Send) -> R {
        py.detach(|| {
            let mut guard = lock(&self.ctx);
            let ctx: &mut Ctx = &mut guard;
            self.install(|| f(ctx))
        })
    }

    /// A token id from Python, checked against the vocabulary.
    pub fn check_id(&self, id: i64, what: &str) -> PyResult<u32> {
        let n = self.model.hp.n_vocab;
        u32::try_from(id)
            .ok()
            .filter(|&i| (i as usize) < n)
            .ok_or_else(|| {
                error::value(format!(
                    "{what}: token id {id} is out of range (vocabulary size {n})"
                ))
            })
    }

    pub fn check_ids(&self, ids: &[i64], what: &str) -> PyResult<Vec<u32>> {
        ids.iter().map(|&id| self.check_id(id, what)).collect()
    }
}

/// A note saved in our state files: the tokens the state has seen.
fn state_note(ctx: &Ctx) -> String {
    match &ctx.seen {
        Some(t) => serde_json::json!({ "tokens": t }).to_string(),
        None => String::new(),
    }
}

/// The tokens a state file's note lists (ours, or `chat`'s transcript), if
/// they agree with the state's token count.
fn note_tokens(note: &str, n_past: u64) -> Option<Vec<u32>> {
    let v: serde_json::Value = serde_json::from_str(note).ok()?;
    let t: Vec<u32> = serde_json::from_value(v.get("tokens")?.clone()).ok()?;
    (t.len() as u64 == n_past).then_some(t)
}

/// llama.cpp's string form of a metadata value (`gguf_kv_to_str`).
fn value_str(v: &gguf::Value) -> Option<String> {
    use gguf::Value as V;
    Some(match v {
        V::U8(x) => x.to_string(),
        V::I8(x) => x.to_string(),
        V::U16(x) => x.to_string(),
        V::I16(x) => x.to_string(),
        V::U32(x) => x.to_string(),
        V::I32(x) => x.to_string(),
        V::U64(x) => x.to_string(),
        V::I64(x) => x.to_string(),
        V::F32(x) => format!("{x:.6}"),
        V::F64(x) => format!("{x:.6}"),
        V::Bool(x) => x.to_string(),
        V::String(s) => s.clone(),
        V::Array(_) => return None,
    })
}

fn parse_messages(messages: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    let mut out = Vec::new();
    for (i, m) in messages.try_iter()?.enumerate() {
        let m = m?;
        let m = m.cast::<PyMapping>().map_err(|_| {
            error::value(format!(
                "messages[{i}] is not a dict with 'role' and 'content'"
            ))
        })?;
        let field = |key: &str, optional: bool| -> PyResult<String> {
            let v = m.get_item(key).ok();
            match v {
                Some(v) if v.is_none() && optional => Ok(String::new()),
                Some(v) => v.extract::<String>().map_err(|_| {
                    error::value(format!(
                        "messages[{i}]['{key}'] must be a string (content parts are not supported)"
                    ))
                }),
                None => Err(error::value(format!("messages[{i}] has no '{key}'"))),
            }
        };
        out.push(Message::new(field("role", false)?, field("content", true)?));
    }
    if out.is_empty() {
        return Err(error::value("messages is empty"));
    }
    Ok(out)
}

fn default_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn finite(name: &str, v: f32) -> PyResult<f32> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(error::value(format!(
            "{name} must be a finite number, not {v}"
        )))
    }
}

/// A loaded model (`mamba_gguf.Model` wraps it).
#[pyclass(frozen, module = "mamba_gguf._native", name = "Model")]
pub struct NativeModel {
    pub inner: Arc<Inner>,
}

#[pymethods]
impl NativeModel {
    #[new]
    #[pyo3(signature = (path, n_threads=None, device="auto", prefill_chunk=None, use_mmap=true, verbose=false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        n_threads: Option<i64>,
        device: &str,
        prefill_chunk: Option<i64>,
        use_mmap: bool,
        verbose: bool,
    ) -> PyResult<Self> {
        error::require_exists(&path, "model file")?;
        if path.is_dir() {
            return Err(error::value(format!(
                "{}: is a folder; Model takes a GGUF file (from_pretrained converts a Hugging Face folder)",
                path.display()
            )));
        }
        let device: DeviceRequest = device.parse().map_err(error::model)?;
        let pool = match n_threads {
            None => None,
            Some(n) if n < 1 => {
                return Err(error::value(format!(
                    "n_threads must be at least 1, not {n}"
                )))
            }
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n as usize)
                    .build()
                    .map_err(|e| error::other(format!("cannot start {n} threads: {e}")))?,
            ),
        };
        let chunk = match prefill_chunk {
            None => DEFAULT_CHUNK,
            Some(c) if c < 1 => {
                return Err(error::value(format!(
                    "prefill_chunk must be at least 1, not {c}"
                )))
            }
            Some(c) => c as usize,
        };
        let t0 = std::time::Instant::now();
        let load = || -> PyResult<(Arc<Model>, Tokenizer, OwnedSession)> {
            let model = if use_mmap {
                Model::load_on(&path, device)
            } else {
                Model::load_with(&path, device, true)
            }
            .map_err(error::model)?;
            let tok = Tokenizer::from_model_file(model.gguf()).map_err(|e| {
                error::other(format!(
                    "cannot read the tokenizer of {}: {}",
                    path.display(),
                    error::message(&e)
                ))
            })?;
            let cell =
                OwnedSession::try_new(Arc::new(model), |m| Session::try_with_chunk(m, chunk))
                    .map_err(error::model)?;
            Ok((cell.borrow_owner().clone(), tok, cell))
        };
        let (model, tok, cell) = py.detach(|| match &pool {
            Some(p) => p.install(load),
            None => load(),
        })?;
        let template = ChatTemplate::from_tokenizer(&tok).map_err(|e| error::message(&e));
        if verbose {
            eprintln!(
                "mamba_gguf: loaded {} in {:.2} s on {} ({} threads, weights {})",
                path.display(),
                t0.elapsed().as_secs_f64(),
                model.backend().device(),
                pool.as_ref()
                    .map(|p| p.current_num_threads())
                    .unwrap_or_else(rayon::current_num_threads),
                model
                    .weight_types()
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join("+")
            );
        }
        Ok(NativeModel {
            inner: Arc::new(Inner {
                model,
                tok,
                template,
                pool,
                ctx: Mutex::new(Ctx {
                    cell,
                    seen: Some(Vec::new()),
                    pending: None,
                    dirty: false,
                }),
                lease: Lease::default(),
                path: path.display().to_string(),
                verbose,
                grammars: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Token ids of `text`; BOS first when `add_bos` and the model asks for
    /// one; `special` reads special tokens' text as those tokens.
    #[pyo3(signature = (text, add_bos=true, special=false))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &str,
        add_bos: bool,
        special: bool,
    ) -> PyResult<Vec<u32>> {
        let tok = &self.inner.tok;
        py.detach(|| tok.encode_with(text, add_bos && tok.add_bos(), special))
            .map_err(|e| error::value(error::message(&e)))
    }

    /// The bytes of `ids` (special tokens' text only with `special`).
    #[pyo3(signature = (ids, special=false))]
    fn detokenize<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<i64>,
        special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = self.inner.check_ids(&ids, "detokenize")?;
        let tok = &self.inner.tok;
        let ids: Vec<u32> = ids
            .into_iter()
            .filter(|&i| special || !tok.is_special(i))
            .collect();
        Ok(PyBytes::new(py, &tok.decode_bytes(&ids)))
    }

    /// The text of one token, invalid UTF-8 as `<0xAB>` escapes.
    fn token_piece(&self, id: i64) -> PyResult<String> {
        let id = self.inner.check_id(id, "token_piece")?;
        Ok(self.inner.tok.token_piece(id))
    }

    /// The raw bytes of one token.
    fn token_bytes<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyBytes>> {
        let id = self.inner.check_id(id, "token_bytes")?;
        Ok(PyBytes::new(py, &self.inner.tok.token_bytes(id)))
    }

    fn n_vocab(&self) -> usize {
        self.inner.model.hp.n_vocab
    }

    /// `mamba.context_length` (advisory: a Mamba's state does not grow).
    fn n_ctx(&self) -> u64 {
        self.inner
            .model
            .gguf()
            .get_u64("mamba.context_length")
            .unwrap_or(0)
    }

    /// The GGUF's metadata, arrays left out, values as strings (as
    /// llama-cpp-python's `Llama.metadata`).
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.model.gguf().metadata() {
            if let Some(s) = value_str(v) {
                d.set_item(k, s)?;
            }
        }
        Ok(d)
    }

    #[getter]
    fn eos_ids(&self) -> Vec<u32> {
        self.inner.tok.eos_ids().to_vec()
    }

    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.inner.tok.bos_id()
    }

    #[getter]
    fn add_bos(&self) -> bool {
        self.inner.tok.add_bos()
    }

    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.inner.tok.chat_template().map(str::to_string)
    }

    #[getter]
    fn path(&self) -> String {
        self.inner.path.clone()
    }

    #[getter]
    fn device(&self) -> String {
        self.inner.model.backend().device()
    }

    #[getter]
    fn name(&self) -> String {
        let g = self.inner.model.gguf();
        g.get_str("general.name")
            .map(str::to_string)
            .unwrap_or_else(|_| self.inner.path.clone())
    }

    /// Tokens the state has seen (the last generated one may be pending).
    fn n_past(&self, py: Python<'_>) -> u64 {
        self.inner
            .with_ctx(py, |c| c.cell.borrow_dependent().n_past())
    }

    /// The conversation rendered with the model's chat template (ChatML when
    /// the file has none).
    #[pyo3(signature = (messages, add_generation_prompt=true))]
    fn render_chat(
        &self,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
    ) -> PyResult<String> {
        let msgs = parse_messages(messages)?;
        let t = self
            .inner
            .template
            .as_ref()
            .map_err(|e| error::other(e.clone()))?;
        t.render(&msgs, add_generation_prompt)
            .map_err(error::template)
    }

    /// Starts a generation after `prompt` (token ids). `max_tokens` None or
    /// <= 0: until end of sequence or `n_ctx()`. `repeat_last_n` -1: the
    /// whole history. `eos_ids` None: the tokenizer's end-of-sequence and
    /// end-of-turn ids.
    ///
    /// `constraint`: structured output, `("json_object", "")`,
    /// `("json_schema", SCHEMA_JSON)` or `("lark", GRAMMAR)` (llguidance, as
    /// the server's `response_format` and `grammar`); the output cannot leave
    /// it.
    #[pyo3(signature = (prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n=64, frequency_penalty=0.0, presence_penalty=0.0, logit_bias=Vec::new(), seed=None, stop=Vec::new(), logprobs=None, eos_ids=None, constraint=None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        prompt: Vec<i64>,
        max_tokens: Option<i64>,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: i64,
        frequency_penalty: f32,
        presence_penalty: f32,
        logit_bias: Vec<(i64, f32)>,
        seed: Option<u64>,
        stop: Vec<String>,
        logprobs: Option<i64>,
        eos_ids: Option<Vec<i64>>,
        constraint: Option<(String, String)>,
    ) -> PyResult<Stream> {
        let inner = &self.inner;
        if prompt.is_empty() {
            return Err(error::value("the prompt is empty (no tokens)"));
        }
        let prompt = inner.check_ids(&prompt, "prompt")?;
        let n_vocab = inner.model.hp.n_vocab;
        if finite("temperature", temperature)? < 0.0 {
            return Err(error::value(format!(
                "temperature must be >= 0, not {temperature}"
            )));
        }
        let top_k = usize::try_from(top_k)
            .map_err(|_| error::value(format!("top_k must be >= 0, not {top_k}")))?;
        for (name, v) in [("top_p", top_p), ("min_p", min_p)] {
            if !(0.0..=1.0).contains(&finite(name, v)?) {
                return Err(error::value(format!("{name} must be in [0, 1], not {v}")));
            }
        }
        if finite("repeat_penalty", repeat_penalty)? <= 0.0 {
            return Err(error::value(format!(
                "repeat_penalty must be > 0, not {repeat_penalty}"
            )));
        }
        finite("frequency_penalty", frequency_penalty)?;
        finite("presence_penalty", presence_penalty)?;
        let repeat_last_n = match repeat_last_n {
            -1 => usize::MAX,
            n => usize::try_from(n).map_err(|_| {
                error::value(format!("repeat_last_n must be >= 0 or -1 (all), not {n}"))
            })?,
        };
        let mut bias = Vec::with_capacity(logit_bias.len());
        for (id, b) in logit_bias {
            let id = inner.check_id(id, "logit_bias")?;
            bias.push((id, finite("a logit_bias value", b)?));
        }
        if stop.iter().any(String::is_empty) {
            return Err(error::value("stop strings must not be empty"));
        }
        let logprobs = match logprobs {
            None => None,
            Some(k) if k < 0 || k as usize > n_vocab => {
                return Err(error::value(format!(
                    "logprobs must be in 0..={n_vocab}, not {k}"
                )))
            }
            Some(k) => Some(k as usize),
        };
        let eos = match eos_ids {
            None => inner.tok.eos_ids().to_vec(),
            Some(ids) => inner.check_ids(&ids, "eos_token_id")?,
        };
        let ctx_len = usize::try_from(self.n_ctx()).unwrap_or(usize::MAX);
        let max_tokens = match max_tokens {
            Some(n) if n > 0 => n as usize,
            _ => ctx_len.saturating_sub(prompt.len()).max(1),
        };
        let cfg = SamplerConfig {
            temp: temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            frequency_penalty,
            presence_penalty,
            logit_bias: bias,
            seed: seed.unwrap_or_else(default_seed),
        };
        let constraint = match constraint {
            None => None,
            Some((kind, text)) => Some(inner.constraint(py, &kind, &text)?),
        };
        let held = inner.lease(py)?;
        Stream::begin(
            py,
            held,
            inner.clone(),
            StreamSpec {
                prompt,
                cfg,
                stop,
                eos,
                max_tokens,
                logprobs,
                constraint,
            },
        )
    }

    /// The state (and the tokens it has seen) as the bytes of a state file.
    fn save_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let _held = self.inner.lease(py)?;
        let model = &self.inner.model;
        let bytes = self.inner.with_ctx(py, |c| -> PyResult<Vec<u8>> {
            c.sync().map_err(error::model)?;
            let note = state_note(c);
            let snap = c.session(|s| s.snapshot()).map_err(error::model)?;
            Ok(state_file::encode(model, &snap, &note))
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Restores a state from `save_state`'s bytes (of this same model).
    fn load_state(&self, py: Python<'_>, state: &[u8]) -> PyResult<()> {
        let _held = self.inner.lease(py)?;
        let model = &self.inner.model;
        let state = state.to_vec();
        self.inner.with_ctx(py, move |c| -> PyResult<()> {
            let (snap, note) =
                state_file::decode(model, &state, "the state bytes").map_err(error::state)?;
            c.session(|s| s.restore(&snap)).map_err(error::model)?;
            c.seen = note_tokens(&note, snap.n_past);
            c.pending = None;
            c.dirty = false;
            Ok(())
        })
    }

    /// Saves the state to a state file (`mamba-gguf run --load-state` reads it).
    fn save_state_file(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let _held = self.inner.lease(py)?;
        self.inner.with_ctx(py, |c| -> PyResult<()> {
            c.sync().map_err(error::model)?;
            let note = state_note(c);
            let r = c.session(|s| state_file::save_with_note(&path, s, &note));
            r.map_err(error::state)
        })
    }

    /// Loads a state file (ours, or the CLI's `--save-state` / chat's `/save`).
    fn load_state_file(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        error::require_exists(&path, "state file")?;
        let _held = self.inner.lease(py)?;
        self.inner.with_ctx(py, |c| -> PyResult<()> {
            let note = c
                .session(|s| state_file::load_with_note(&path, s))
                .map_err(error::state)?;
            let n_past = c.cell.borrow_dependent().n_past();
            c.seen = note_tokens(&note, n_past);
            c.pending = None;
            c.dirty = false;
            Ok(())
        })
    }

    /// Back to an empty sequence.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let _held = self.inner.lease(py)?;
        self.inner.with_ctx(py, |c| c.reset()).map_err(error::model)
    }
}
