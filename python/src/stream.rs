//! `_native.Stream`: one generation, an iterator of token events.
//!
//! The decode loop is the library's: [`Sampling`] samples (with the one
//! sampler and its penalties), ends at end-of-sequence ids and decodes text
//! incrementally; [`StopStrings`] applies stop strings, [`log_probs`] gives
//! log-probabilities. Like the CLI's `Generate`, the prompt is fed first (here
//! one prefill chunk per step, so Ctrl-C can stop a long prompt), then each
//! step feeds the previous token and samples the next; a generation that
//! reaches `max_tokens` leaves its last token unfed (pending in the model's
//! context, fed if a later prompt continues it or a state is saved).
//!
//! Each `__next__` yields `(text, id, logprob, top)`: the text that became
//! visible with token `id` (stop strings and incomplete characters are held
//! back), its log-probability and the `top` most likely `(id, logprob)`
//! when logprobs were asked for. A last event with `id` None carries text
//! held back until the end.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mamba_gguf::generate::{log_probs, Next, Sampling, StopStrings};
use mamba_gguf::{Sampler, SamplerConfig};
use pyo3::prelude::*;

use crate::error;
use crate::model::{lock, Held, Inner};

/// One yielded event: text, token id, its logprob, the top (id, logprob).
pub type Event = (String, Option<u32>, Option<f32>, Vec<(u32, f32)>);

/// What a generation is asked to do (checked by `Model.start`).
pub struct StreamSpec {
    pub prompt: Vec<u32>,
    pub cfg: SamplerConfig,
    pub stop: Vec<String>,
    pub eos: Vec<u32>,
    pub max_tokens: usize,
    pub logprobs: Option<usize>,
    /// Structured output: the tokens the output may take next.
    pub constraint: Option<mamba_gguf::constrain::Constraint>,
}

struct State {
    /// The model's lease, while the generation runs.
    held: Option<Held>,
    /// Prompt tokens still to feed (past a prefix the state had seen).
    to_feed: Vec<u32>,
    fed: usize,
    prompt_len: usize,
    reused: usize,
    core: Sampling,
    stops: StopStrings,
    eos: Vec<u32>,
    max_tokens: usize,
    logprobs: Option<usize>,
    /// The grammar's state and the logits it masks (the reported logprobs
    /// stay the model's own distribution, as the server's).
    constraint: Option<mamba_gguf::constrain::Constraint>,
    masked: Vec<f32>,
    finish: Option<&'static str>,
    /// The end-of-sequence id that ended the generation.
    stop_id: Option<u32>,
    /// The final event was given; the iterator is exhausted.
    done: bool,
    t_start: Instant,
    t_first: Option<Instant>,
}

enum Step {
    Event(Event),
    More,
    Done,
}

/// A running generation (`Model.start`).
#[pyclass(frozen, module = "mamba_gguf._native")]
pub struct Stream {
    inner: Arc<Inner>,
    st: Mutex<State>,
}

impl Stream {
    pub fn begin(
        py: Python<'_>,
        held: Held,
        inner: Arc<Inner>,
        spec: StreamSpec,
    ) -> PyResult<Stream> {
        let prompt = spec.prompt;
        let to_feed = inner
            .with_ctx(py, |c| c.begin(&prompt))
            .map_err(error::model)?;
        let state = State {
            held: Some(held),
            reused: prompt.len() - to_feed.len(),
            to_feed,
            fed: 0,
            prompt_len: prompt.len(),
            core: Sampling::new(Sampler::new(spec.cfg), &prompt),
            stops: StopStrings::new(spec.stop),
            eos: spec.eos,
            max_tokens: spec.max_tokens,
            logprobs: spec.logprobs,
            constraint: spec.constraint,
            masked: Vec::new(),
            finish: None,
            stop_id: None,
            done: false,
            t_start: Instant::now(),
            t_first: None,
        };
        Ok(Stream {
            inner,
            st: Mutex::new(state),
        })
    }

    /// Ends the generation: the lease goes back, the iterator is exhausted.
    fn end(&self, st: &mut State, reason: &'static str) {
        st.done = true;
        st.finish.get_or_insert(reason);
        st.held = None;
    }

    fn step(&self, st: &mut State) -> PyResult<Step> {
        if st.done {
            return Ok(Step::Done);
        }
        let inner = &*self.inner;
        if let Some(reason) = st.finish {
            // Text held back by the decoder and the stop strings comes out
            // now, unless a stop string ended the generation.
            let rest = if st.stops.stopped() {
                String::new()
            } else {
                let tail = st.core.flush();
                let mut t = st.stops.push(&tail);
                t.push_str(&st.stops.finish());
                t
            };
            self.end(st, reason);
            if inner.verbose {
                let n = st.core.tokens().len();
                let decode = st.t_first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                eprintln!(
                    "mamba_gguf: prompt {} tokens ({} reused), generated {} tokens, {:.2} tok/s, {:.2} s in all; stop: {reason}",
                    st.prompt_len,
                    st.reused,
                    n,
                    n as f64 / decode.max(1e-9),
                    st.t_start.elapsed().as_secs_f64()
                );
            }
            return Ok(if rest.is_empty() {
                Step::Done
            } else {
                Step::Event((rest, None, None, Vec::new()))
            });
        }
        let mut guard = lock(&inner.ctx);
        let ctx: &mut crate::model::Ctx = &mut guard;
        if st.fed < st.to_feed.len() {
            let end = (st.fed + ctx.chunk()).min(st.to_feed.len());
            let piece = &st.to_feed[st.fed..end];
            inner.install(|| ctx.feed(piece)).map_err(error::model)?;
            st.fed = end;
            return Ok(Step::More);
        }
        if st.core.tokens().len() >= st.max_tokens {
            st.finish = Some("length");
            return Ok(Step::More);
        }
        if st.constraint.as_ref().is_some_and(|c| c.is_stopped()) {
            st.finish = Some("stop");
            return Ok(Step::More);
        }
        st.t_first.get_or_insert_with(Instant::now);
        let (core, eos, k) = (&mut st.core, &st.eos, st.logprobs);
        let (constraint, masked) = (&mut st.constraint, &mut st.masked);
        // Plain greedy, or a top-k cut with nothing else reading the
        // logits: what it needs is taken where they are (on a GPU).
        let only = constraint.is_none() && k.is_none();
        let vocab = inner.model.hp.n_vocab;
        let top_k = core.device_top_k(vocab).filter(|_| only);
        let plain = only && core.is_plain_greedy();
        let (next, lp, top) = inner.install(|| -> PyResult<_> {
            if plain {
                let id = ctx.sync_greedy().map_err(error::model)?;
                return Ok(((core.accept(id, &inner.tok, eos), id), None, Vec::new()));
            }
            if let Some(k) = top_k {
                let cands = ctx.sync_top_k(k).map_err(error::model)?;
                return Ok((core.next_top_k(&cands, &inner.tok, eos), None, Vec::new()));
            }
            ctx.sync().map_err(error::model)?;
            let logits = ctx.logits().map_err(error::model)?;
            let allowed = match constraint.as_mut() {
                Some(c) => {
                    masked.clear();
                    masked.extend_from_slice(logits);
                    c.mask(masked)
                        .map_err(|e| error::other(format!("structured output: {e}")))?;
                    &masked[..]
                }
                None => logits,
            };
            let (next, id) = core
                .next_with_eos(allowed, &inner.tok, eos)
                .map_err(error::model)?;
            if let (Some(c), Next::Token { .. }) = (constraint.as_mut(), &next) {
                c.consume(id)
                    .map_err(|e| error::other(format!("structured output: {e}")))?;
            }
            let (lp, top) = match k {
                Some(k) => log_probs(logits, id, k),
                None => (None, Vec::new()),
            };
            Ok(((next, id), lp, top))
        })?;
        match next {
            (Next::Eos, id) => {
                st.stop_id = Some(id);
                st.finish = Some("stop");
                Ok(Step::More)
            }
            (Next::Token { id, piece }, _) => {
                ctx.pending = Some(id);
                let text = st.stops.push(&piece);
                if st.stops.stopped() {
                    st.finish = Some("stop");
                } else if st.core.tokens().len() >= st.max_tokens {
                    st.finish = Some("length");
                }
                Ok(Step::Event((text, Some(id), lp, top)))
            }
        }
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next event; between steps Ctrl-C raises KeyboardInterrupt (and
    /// ends the generation).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        loop {
            if let Err(e) = py.check_signals() {
                let mut st = lock(&self.st);
                self.end(&mut st, "interrupted");
                return Err(e);
            }
            let r = py.detach(|| {
                let mut st = lock(&self.st);
                let r = self.step(&mut st);
                if r.is_err() {
                    lock(&self.inner.ctx).poison();
                    self.end(&mut st, "error");
                }
                r
            })?;
            match r {
                Step::Event(e) => return Ok(Some(e)),
                Step::More => continue,
                Step::Done => return Ok(None),
            }
        }
    }

    /// Ends the generation now (the model is free for another one).
    fn close(&self) {
        let mut st = lock(&self.st);
        if !st.done {
            self.end(&mut st, "closed");
        }
    }

    /// "stop" (end of sequence or a stop string), "length", or None while
    /// running.
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        lock(&self.st).finish
    }

    #[getter]
    fn prompt_tokens(&self) -> usize {
        lock(&self.st).prompt_len
    }

    /// Prompt tokens the state had already seen (not fed again).
    #[getter]
    fn reused_tokens(&self) -> usize {
        lock(&self.st).reused
    }

    #[getter]
    fn completion_tokens(&self) -> usize {
        lock(&self.st).core.tokens().len()
    }

    /// The generated ids (without the end-of-sequence id).
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        lock(&self.st).core.tokens().to_vec()
    }

    /// The end-of-sequence id that ended the generation, if one did.
    #[getter]
    fn stop_id(&self) -> Option<u32> {
        lock(&self.st).stop_id
    }

    /// The visible text so far (stop strings cut off).
    #[getter]
    fn text(&self) -> String {
        lock(&self.st).stops.text().to_string()
    }
}
