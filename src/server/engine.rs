//! Inference off the async runtime: `parallel` worker threads, each owning a
//! [`Session`], take jobs from a bounded queue, restore the longest cached
//! prefix state, feed the rest of the prompt (snapshotting at message
//! boundaries), and stream tokens back over a channel. A job whose receiver
//! is gone (the client disconnected) stops at the next prefill chunk or token.
//!
//! Each slot runs its own forward; the slots share rayon's pool for the
//! matmuls. The model API has no multi-sequence forward yet, so concurrent
//! requests do not share one batched matmul.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::cache::PrefixCache;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::session::Session;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// A prompt as text plus the byte offsets (increasing, inside the text) where
/// the state is worth caching (the end of each chat message).
#[derive(Clone, Debug)]
pub struct Prompt {
    pub text: String,
    pub bounds: Vec<usize>,
}

/// Generation settings of one request.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub logprobs: bool,
    /// Keep generating past end-of-sequence ids (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
}

/// What a worker reports about a job.
#[derive(Clone, Debug)]
pub enum Event {
    /// A generated token and the text it completes (may be empty).
    Token {
        /// None for text held back by the decoder and flushed at the end.
        id: Option<u32>,
        text: String,
        logprob: Option<f32>,
    },
    /// Generation ended.
    Done {
        finish_reason: &'static str,
        usage: Usage,
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

/// One request for a worker.
pub struct Job {
    pub prompt: Prompt,
    pub params: GenParams,
    pub tx: UnboundedSender<Event>,
    pub deadline: Instant,
}

/// Engine limits.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub parallel: usize,
    pub queue: usize,
    pub cache_bytes: usize,
    pub max_prompt_tokens: usize,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    cv: Condvar,
    cache: Mutex<PrefixCache>,
    shutdown: AtomicBool,
    busy: AtomicUsize,
    cfg: EngineConfig,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue was full.
#[derive(Debug)]
pub struct Busy;

/// The worker pool. Dropping it stops the workers after their current job.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Engine {
    pub fn start(model: Arc<Model>, tok: Arc<Tokenizer>, cfg: EngineConfig) -> Engine {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            cache: Mutex::new(PrefixCache::new(cfg.cache_bytes)),
            shutdown: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            cfg: cfg.clone(),
        });
        let threads = (0..cfg.parallel.max(1))
            .map(|i| {
                let (shared, model, tok) = (shared.clone(), model.clone(), tok.clone());
                std::thread::Builder::new()
                    .name(format!("slot-{i}"))
                    .spawn(move || worker(&shared, &model, &tok))
            })
            .filter_map(|t| t.ok())
            .collect();
        Engine { shared, threads }
    }

    /// Queues a job, or refuses it when `queue` jobs already wait.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let mut q = lock(&self.shared.queue);
        q.retain(|j| !j.tx.is_closed());
        let idle = self.threads.len()
            - self
                .shared
                .busy
                .load(Ordering::SeqCst)
                .min(self.threads.len());
        if q.len() >= self.shared.cfg.queue + idle {
            return Err(Busy);
        }
        q.push_back(job);
        drop(q);
        self.shared.cv.notify_one();
        Ok(())
    }

    /// (jobs waiting, jobs running, cache entries, cache bytes, hits, misses).
    pub fn stats(&self) -> (usize, usize, usize, usize, u64, u64) {
        let waiting = lock(&self.shared.queue).len();
        let c = lock(&self.shared.cache);
        let (h, m) = c.stats();
        (
            waiting,
            self.shared.busy.load(Ordering::SeqCst),
            c.len(),
            c.used_bytes(),
            h,
            m,
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(shared: &Shared, model: &Model, tok: &Tokenizer) {
    let mut session = Session::new(model);
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                match q.pop_front() {
                    Some(j) if j.tx.is_closed() => continue,
                    Some(j) => break j,
                    None => {
                        q = shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        shared.busy.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = run_job(shared, &mut session, tok, &job) {
            let _ = job.tx.send(e);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn err(status: u16, kind: &'static str, message: impl Into<String>) -> Event {
    Event::Error {
        status,
        kind,
        message: message.into(),
    }
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

fn log_softmax_at(logits: &[f32], id: u32) -> Option<f32> {
    let x = *logits.get(id as usize)?;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    Some((x - max) - sum.ln() as f32)
}

/// Bytes of `s` that could be the start of one of `stops` (held back).
fn partial_stop(s: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for st in stops {
        for k in (1..st.len().min(s.len() + 1)).rev() {
            if s.is_char_boundary(s.len() - k) && st.is_char_boundary(k) && s.ends_with(&st[..k]) {
                keep = keep.max(k);
                break;
            }
        }
    }
    keep
}

/// Brings `session` to the state after `prompt`: restores the longest cached
/// prefix, then tokenizes and feeds the rest piece by piece between the
/// prompt's boundaries, caching the state at each boundary and at the end.
/// `check` is called before each chunk; an event it returns aborts.
/// Returns the prompt's tokens and how many of them the cache supplied.
pub fn prefill(
    cache: &Mutex<PrefixCache>,
    session: &mut Session,
    tok: &Tokenizer,
    prompt: &Prompt,
    max_prompt: usize,
    mut check: impl FnMut() -> Option<Event>,
) -> Result<(Vec<u32>, usize), Event> {
    let text = prompt.text.as_str();
    let hit = lock(cache).restore_longest(text, max_prompt, session);
    let (mut pos, mut tokens, cached) = match hit {
        Some(h) => {
            let n = h.tokens.len();
            (h.text_len, h.tokens, n)
        }
        None => {
            session.reset();
            let bos = if tok.add_bos() { tok.bos_id() } else { None };
            (0, bos.into_iter().collect::<Vec<u32>>(), 0)
        }
    };
    let mut ends: Vec<usize> = prompt
        .bounds
        .iter()
        .copied()
        .filter(|&b| b > pos && b < text.len())
        .collect();
    if pos < text.len() || tokens.len() > cached {
        ends.push(text.len());
    }
    let mut fed = cached;
    for end in ends {
        let Some(piece) = text.get(pos..end) else {
            return Err(err(
                500,
                "server_error",
                "prompt boundary inside a character",
            ));
        };
        let ids = tok
            .encode(piece, false)
            .map_err(|e| err(400, "invalid_request_error", e.to_string()))?;
        tokens.extend_from_slice(&ids);
        if tokens.len() > max_prompt {
            return Err(err(
                400,
                "invalid_request_error",
                format!(
                    "the prompt is {}+ tokens, more than the limit of {max_prompt}",
                    tokens.len()
                ),
            ));
        }
        for c in tokens[fed..].chunks(session.chunk().max(1)) {
            if let Some(e) = check() {
                return Err(e);
            }
            session
                .feed(c)
                .map_err(|e| err(500, "server_error", e.to_string()))?;
        }
        fed = tokens.len();
        pos = end;
        if fed > 0 {
            lock(cache).insert(&text[..end], &tokens, session);
        }
    }
    if tokens.is_empty() {
        return Err(err(400, "invalid_request_error", "the prompt is empty"));
    }
    Ok((tokens, cached))
}

fn run_job(
    shared: &Shared,
    session: &mut Session,
    tok: &Tokenizer,
    job: &Job,
) -> Result<(), Event> {
    let text = job.prompt.text.as_str();
    let (tokens, cached) = prefill(
        &shared.cache,
        session,
        tok,
        &job.prompt,
        shared.cfg.max_prompt_tokens,
        || gone_or_late(job),
    )?;
    // 3. Generation.
    let p = &job.params;
    let mut sampler = Sampler::new(p.sampler.clone());
    let mut history = tokens.clone();
    let mut generated: Vec<u32> = Vec::new();
    let mut decoder = StreamDecoder::new();
    let mut out = String::new();
    let mut sent = 0usize;
    let mut pending: Option<u32> = None;
    let mut stopped_by_string = false;
    let finish = loop {
        if let Some(e) = gone_or_late(job) {
            return Err(e);
        }
        if generated.len() >= p.max_tokens {
            break "length";
        }
        if let Some(id) = pending.take() {
            session
                .feed(&[id])
                .map_err(|e| err(500, "server_error", e.to_string()))?;
        }
        let logits = session.logits();
        let id = sampler.sample(logits, &history);
        if !p.ignore_eos && tok.eos_ids().contains(&id) {
            break "stop";
        }
        let logprob = if p.logprobs {
            log_softmax_at(logits, id)
        } else {
            None
        };
        history.push(id);
        generated.push(id);
        pending = Some(id);
        out.push_str(&decoder.push(tok, id));
        // Stop strings: cut at the first, hold back a possible start of one.
        let mut visible = out.len();
        if !p.stop.is_empty() {
            let found = p.stop.iter().filter_map(|s| out.find(s.as_str())).min();
            if let Some(i) = found {
                visible = i.max(sent);
                stopped_by_string = true;
            } else {
                visible = out.len() - partial_stop(&out, &p.stop);
            }
        }
        let piece = out.get(sent..visible).unwrap_or("").to_string();
        sent = visible.max(sent);
        if job
            .tx
            .send(Event::Token {
                id: Some(id),
                text: piece,
                logprob,
            })
            .is_err()
        {
            return Err(err(499, "client_closed", "client disconnected"));
        }
        if stopped_by_string {
            break "stop";
        }
    };
    if !stopped_by_string {
        let rest = decoder.flush();
        out.push_str(&rest);
        if sent < out.len() {
            let _ = job.tx.send(Event::Token {
                id: None,
                text: out[sent..].to_string(),
                logprob: None,
            });
        }
    }
    // 4. Cache the state after the reply, so the next chat turn (which repeats
    //    it) starts there. The last token of a length-limited reply is fed
    //    first. This happens before the client gets its final event, so that
    //    a follow-up sent at once (maybe to another slot) finds the entry.
    if !stopped_by_string && !generated.is_empty() && shared.cfg.cache_bytes > 0 {
        let fed_all = match pending.take() {
            Some(id) => session.feed(&[id]).is_ok(),
            None => true,
        };
        if fed_all {
            let mut all = tokens.clone();
            all.extend_from_slice(&generated);
            let key = format!("{text}{out}");
            lock(&shared.cache).insert(&key, &all, session);
        }
    }
    let usage = Usage {
        prompt_tokens: tokens.len(),
        completion_tokens: generated.len(),
        cached_tokens: cached,
    };
    let _ = job.tx.send(Event::Done {
        finish_reason: finish,
        usage,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::partial_stop;

    #[test]
    fn held_back_stop_prefixes() {
        let stops = vec!["</end>".to_string(), "\n\n".to_string()];
        assert_eq!(partial_stop("abc</e", &stops), 3);
        assert_eq!(partial_stop("abc\n", &stops), 1);
        assert_eq!(partial_stop("abc", &stops), 0);
        assert_eq!(partial_stop("é", &["é!".to_string()]), 2);
    }
}
