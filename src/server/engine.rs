//! Inference off the async runtime: one scheduler thread runs up to
//! `parallel` requests ("slots") at once and steps all of them that are
//! decoding through ONE batched forward per step
//! ([`BatchDecoder`] / `Model::forward_batch`): each projection and the LM
//! head is one matmul over the decoding sequences' tokens, so a step reads the
//! weights once for all of them, while the conv and scan use each slot's own
//! state. Results are bit for bit those of running each request alone.
//!
//! Each slot owns a [`Session`] (its state and a prefill scratch). A loop
//! iteration of the scheduler:
//! 1. admits queued jobs into free slots (a bounded queue; `submit` refuses
//!    beyond it, which the HTTP layer answers with 429), and frees at once
//!    any slot whose client has gone (receiver dropped) or whose deadline
//!    has passed;
//! 2. feeds every decoding slot's last sampled token in one batched step,
//!    then samples each slot's next token with its own sampler (seed,
//!    penalties), applies its stop strings / EOS / max_tokens, and streams
//!    the token (with its logprob when asked);
//! 3. feeds ONE prefill chunk (`Session::chunk` tokens) of one slot that is
//!    still reading its prompt, round robin, so a long prompt advances one
//!    chunk per decode step instead of stalling the others for its length.
//!
//! A prompt first restores the longest cached prefix state ([`PrefixCache`]),
//! then is tokenized and fed piece by piece between its message boundaries,
//! the state cached at each boundary. After a reply, the state after the
//! reply is cached before the final event is sent (a length-limited reply's
//! last token is fed first, in the next batched step), so a follow-up sent at
//! once finds it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::{Finished, Metrics};
use super::store::{Namespace, StateStore};
use crate::constrain::Constraint;
use crate::generate::{log_probs, partial_stop, Next, Sampling};
use crate::model::Model;
use crate::prefill::PrefillError;
pub use crate::prefill::{prefill, PrefillRun, Prompt};
use crate::prefix_cache::PrefixCache;
use crate::sampler::{Sampler, SamplerConfig};
use crate::session::{BatchDecoder, Session, SERVE_CHUNK};
use crate::tokenizer::Tokenizer;

/// Generation settings of one request.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Log-probabilities to report: `Some(k)`, the chosen token's and the
    /// `k` most likely tokens' (of the model's distribution at that step).
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-sequence ids (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
    /// Continuations of the one prompt (OpenAI's `n`, at most the slots):
    /// the prompt is prefilled once and its state forked into `n` slots
    /// that decode in the same batched steps, choice `i` sampling with
    /// seed + i.
    pub n: usize,
    /// The grammar the output must follow (`response_format`, `grammar`).
    pub constraint: Option<Constraint>,
}

/// How a prompt is given and reported beyond [`Job`]'s text: OpenAI's
/// completions API takes token ids as a prompt and can `echo` it.
#[derive(Clone, Debug, Default)]
pub struct PromptOptions {
    /// The prompt as token ids, fed as given (no BOS added); the job's
    /// prompt text is then only their decoding, for the record. Such a
    /// prompt neither reads nor fills the prompt cache: its ids need not be
    /// the tokenization of any text the cache is keyed by.
    pub ids: Option<Vec<u32>>,
    /// Send the prompt's own tokens as [`Event::Token`]s (to every choice)
    /// before the generated ones (OpenAI's `echo`). When the job asks for
    /// logprobs, each carries its log-probability given the tokens before
    /// it and the job's top k, computed as `perplexity` does (every
    /// position's logits of one chunked forward); the first token has none.
    /// The prompt is then read from its start, never from the prompt cache.
    pub echo: bool,
}

/// What the scheduler reports about a job.
#[derive(Clone, Debug)]
pub enum Event {
    /// The job's prompt is read (sent once, before its first token): how
    /// many tokens it has and how many of them the prompt cache supplied.
    Prompt {
        prompt_tokens: usize,
        cached_tokens: usize,
    },
    /// A generated token of choice `index` and the text it completes (may
    /// be empty).
    Token {
        index: usize,
        /// None for text held back by the decoder and flushed at the end.
        id: Option<u32>,
        text: String,
        logprob: Option<f32>,
        /// The most likely tokens and their log-probabilities, best first
        /// (as many as asked for).
        top: Vec<(u32, f32)>,
    },
    /// Choice `index`'s generation ended (the job's, when every choice's
    /// has).
    Done {
        index: usize,
        finish_reason: &'static str,
        /// The stop string that ended the text (finish reason "stop"), if
        /// one did.
        stop_sequence: Option<String>,
        usage: Usage,
        timings: Timings,
    },
    /// The job failed; `status` is an HTTP status.
    Error {
        status: u16,
        kind: &'static str,
        message: String,
    },
}

/// Token counts of a finished job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose state came from the cache.
    pub cached_tokens: usize,
}

/// Where a request's time went (llama.cpp's `timings`): prompt tokens
/// read (cached ones not counted) and generated, and the time for each.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
}

/// One request for the scheduler.
pub struct Job {
    pub prompt: Prompt,
    pub params: GenParams,
    pub tx: UnboundedSender<Event>,
    pub deadline: Instant,
    /// With a state store (`--state-store`): the namespace the states at the
    /// end of this job's prompt and reply are committed under. None: they
    /// are not committed.
    pub store: Option<Namespace>,
}

/// Engine limits.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub parallel: usize,
    pub queue: usize,
    pub cache_bytes: usize,
    pub max_prompt_tokens: usize,
    /// Keep each slot's state after a request in a form the slot API can
    /// save (llama.cpp's `--slot-save-path`): a reply's last token is fed
    /// even when the prompt cache is off.
    pub keep_slots: bool,
}

/// What a slot's state has seen after its last request: the text and the
/// tokens (prompt and reply), as a prompt-cache entry would hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotHeld {
    pub text: String,
    pub tokens: Vec<u32>,
}

/// An operation of llama.cpp's slot API (`POST /slots/{id}?action=...`).
/// It waits until the slot has no request.
pub enum SlotOp {
    /// The slot's state and what it has seen.
    Save,
    /// Put a state into the slot and into the prompt cache, so a request
    /// whose prompt starts with `held.text` continues from it.
    Restore {
        held: SlotHeld,
        snap: crate::session::Snapshot,
    },
    /// Reset the slot's state.
    Erase,
}

/// What a slot operation did.
pub enum SlotReply {
    Saved {
        held: SlotHeld,
        snap: crate::session::Snapshot,
    },
    Restored {
        tokens: usize,
    },
    Erased {
        tokens: usize,
    },
}

/// Why a slot operation failed (an HTTP status and a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotError {
    pub status: u16,
    pub message: String,
}

/// A slot operation waiting for the scheduler.
struct Control {
    slot: usize,
    op: SlotOp,
    reply: tokio::sync::oneshot::Sender<Result<SlotReply, SlotError>>,
}

/// One slot as `GET /slots` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotInfo {
    pub id: usize,
    pub is_processing: bool,
    /// Tokens the slot's state has seen after its last request, when it is
    /// one the slot API can save.
    pub n_held: Option<usize>,
}

struct Shared {
    /// Jobs and when they arrived.
    queue: Mutex<VecDeque<(Job, PromptOptions, Instant)>>,
    cv: Condvar,
    cache: Mutex<PrefixCache>,
    /// The shared state store, when `--state-store` names one.
    store: std::sync::OnceLock<Arc<StateStore>>,
    /// Slot operations waiting for their slot (pushed, then the scheduler
    /// woken under the queue lock, so the wake-up is never missed).
    controls: Mutex<Vec<Control>>,
    /// Per slot, what `GET /slots` reports (kept by the scheduler).
    slot_info: Mutex<Vec<SlotInfo>>,
    shutdown: AtomicBool,
    /// Slots holding a job.
    busy: AtomicUsize,
    /// Batched decode steps run, tokens they fed, the largest batch.
    steps: AtomicU64,
    step_tokens: AtomicU64,
    max_batch: AtomicUsize,
    metrics: Metrics,
    cfg: EngineConfig,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue was full.
#[derive(Debug)]
pub struct Busy;

/// A snapshot of the engine's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Jobs waiting for a slot.
    pub waiting: usize,
    /// Slots holding a job (prefilling or decoding).
    pub running: usize,
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Batched decode steps run (one forward each).
    pub decode_steps: u64,
    /// Tokens those steps fed (sum of batch sizes).
    pub decode_tokens: u64,
    /// The most sequences one step has fed.
    pub max_batch: usize,
}

/// The scheduler. Dropping it stops the scheduler thread (jobs still running
/// are dropped; their receivers see the channel close).
pub struct Engine {
    shared: Arc<Shared>,
    slots: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Starts the scheduler thread. An error when the thread cannot be
    /// started (the OS refused it), so the caller says so and stops rather
    /// than serving requests that no scheduler would ever run.
    pub fn start(
        model: Arc<Model>,
        tok: Arc<Tokenizer>,
        cfg: EngineConfig,
    ) -> std::io::Result<Engine> {
        Self::start_on(
            std::thread::Builder::new().name("scheduler".into()),
            model,
            tok,
            cfg,
        )
    }

    fn start_on(
        builder: std::thread::Builder,
        model: Arc<Model>,
        tok: Arc<Tokenizer>,
        cfg: EngineConfig,
    ) -> std::io::Result<Engine> {
        let slots = cfg.parallel.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            cache: Mutex::new(PrefixCache::new(cfg.cache_bytes)),
            store: std::sync::OnceLock::new(),
            controls: Mutex::new(Vec::new()),
            slot_info: Mutex::new(
                (0..slots)
                    .map(|id| SlotInfo {
                        id,
                        ..SlotInfo::default()
                    })
                    .collect(),
            ),
            shutdown: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            steps: AtomicU64::new(0),
            step_tokens: AtomicU64::new(0),
            max_batch: AtomicUsize::new(0),
            metrics: Metrics::default(),
            cfg: cfg.clone(),
        });
        let sh = shared.clone();
        let thread = builder.spawn(move || Scheduler::new(&sh, &model, &tok, slots).run())?;
        Ok(Engine {
            shared,
            slots,
            thread: Some(thread),
        })
    }

    /// Queues a job, or refuses it when `queue` jobs already wait beyond the
    /// free slots.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        self.submit_with(job, PromptOptions::default())
    }

    /// [`Engine::submit`] with a prompt given as ids or echoed
    /// ([`PromptOptions`]).
    pub fn submit_with(&self, job: Job, opts: PromptOptions) -> Result<(), Busy> {
        let rejected = || {
            let f = Finished::default();
            self.shared.metrics.request("rejected", &f);
            Err(Busy)
        };
        let mut q = lock(&self.shared.queue);
        q.retain(|(j, _, _)| !j.tx.is_closed());
        let idle = self.slots - self.shared.busy.load(Ordering::SeqCst).min(self.slots);
        if q.len() >= self.shared.cfg.queue + idle {
            drop(q);
            return rejected();
        }
        q.push_back((job, opts, Instant::now()));
        drop(q);
        self.shared.cv.notify_one();
        Ok(())
    }

    /// Runs a slot operation once slot `slot` has no request (a request
    /// queued meanwhile goes to another slot or waits). The answer comes
    /// through the returned receiver; an unknown slot is an error at once.
    pub fn slot_op(
        &self,
        slot: usize,
        op: SlotOp,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<SlotReply, SlotError>>, SlotError> {
        if slot >= self.slots {
            return Err(SlotError {
                status: 400,
                message: format!(
                    "no slot {slot}: this server has {} (ids 0 to {})",
                    self.slots,
                    self.slots - 1
                ),
            });
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        lock(&self.shared.controls).push(Control { slot, op, reply });
        // Under the queue lock: the scheduler checks the controls and waits
        // while holding it, so it sees this one or is woken for it.
        let _q = lock(&self.shared.queue);
        self.shared.cv.notify_all();
        Ok(rx)
    }

    /// Every slot as `GET /slots` shows it.
    pub fn slots(&self) -> Vec<SlotInfo> {
        lock(&self.shared.slot_info).clone()
    }

    /// Replaces the (empty) prompt cache, e.g. by one with a disk tier
    /// ([`PrefixCache::with_disk`]).
    pub fn set_cache(&self, cache: PrefixCache) {
        *lock(&self.shared.cache) = cache;
    }

    /// Commits the states at the end of prompts and replies of jobs that
    /// name a namespace ([`Job::store`]) to `store` (set once).
    pub fn set_store(&self, store: Arc<StateStore>) {
        let _ = self.shared.store.set(store);
    }

    /// The shared state store, when set.
    pub fn store(&self) -> Option<&Arc<StateStore>> {
        self.shared.store.get()
    }

    /// Bytes of `text` covered by the longest prompt-cache entry (memory or
    /// disk, of at most `max_tokens` tokens) whose text is a prefix of it.
    pub fn cached_prefix(&self, text: &str, max_tokens: usize) -> usize {
        lock(&self.shared.cache).longest_prefix(text, max_tokens)
    }

    /// Puts a state read from the state store into the prompt cache.
    pub fn put_restored(&self, text: &str, tokens: &[u32], snap: crate::session::Snapshot) {
        lock(&self.shared.cache).insert_restored(text, tokens, snap);
    }

    /// The request counters (for `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The engine's counters now.
    pub fn stats(&self) -> EngineStats {
        let waiting = lock(&self.shared.queue).len();
        let c = lock(&self.shared.cache);
        let (cache_hits, cache_misses) = c.stats();
        EngineStats {
            waiting,
            running: self.shared.busy.load(Ordering::SeqCst),
            cache_entries: c.len(),
            cache_bytes: c.used_bytes(),
            cache_hits,
            cache_misses,
            decode_steps: self.shared.steps.load(Ordering::SeqCst),
            decode_tokens: self.shared.step_tokens.load(Ordering::SeqCst),
            max_batch: self.shared.max_batch.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        {
            // Under the queue lock, so the scheduler cannot miss the wake-up
            // between its check and its wait.
            let _q = lock(&self.shared.queue);
            self.shared.shutdown.store(true, Ordering::SeqCst);
        }
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl From<PrefillError> for Event {
    fn from(e: PrefillError) -> Event {
        if e.is_request_error() {
            err(400, "invalid_request_error", e.to_string())
        } else {
            err(500, "server_error", e.to_string())
        }
    }
}

fn err(status: u16, kind: &'static str, message: impl Into<String>) -> Event {
    Event::Error {
        status,
        kind,
        message: message.into(),
    }
}

/// Hands the state after `text` / `tokens` (the session's now) to the state
/// store's write-behind queue, when there is a store and the job names a
/// namespace: the memory tier's copy when it holds one, else a snapshot.
fn commit(shared: &Shared, job: &Job, session: &mut Session, text: &str, tokens: &[u32]) {
    let (Some(store), Some(ns)) = (shared.store.get(), &job.store) else {
        return;
    };
    let held = lock(&shared.cache)
        .get(text)
        .filter(|(_, t)| *t == tokens)
        .map(|(s, _)| s);
    let snap = match held {
        Some(s) => s,
        None => match session.snapshot() {
            Ok(s) => Arc::new(s),
            Err(_) => return,
        },
    };
    store.commit(ns, text, tokens, snap);
}

/// Why a job stopped early without an error to report.
fn gone_or_late(job: &Job) -> Option<Event> {
    if job.tx.is_closed() {
        return Some(err(499, "client_closed", "client disconnected"));
    }
    if Instant::now() > job.deadline {
        return Some(err(504, "timeout", "request timed out"));
    }
    None
}

/// What sampling a slot's next token reads of its logits ([`GenRun::reads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    Greedy,
    TopK(usize),
    Logits,
}

impl Reads {
    /// What a step shared by two slots must bring back (the first
    /// candidate of a top-k list is the greedy choice).
    fn and(self, other: Reads) -> Reads {
        match (self, other) {
            (Reads::Logits, _) | (_, Reads::Logits) => Reads::Logits,
            (Reads::TopK(a), Reads::TopK(b)) => Reads::TopK(a.max(b)),
            (Reads::TopK(k), Reads::Greedy) | (Reads::Greedy, Reads::TopK(k)) => Reads::TopK(k),
            (Reads::Greedy, Reads::Greedy) => Reads::Greedy,
        }
    }
}

/// A request's generation after its prompt.
struct GenRun {
    /// The prompt's tokens and how many came from the cache.
    tokens: Vec<u32>,
    cached: usize,
    /// Sampling, EOS, the penalty's history, text decoding: shared with
    /// `Generate`.
    core: Sampling,
    /// Text generated so far, and how much of it was sent.
    out: String,
    sent: usize,
    /// A sampled token the session has not seen yet (fed by the next step).
    pending: Option<u32>,
    stopped_by_string: bool,
    /// Which of the job's stop strings ended the text.
    stop_index: Option<usize>,
    /// Generation ended with this reason; the pending token is fed only to
    /// cache the state after the reply, then the job is done.
    finishing: Option<&'static str>,
    /// Which of the job's `n` choices this is.
    index: usize,
    /// The grammar's state (this choice's own), and the logits it masks.
    constraint: Option<Constraint>,
    masked: Vec<f32>,
    /// What the session has seen when the job ended cleanly (every token
    /// fed, no stop string cut the text): the slot API can save it.
    held: Option<SlotHeld>,
    /// Whether the state after the reply may be cached and held: not when
    /// the prompt was token ids (see [`PromptOptions::ids`]).
    cacheable: bool,
    /// When the job arrived, got its slot, and finished its prompt.
    received: Instant,
    admitted: Instant,
    gen_start: Instant,
}

impl GenRun {
    fn new(
        tokens: Vec<u32>,
        cached: usize,
        mut cfg: SamplerConfig,
        (index, constraint): (usize, Option<Constraint>),
        (received, admitted): (Instant, Instant),
    ) -> GenRun {
        cfg.seed = cfg.seed.wrapping_add(index as u64);
        GenRun {
            index,
            constraint,
            masked: Vec::new(),
            held: None,
            cacheable: true,
            received,
            admitted,
            gen_start: Instant::now(),
            core: Sampling::new(Sampler::new(cfg), &tokens),
            tokens,
            cached,
            out: String::new(),
            sent: 0,
            pending: None,
            stopped_by_string: false,
            stop_index: None,
            finishing: None,
        }
    }

    /// Samples the next token from the session's logits and streams it (it
    /// becomes the pending token). Some(reason) when generation ends: before
    /// a token (max_tokens reached, end of sequence) or with it (a stop
    /// string, or the max_tokens-th token, left pending and unfed).
    fn sample(
        &mut self,
        session: &mut Session,
        tok: &Tokenizer,
        job: &Job,
    ) -> Result<Option<&'static str>, Event> {
        let p = &job.params;
        if self.core.tokens().len() >= p.max_tokens {
            return Ok(Some("length"));
        }
        let failed = |e: crate::ModelError| err(500, "server_error", e.to_string());
        let eos = if p.ignore_eos { &[][..] } else { tok.eos_ids() };
        match self.reads(job, session.model().hp.n_vocab) {
            // Plain greedy: the choice is made where the logits are.
            Reads::Greedy => {
                let id = session.greedy().map_err(failed)?;
                let next = self.core.accept(id, tok, eos);
                return self.emit(next, None, Vec::new(), job);
            }
            // A top-k cut and nothing else: its candidates are all it reads.
            Reads::TopK(k) => {
                let cands = session.top_k(k).map_err(failed)?;
                let next = self.core.next_top_k(cands, tok, eos).0;
                return self.emit(next, None, Vec::new(), job);
            }
            Reads::Logits => {}
        }
        let logits = session.logits().map_err(failed)?;
        // A grammar: sample from the logits it allows (the reported
        // logprobs stay the model's own distribution).
        let next = match self.constraint.as_mut() {
            Some(c) => {
                if c.is_stopped() {
                    return Ok(Some("stop"));
                }
                self.masked.clear();
                self.masked.extend_from_slice(logits);
                c.mask(&mut self.masked)
                    .map_err(|e| err(500, "server_error", format!("grammar: {e}")))?;
                self.core.next(&self.masked, tok, p.ignore_eos)
            }
            None => self.core.next(logits, tok, p.ignore_eos),
        }
        .map_err(failed)?;
        let (logprob, top) = match (&next, p.logprobs) {
            (Next::Token { id, .. }, Some(k)) => log_probs(logits, *id, k),
            _ => (None, Vec::new()),
        };
        if let (Next::Token { id, .. }, Some(c)) = (&next, self.constraint.as_mut()) {
            c.consume(*id)
                .map_err(|e| err(500, "server_error", format!("grammar: {e}")))?;
        }
        self.emit(next, logprob, top, job)
    }

    /// What sampling this job's next token reads of the logits: the argmax
    /// (plain greedy), the top k (temperature with a top-k cut and no bias
    /// or penalty), or all of them (a grammar, logprobs, no top-k cut, a
    /// bias or a penalty). The first two are taken where the logits are.
    fn reads(&self, job: &Job, vocab: usize) -> Reads {
        if self.constraint.is_some() || job.params.logprobs.is_some() {
            Reads::Logits
        } else if self.core.is_plain_greedy() {
            Reads::Greedy
        } else if let Some(k) = self.core.device_top_k(vocab) {
            Reads::TopK(k)
        } else {
            Reads::Logits
        }
    }

    /// Streams a sampled token (it becomes the pending one); as
    /// [`GenRun::sample`] returns.
    fn emit(
        &mut self,
        next: Next,
        logprob: Option<f32>,
        top: Vec<(u32, f32)>,
        job: &Job,
    ) -> Result<Option<&'static str>, Event> {
        let p = &job.params;
        let Next::Token { id, piece } = next else {
            return Ok(Some("stop"));
        };
        self.pending = Some(id);
        self.out.push_str(&piece);
        // Stop strings: cut at the first, hold back a possible start of one.
        let mut visible = self.out.len();
        if !p.stop.is_empty() {
            // The earliest in the text (the first listed on a tie).
            let found = p
                .stop
                .iter()
                .enumerate()
                .filter_map(|(k, s)| self.out.find(s.as_str()).map(|i| (i, k)))
                .min();
            if let Some((i, k)) = found {
                visible = i.max(self.sent);
                self.stopped_by_string = true;
                self.stop_index = Some(k);
            } else {
                visible = self.out.len() - partial_stop(&self.out, &p.stop);
            }
        }
        let piece = self.out.get(self.sent..visible).unwrap_or("").to_string();
        self.sent = visible.max(self.sent);
        if job
            .tx
            .send(Event::Token {
                index: self.index,
                id: Some(id),
                text: piece,
                logprob,
                top,
            })
            .is_err()
        {
            return Err(err(499, "client_closed", "client disconnected"));
        }
        if self.stopped_by_string {
            return Ok(Some("stop"));
        }
        Ok((self.core.tokens().len() >= p.max_tokens).then_some("length"))
    }

    /// Whether the reply's last token is fed after generation ends, so the
    /// state covers the whole reply: for the prompt cache or the slot API.
    fn keeps_reply(&self, shared: &Shared) -> bool {
        self.cacheable
            && !self.stopped_by_string
            && !self.core.tokens().is_empty()
            && (shared.cfg.cache_bytes > 0 || shared.cfg.keep_slots)
    }

    /// Moves the job on after its session has seen every token so far
    /// (prompt done, or the pending token fed). Ok(true): it goes on (with a
    /// pending token for the next step); Ok(false): the final event was sent.
    fn advance(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        tok: &Tokenizer,
        job: &Job,
    ) -> Result<bool, Event> {
        let finish = match self.finishing.take() {
            Some(f) => f,
            None => {
                let Some(f) = self.sample(session, tok, job)? else {
                    return Ok(true);
                };
                if !self.stopped_by_string {
                    let rest = self.core.flush();
                    self.out.push_str(&rest);
                    if self.sent < self.out.len() {
                        let _ = job.tx.send(Event::Token {
                            index: self.index,
                            id: None,
                            text: self.out[self.sent..].to_string(),
                            logprob: None,
                            top: Vec::new(),
                        });
                        self.sent = self.out.len();
                    }
                }
                // Cache the state after the reply (so the next chat turn,
                // which repeats it, starts there) before the final event, so
                // that a follow-up sent at once finds it. A length-limited
                // reply's last token is fed first, by the next step.
                if self.keeps_reply(shared) && self.pending.is_some() {
                    self.finishing = Some(f);
                    return Ok(true);
                }
                f
            }
        };
        // Every token fed (none pending) and the text not cut by a stop
        // string: the state is that of the prompt text plus the reply.
        if self.cacheable && !self.stopped_by_string && self.pending.is_none() {
            let mut all = self.tokens.clone();
            all.extend_from_slice(self.core.tokens());
            let held = SlotHeld {
                text: format!("{}{}", job.prompt.text, self.out),
                tokens: all,
            };
            if shared.cfg.cache_bytes > 0 && !self.core.tokens().is_empty() {
                lock(&shared.cache)
                    .insert(&held.text, &held.tokens, session)
                    .map_err(|e| err(500, "server_error", e.to_string()))?;
                commit(shared, job, session, &held.text, &held.tokens);
            }
            self.held = Some(held);
        }
        self.pending = None;
        let now = Instant::now();
        // The prompt is counted with choice 0 only (it was read once).
        let first = self.index == 0;
        let f = Finished {
            prompt_tokens: if first { self.tokens.len() } else { 0 },
            cached_tokens: if first { self.cached } else { 0 },
            generated_tokens: self.core.tokens().len(),
            prefill: self.gen_start - self.admitted,
            decode: now - self.gen_start,
            total: now - self.received,
        };
        shared.metrics.request(finish, &f);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let _ = job.tx.send(Event::Done {
            index: self.index,
            finish_reason: finish,
            stop_sequence: self
                .stop_index
                .and_then(|k| job.params.stop.get(k).cloned()),
            usage: Usage {
                prompt_tokens: self.tokens.len(),
                completion_tokens: self.core.tokens().len(),
                cached_tokens: self.cached,
            },
            timings: Timings {
                prompt_n: self.tokens.len() - self.cached.min(self.tokens.len()),
                prompt_ms: ms(f.prefill),
                predicted_n: f.generated_tokens,
                predicted_ms: ms(f.decode),
            },
        });
        Ok(false)
    }
}

/// A token's log-probability and the top k (id, log-probability), best
/// first, as [`log_probs`] gives them.
type TokenLogprobs = (Option<f32>, Vec<(u32, f32)>);

/// A prompt read from its start without the prompt cache, one chunk per
/// step: a prompt given as token ids, or one to echo (with every position's
/// logits when the job asks for logprobs).
struct ScoreRun {
    tokens: Vec<u32>,
    /// Tokens fed.
    fed: usize,
    /// Per prompt token after the first (when logprobs are asked for): its
    /// log-probability given the tokens before it and the top k.
    scored: Vec<TokenLogprobs>,
    /// The chunk's logits, every position (`Session::feed_each`).
    rows: Vec<f32>,
    echo: bool,
    /// Whether the reply may go into the prompt cache (the prompt was text
    /// tokenized as `PrefillRun` does, not ids as given).
    cacheable: bool,
}

impl ScoreRun {
    fn start(
        session: &mut Session,
        tok: &Tokenizer,
        prompt: &Prompt,
        opts: PromptOptions,
        max_prompt: usize,
    ) -> Result<ScoreRun, PrefillError> {
        let cacheable = opts.ids.is_none();
        let tokens = match opts.ids {
            Some(ids) => ids,
            None => {
                let bos = if tok.add_bos() { tok.bos_id() } else { None };
                let mut t: Vec<u32> = bos.into_iter().collect();
                t.extend(tok.encode(&prompt.text, false)?);
                t
            }
        };
        if tokens.is_empty() {
            return Err(PrefillError::Empty);
        }
        if tokens.len() > max_prompt {
            return Err(PrefillError::TooLong {
                n: tokens.len(),
                max: max_prompt,
            });
        }
        session.reset()?;
        Ok(ScoreRun {
            tokens,
            fed: 0,
            scored: Vec::new(),
            rows: Vec::new(),
            echo: opts.echo,
            cacheable,
        })
    }

    /// Feeds one chunk (scoring each position's next token when echoing
    /// with `logprobs`); true once the whole prompt is in.
    fn step(
        &mut self,
        session: &mut Session,
        logprobs: Option<usize>,
    ) -> crate::error::Result<bool> {
        let (fed, tokens) = (self.fed, &self.tokens);
        let n = tokens.len().saturating_sub(fed).min(session.chunk().max(1));
        if n == 0 {
            return Ok(true);
        }
        let chunk = &tokens[fed..fed + n];
        match (self.echo, logprobs) {
            (true, Some(k)) => {
                let scored = &mut self.scored;
                session.feed_each(chunk, &mut self.rows, |j, row| {
                    // Row j predicts the token after position fed + j; the
                    // prompt's last row is the first generated token's.
                    if let Some(&next) = tokens.get(fed + j + 1) {
                        scored.push(log_probs(row, next, k));
                    }
                })?;
            }
            _ => {
                session.feed(chunk)?;
            }
        }
        self.fed += n;
        Ok(self.fed >= self.tokens.len())
    }

    /// Sends the prompt's tokens to choice `index` as its first tokens;
    /// false when the client is gone.
    fn send_echo(&self, job: &Job, index: usize, tok: &Tokenizer) -> bool {
        let mut dec = crate::tokenizer::StreamDecoder::new();
        for (p, &id) in self.tokens.iter().enumerate() {
            let (logprob, top) = match p.checked_sub(1).and_then(|q| self.scored.get(q)) {
                Some((lp, top)) => (*lp, top.clone()),
                None => (None, Vec::new()),
            };
            let ev = Event::Token {
                index,
                id: Some(id),
                text: dec.push(tok, id),
                logprob,
                top,
            };
            if job.tx.send(ev).is_err() {
                return false;
            }
        }
        let rest = dec.flush();
        rest.is_empty()
            || job
                .tx
                .send(Event::Token {
                    index,
                    id: None,
                    text: rest,
                    logprob: None,
                    top: Vec::new(),
                })
                .is_ok()
    }
}

/// Where a slot's job is.
enum Phase {
    Prefill(PrefillRun),
    /// A prompt read from its start: given as ids, or echoed.
    Score(Box<ScoreRun>),
    Gen(Box<GenRun>),
    /// A slot held for choice `index` of an `n > 1` job whose prompt
    /// another slot is reading; it gets that slot's state when done.
    Waiting {
        index: usize,
    },
}

struct Active {
    job: Job,
    phase: Phase,
    /// The slots holding this job's other choices (on the slot that reads
    /// the prompt; empty elsewhere and for n = 1).
    siblings: Vec<usize>,
    /// When the job arrived and when it got its slot.
    received: Instant,
    admitted: Instant,
}

/// The scheduler thread's state: the slots' sessions and jobs.
struct Scheduler<'a> {
    shared: &'a Shared,
    tok: &'a Tokenizer,
    sessions: Vec<Session<'a>>,
    jobs: Vec<Option<Active>>,
    decoder: BatchDecoder<'a>,
    /// The slot whose prefill goes next (round robin).
    next_prefill: usize,
    /// Per slot, what its state has seen after its last request, when the
    /// slot API can save it.
    held: Vec<Option<SlotHeld>>,
}

impl<'a> Scheduler<'a> {
    fn new(shared: &'a Shared, model: &'a Model, tok: &'a Tokenizer, slots: usize) -> Self {
        Scheduler {
            shared,
            tok,
            sessions: (0..slots)
                .map(|_| Session::with_chunk(model, SERVE_CHUNK))
                .collect(),
            jobs: (0..slots).map(|_| None).collect(),
            decoder: BatchDecoder::new(model, slots),
            next_prefill: 0,
            held: vec![None; slots],
        }
    }

    /// Publishes slot `i`'s state for `GET /slots`.
    fn publish(&self, i: usize) {
        if let Some(info) = lock(&self.shared.slot_info).get_mut(i) {
            info.is_processing = self.jobs[i].is_some();
            info.n_held = self.held[i].as_ref().map(|h| h.tokens.len());
        }
    }

    /// Runs the slot operations whose slot has no request; the others wait.
    fn run_controls(&mut self) {
        let ready: Vec<Control> = {
            let mut c = lock(&self.shared.controls);
            let (ready, wait) = std::mem::take(&mut *c)
                .into_iter()
                .partition(|c| self.jobs.get(c.slot).is_some_and(|j| j.is_none()));
            *c = wait;
            ready
        };
        for c in ready {
            let r = self.slot_op(c.slot, c.op);
            self.publish(c.slot);
            let _ = c.reply.send(r);
        }
    }

    fn slot_op(&mut self, i: usize, op: SlotOp) -> Result<SlotReply, SlotError> {
        let internal = |e: crate::ModelError| SlotError {
            status: 500,
            message: e.to_string(),
        };
        let session = &mut self.sessions[i];
        match op {
            SlotOp::Save => {
                let Some(held) = self.held[i].clone() else {
                    return Err(SlotError {
                        status: 409,
                        message: format!(
                            "slot {i} holds no state to save: it has served no request, or its \
                             last one ended on a stop string, an error or a disconnect (its \
                             state then covers text the reply does not show)"
                        ),
                    });
                };
                let snap = session.snapshot().map_err(internal)?;
                Ok(SlotReply::Saved { held, snap })
            }
            SlotOp::Restore { held, snap } => {
                session.restore(&snap).map_err(|e| SlotError {
                    status: 400,
                    message: format!("the state does not fit this model: {e}"),
                })?;
                if self.shared.cfg.cache_bytes > 0 {
                    lock(&self.shared.cache)
                        .insert(&held.text, &held.tokens, session)
                        .map_err(internal)?;
                }
                let tokens = held.tokens.len();
                self.held[i] = Some(held);
                Ok(SlotReply::Restored { tokens })
            }
            SlotOp::Erase => {
                let tokens = self.held[i]
                    .take()
                    .map_or(session.n_past() as usize, |h| h.tokens.len());
                session.reset().map_err(internal)?;
                Ok(SlotReply::Erased { tokens })
            }
        }
    }

    fn free(&mut self, i: usize, ev: Option<Event>) {
        if let Some(a) = self.jobs.get_mut(i).and_then(|j| j.take()) {
            self.held[i] = match &a.phase {
                Phase::Gen(g) if ev.is_none() => g.held.clone(),
                _ => None,
            };
            if let Some(ev) = ev {
                if let Event::Error { status, .. } = &ev {
                    let outcome = match status {
                        499 => "client_closed",
                        504 => "timeout",
                        _ => "error",
                    };
                    let f = Finished {
                        total: a.received.elapsed(),
                        ..Finished::default()
                    };
                    self.shared.metrics.request(outcome, &f);
                }
                let _ = a.job.tx.send(ev);
            }
            self.shared.busy.fetch_sub(1, Ordering::SeqCst);
            self.publish(i);
        }
    }

    /// Takes queued jobs into free slots; blocks while there is nothing to
    /// do. False on shutdown.
    fn admit(&mut self) -> bool {
        let sh = self.shared;
        let mut q = lock(&sh.queue);
        loop {
            if sh.shutdown.load(Ordering::SeqCst) {
                return false;
            }
            self.run_controls();
            // A slot an operation waits for takes no new job.
            let awaited: Vec<usize> = lock(&sh.controls).iter().map(|c| c.slot).collect();
            let free_slots: Vec<usize> = (0..self.jobs.len())
                .filter(|&i| self.jobs[i].is_none() && !awaited.contains(&i))
                .collect();
            let Some(&free) = free_slots.first() else {
                return true;
            };
            // A job of n choices waits for n free slots (n <= slots, checked
            // when it was parsed).
            let want = q
                .front()
                .map_or(1, |(j, _, _)| j.params.n.clamp(1, self.jobs.len()));
            if free_slots.len() < want && q.front().is_some_and(|(j, _, _)| !j.tx.is_closed()) {
                return true;
            }
            match q.pop_front() {
                Some((j, _, _)) if j.tx.is_closed() => continue,
                Some((job, opts, received)) => {
                    let admitted = Instant::now();
                    sh.busy.fetch_add(1, Ordering::SeqCst);
                    // The slot's state is about to change.
                    self.held[free] = None;
                    let session = &mut self.sessions[free];
                    let start = if opts.ids.is_some() || opts.echo {
                        ScoreRun::start(
                            session,
                            self.tok,
                            &job.prompt,
                            opts,
                            sh.cfg.max_prompt_tokens,
                        )
                        .map(|r| Phase::Score(Box::new(r)))
                    } else {
                        PrefillRun::start(
                            &sh.cache,
                            session,
                            self.tok,
                            &job.prompt,
                            sh.cfg.max_prompt_tokens,
                        )
                        .map(Phase::Prefill)
                    };
                    match start {
                        Ok(phase) => {
                            let n = job.params.n.clamp(1, self.jobs.len());
                            let siblings: Vec<usize> = free_slots[1..n].to_vec();
                            for (k, &j) in siblings.iter().enumerate() {
                                sh.busy.fetch_add(1, Ordering::SeqCst);
                                self.held[j] = None;
                                self.jobs[j] = Some(Active {
                                    job: Job {
                                        prompt: job.prompt.clone(),
                                        params: job.params.clone(),
                                        tx: job.tx.clone(),
                                        deadline: job.deadline,
                                        store: job.store.clone(),
                                    },
                                    phase: Phase::Waiting { index: k + 1 },
                                    siblings: Vec::new(),
                                    received,
                                    admitted,
                                });
                            }
                            self.jobs[free] = Some(Active {
                                job,
                                phase,
                                siblings: siblings.clone(),
                                received,
                                admitted,
                            });
                            for s in std::iter::once(free).chain(siblings) {
                                self.publish(s);
                            }
                        }
                        Err(e) => {
                            let _ = job.tx.send(Event::from(e));
                            let f = Finished {
                                total: received.elapsed(),
                                ..Finished::default()
                            };
                            sh.metrics.request("error", &f);
                            sh.busy.fetch_sub(1, Ordering::SeqCst);
                            self.publish(free);
                        }
                    }
                }
                None if self.jobs.iter().all(|j| j.is_none()) => {
                    q = sh.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                None => return true,
            }
        }
    }

    fn run(mut self) {
        while self.admit() {
            self.drop_gone();
            self.decode_step();
            self.prefill_chunk();
        }
    }

    /// Frees the slots whose client is gone or whose deadline passed (a job
    /// only feeding its last token to cache the reply is left to finish).
    fn drop_gone(&mut self) {
        for i in 0..self.jobs.len() {
            let ev = match &self.jobs[i] {
                Some(a) if !matches!(&a.phase, Phase::Gen(g) if g.finishing.is_some()) => {
                    gone_or_late(&a.job)
                }
                _ => None,
            };
            if ev.is_some() {
                self.free(i, ev);
            }
        }
    }

    /// One batched forward over every slot with a pending token, then each
    /// of those slots samples its next token (or finishes). When none of
    /// them needs all its logits (each plain greedy, or sampling with a
    /// top-k cut alone), the device takes the ids or the candidates and the
    /// logits stay there.
    fn decode_step(&mut self) {
        let mut idx = Vec::new();
        let mut ids = Vec::new();
        // The most any slot reads: greedy < top-k (the largest k) < logits.
        let vocab = self.sessions.first().map_or(0, |s| s.model().hp.n_vocab);
        let mut reads = Reads::Greedy;
        for (i, a) in self.jobs.iter().enumerate() {
            if let Some(Active {
                phase: Phase::Gen(g),
                job,
                ..
            }) = a
            {
                if let Some(id) = g.pending {
                    idx.push(i);
                    ids.push(id);
                    reads = reads.and(g.reads(job, vocab));
                }
            }
        }
        if idx.is_empty() {
            return;
        }
        let mut refs: Vec<&mut Session<'a>> = self
            .sessions
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| idx.contains(i))
            .map(|(_, s)| s)
            .collect();
        let r = match reads {
            Reads::Greedy => self.decoder.step_greedy(&mut refs, &ids),
            Reads::TopK(k) => self.decoder.step_top_k(&mut refs, &ids, k),
            Reads::Logits => self.decoder.step(&mut refs, &ids),
        };
        drop(refs);
        let sh = self.shared;
        if let Err(e) = r {
            for &i in &idx {
                self.free(i, Some(err(500, "server_error", e.to_string())));
            }
            return;
        }
        sh.steps.fetch_add(1, Ordering::SeqCst);
        sh.step_tokens.fetch_add(idx.len() as u64, Ordering::SeqCst);
        sh.max_batch.fetch_max(idx.len(), Ordering::SeqCst);
        for &i in &idx {
            let r = match &mut self.jobs[i] {
                Some(Active {
                    job,
                    phase: Phase::Gen(g),
                    ..
                }) => {
                    g.pending = None;
                    g.advance(sh, &mut self.sessions[i], self.tok, job)
                }
                _ => continue,
            };
            match r {
                Ok(true) => {}
                Ok(false) => self.free(i, None),
                Err(ev) => self.free(i, Some(ev)),
            }
        }
    }

    /// Feeds one chunk of the next prefilling slot's prompt (round robin);
    /// a prompt fully in starts generating.
    fn prefill_chunk(&mut self) {
        let n = self.jobs.len();
        let Some(i) = (0..n).map(|k| (self.next_prefill + k) % n).find(|&i| {
            matches!(
                &self.jobs[i],
                Some(Active {
                    phase: Phase::Prefill(_) | Phase::Score(_),
                    ..
                })
            )
        }) else {
            return;
        };
        self.next_prefill = (i + 1) % n;
        let (sh, tok) = (self.shared, self.tok);
        let Some(a) = self.jobs[i].as_mut() else {
            return;
        };
        let session = &mut self.sessions[i];
        // A prompt read for echo: its tokens (and their logprobs) go to
        // every choice before the first generated token.
        let mut scored: Option<Box<ScoreRun>> = None;
        let r = match &mut a.phase {
            Phase::Prefill(run) => {
                match run.step(
                    &sh.cache,
                    session,
                    tok,
                    &a.job.prompt,
                    sh.cfg.max_prompt_tokens,
                ) {
                    Ok(false) => return,
                    Ok(true) => {
                        let run = std::mem::replace(run, PrefillRun::empty());
                        run.finish().map_err(Event::from)
                    }
                    Err(e) => Err(Event::from(e)),
                }
            }
            Phase::Score(run) => match run.step(session, a.job.params.logprobs) {
                Ok(false) => return,
                Ok(true) => {
                    let t = (run.tokens.clone(), 0);
                    if let Phase::Score(run) =
                        std::mem::replace(&mut a.phase, Phase::Waiting { index: 0 })
                    {
                        scored = Some(run);
                    }
                    Ok(t)
                }
                Err(e) => Err(err(500, "server_error", e.to_string())),
            },
            _ => return,
        };
        let siblings = std::mem::take(&mut a.siblings);
        let (tokens, cached) = match r {
            Ok(t) => t,
            Err(ev) => {
                for j in siblings {
                    self.free(j, None);
                }
                self.free(i, Some(ev));
                return;
            }
        };
        let _ = a.job.tx.send(Event::Prompt {
            prompt_tokens: tokens.len(),
            cached_tokens: cached,
        });
        // A prompt read through the prompt cache (not ids or echo) that the
        // cache did not wholly supply: its end is a commit point.
        if scored.is_none() && cached < tokens.len() {
            let text = &a.job.prompt.text;
            commit(sh, &a.job, &mut self.sessions[i], text, &tokens);
        }
        // Every choice starts from the prompt's state: forked slot to slot.
        let times = (a.received, a.admitted);
        let mut starts = vec![(i, 0usize)];
        for &j in &siblings {
            if let Some(Active {
                phase: Phase::Waiting { index },
                ..
            }) = &self.jobs[j]
            {
                starts.push((j, *index));
            }
        }
        for &(j, index) in &starts {
            if j != i {
                let (lo, hi) = self.sessions.split_at_mut(i.max(j));
                let (dst, src) = if j < i {
                    (&mut lo[j], &hi[0])
                } else {
                    (&mut hi[0], &lo[i])
                };
                if let Err(e) = dst.copy_from(src) {
                    self.free(j, Some(err(500, "server_error", e.to_string())));
                    continue;
                }
            }
            let Some(a) = self.jobs[j].as_mut() else {
                continue;
            };
            let mut g = Box::new(GenRun::new(
                tokens.clone(),
                cached,
                a.job.params.sampler.clone(),
                (index, a.job.params.constraint.clone()),
                times,
            ));
            if let Some(run) = &scored {
                g.cacheable = run.cacheable;
                if run.echo && !run.send_echo(&a.job, index, tok) {
                    self.free(j, Some(err(499, "client_closed", "client disconnected")));
                    continue;
                }
            }
            let r = g.advance(sh, &mut self.sessions[j], tok, &a.job);
            a.phase = Phase::Gen(g);
            match r {
                Ok(true) => {}
                Ok(false) => self.free(j, None),
                Err(ev) => self.free(j, Some(ev)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler thread that cannot start is an error from `start`, not an
    /// engine that answers every job with `Busy` (which the server turned
    /// into a misleading 429).
    #[test]
    fn a_scheduler_that_cannot_start_is_an_error() {
        let path = crate::llamacpp_fixture::llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
        let model = Arc::new(Model::load(path).expect("fixture model loads"));
        let tok = Arc::new(Tokenizer::from_gguf(model.gguf()).expect("tokenizer"));
        let cfg = EngineConfig {
            parallel: 1,
            queue: 1,
            cache_bytes: 0,
            max_prompt_tokens: 1000,
            keep_slots: false,
        };
        // A stack no machine can map: the OS refuses the thread.
        let refused = std::thread::Builder::new().stack_size(1 << 46);
        assert!(Engine::start_on(refused, model.clone(), tok.clone(), cfg.clone()).is_err());
        assert!(Engine::start(model, tok, cfg).is_ok());
    }

    #[test]
    fn top_log_probs_are_the_largest_best_first() {
        let logits = [1.0f32, 3.0, 3.0, -2.0, 0.5];
        let (chosen, top) = log_probs(&logits, 4, 3);
        let lse = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln() as f32;
        assert!((chosen.unwrap() - (0.5 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 2, 0], "ties: lower id first");
        assert!((top[0].1 - (3.0 - lse)).abs() < 1e-6);
        assert!(log_probs(&logits, 0, 0).1.is_empty());
        assert_eq!(log_probs(&logits, 0, 9).1.len(), 5);
    }

    #[test]
    fn held_back_stop_prefixes() {
        let stops = vec!["</end>".to_string(), "\n\n".to_string()];
        assert_eq!(partial_stop("abc</e", &stops), 3);
        assert_eq!(partial_stop("abc\n", &stops), 1);
        assert_eq!(partial_stop("abc", &stops), 0);
        assert_eq!(partial_stop("é", &["é!".to_string()]), 2);
    }
}
