//! Text generation as an iterator of text pieces.
//!
//! [`Generate`] feeds a prompt to a [`Session`], then samples one token at a
//! time, yielding the text each token completes (a multi-byte character split
//! across tokens comes out whole, with the later token). It stops at any of the
//! tokenizer's end-of-sequence ids (not fed, not shown) or after `max_tokens`.
//!
//! ```
//! use mamba_gguf::{generate::Generate, tokenizer::Tokenizer, Model, Sampler, SamplerConfig, Session};
//! # mod fixture { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/llamacpp_gguf.rs")); }
//! # let path = fixture::llamacpp_gguf("falcon-mamba-tiny-q4_k_m.gguf"); // llama.cpp's Q4_K_M
//! let model = Model::load(path)?;
//! let tok = Tokenizer::from_gguf(model.gguf())?;
//! let prompt = tok.encode("The quick brown fox", tok.add_bos())?;
//!
//! // Greedy (temperature 0) is deterministic.
//! let greedy = SamplerConfig { temp: 0.0, ..SamplerConfig::default() };
//! let mut session = Session::new(&model);
//! let mut gen = Generate::new(&mut session, &tok, Sampler::new(greedy.clone()), &prompt, 8);
//! let mut text = String::new();
//! for piece in gen.by_ref() {
//!     text.push_str(&piece?);
//! }
//! let ids = gen.tokens().to_vec();
//! assert!(ids.len() <= 8);
//! assert_eq!(text, tok.decode(&ids));
//! drop(gen);
//!
//! // Snapshots are cheap copies of the state: branch and come back.
//! let mut s = Session::new(&model);
//! s.feed(&prompt)?;
//! let snap = s.snapshot()?;
//! let first: Vec<f32> = s.feed(&[ids[0]])?.to_vec();
//! s.restore(&snap)?;
//! assert_eq!(s.feed(&[ids[0]])?, &first[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::Result;
use crate::sampler::Sampler;
use crate::session::Session;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token was sampled.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// An error ended generation (the iterator yielded it as `Err`).
    Error,
}

/// What [`Sampling::next`] chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// An end-of-sequence id (not recorded, not shown).
    Eos,
    /// A token, recorded, with the text it completes (may be empty).
    Token { id: u32, piece: String },
}

/// The per-token core of every decode loop ([`Generate`] here, the
/// server's slots): sample with the one sampler (NaN logits are an error),
/// stop at end of sequence, record the token for the repetition penalty,
/// decode its text. The loops differ only in how they feed the session
/// (alone or batched) and when they stop.
pub struct Sampling {
    sampler: Sampler,
    /// Prompt and generated tokens, for the repetition penalty.
    history: Vec<u32>,
    generated: Vec<u32>,
    decoder: StreamDecoder,
}

impl Sampling {
    /// Sampling after `prompt` (the tokens the penalty looks back on).
    pub fn new(sampler: Sampler, prompt: &[u32]) -> Sampling {
        Sampling {
            sampler,
            history: prompt.to_vec(),
            generated: Vec::new(),
            decoder: StreamDecoder::new(),
        }
    }

    /// The next token for `logits`; an end-of-sequence id ends generation
    /// unless `ignore_eos`.
    pub fn next(&mut self, logits: &[f32], tok: &Tokenizer, ignore_eos: bool) -> Result<Next> {
        let eos: &[u32] = if ignore_eos { &[] } else { tok.eos_ids() };
        Ok(self.next_with_eos(logits, tok, eos)?.0)
    }

    /// [`Sampling::next`] ending at the ids in `eos` instead of the
    /// tokenizer's end-of-sequence ids (transformers' `eos_token_id`; empty:
    /// never), and the id sampled, an end-of-sequence one included (which
    /// [`Next::Eos`] does not carry).
    pub fn next_with_eos(
        &mut self,
        logits: &[f32],
        tok: &Tokenizer,
        eos: &[u32],
    ) -> Result<(Next, u32)> {
        let id = self.sampler.try_sample(logits, &self.history)?;
        Ok((self.accept(id, tok, eos), id))
    }

    /// Whether the sampler's choice is the argmax of the logits (see
    /// [`Sampler::is_plain_greedy`]), so that the device may make it.
    pub fn is_plain_greedy(&self) -> bool {
        self.sampler.is_plain_greedy()
    }

    /// The top-k cut the device may make for this sampler (see
    /// [`Sampler::device_top_k`]), for a vocabulary of `vocab`.
    pub fn device_top_k(&self, vocab: usize) -> Option<usize> {
        self.sampler
            .device_top_k(crate::backend::TOP_K_MAX)
            .map(|k| k.min(vocab))
    }

    /// [`Sampling::next_with_eos`] from the top-k candidates alone (see
    /// [`Sampler::sample_top_k`]): the same token as from all the logits.
    pub fn next_top_k(
        &mut self,
        cands: &[(u32, f32)],
        tok: &Tokenizer,
        eos: &[u32],
    ) -> (Next, u32) {
        let id = self.sampler.sample_top_k(cands);
        (self.accept(id, tok, eos), id)
    }

    /// [`Sampling::next_with_eos`] for a token chosen already (greedily,
    /// where the logits are): ends at `eos`, else records and decodes it.
    pub fn accept(&mut self, id: u32, tok: &Tokenizer, eos: &[u32]) -> Next {
        if eos.contains(&id) {
            return Next::Eos;
        }
        self.history.push(id);
        self.generated.push(id);
        let piece = self.decoder.push(tok, id);
        Next::Token { id, piece }
    }

    /// Text held back by the decoder (the end of a multi-byte character).
    pub fn flush(&mut self) -> String {
        self.decoder.flush()
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.generated
    }
}

/// The log-probability of `id` under `logits` (a log-softmax; None for an
/// id outside them), and the `k` most likely tokens' (best first, the lower
/// id first on ties): what OpenAI's `logprobs` report for a sampled token.
pub fn log_probs(logits: &[f32], id: u32, k: usize) -> (Option<f32>, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let chosen = logits.get(id as usize).map(|&x| x - lse);
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() == k && top.last().is_some_and(|t| l <= t.1) {
                continue;
            }
            let at = top.partition_point(|t| t.1 >= l);
            top.insert(at, (i as u32, l));
            top.truncate(k);
        }
    }
    (chosen, top.into_iter().map(|(i, l)| (i, l - lse)).collect())
}

/// Stop strings over streamed text (OpenAI's `stop`). Text is released as it
/// is generated, except a tail that could begin a stop string, held back
/// until later text settles it; at the first stop string the text is cut
/// before it and generation should end ([`StopStrings::stopped`]).
///
/// ```
/// use mamba_gguf::generate::StopStrings;
/// let mut s = StopStrings::new(vec!["</a>".into()]);
/// assert_eq!(s.push("x <"), "x ");
/// assert_eq!(s.push("/a> y"), "");
/// assert!(s.stopped());
/// assert_eq!(s.text(), "x ");
/// ```
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Everything generated (up to the stop string), and how much of it
    /// was released.
    out: String,
    sent: usize,
    hit: bool,
}

impl StopStrings {
    /// Stops at any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> StopStrings {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..StopStrings::default()
        }
    }

    /// Adds generated text; returns the part now safe to show (may be
    /// empty). Nothing once a stop string was found.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.out.push_str(piece);
        // A stop string cannot start in the released text: its start would
        // have been held back. So only the unreleased tail is searched.
        let tail = self.out.get(self.sent..).unwrap_or("");
        let found = self
            .stops
            .iter()
            .filter_map(|s| tail.find(s.as_str()))
            .min()
            .map(|i| i + self.sent);
        let visible = match found {
            Some(i) => {
                self.hit = true;
                i
            }
            None => self.out.len() - partial_stop(&self.out, &self.stops),
        };
        let new = self.out.get(self.sent..visible).unwrap_or("").to_string();
        self.sent = visible.max(self.sent);
        if self.hit {
            self.out.truncate(self.sent);
        }
        new
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.hit
    }

    /// Generation ended without a stop string: the held-back tail.
    pub fn finish(&mut self) -> String {
        let rest = self.out.get(self.sent..).unwrap_or("").to_string();
        self.sent = self.out.len();
        rest
    }

    /// The text released so far.
    pub fn text(&self) -> &str {
        self.out.get(..self.sent).unwrap_or("")
    }
}

/// Bytes at the end of `s` that could be the start of one of `stops`.
pub(crate) fn partial_stop(s: &str, stops: &[String]) -> usize {
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

/// An iterator of generated text pieces over a session. See the module docs.
pub struct Generate<'s, 'm> {
    session: &'s mut Session<'m>,
    tok: &'s Tokenizer,
    prompt: Option<Vec<u32>>,
    core: Sampling,
    /// A sampled token not yet fed to the session.
    pending: Option<u32>,
    max_tokens: usize,
    finish: Option<Finish>,
}

impl<'s, 'm> Generate<'s, 'm> {
    /// Generates after `prompt` (fed on the first call to `next`). An empty
    /// prompt continues from the session's current logits.
    pub fn new(
        session: &'s mut Session<'m>,
        tok: &'s Tokenizer,
        sampler: Sampler,
        prompt: &[u32],
        max_tokens: usize,
    ) -> Self {
        Generate {
            session,
            tok,
            prompt: Some(prompt.to_vec()),
            core: Sampling::new(sampler, prompt),
            pending: None,
            max_tokens,
            finish: None,
        }
    }

    /// The tokens generated so far (without a final end-of-sequence token).
    pub fn tokens(&self) -> &[u32] {
        self.core.tokens()
    }

    /// Why generation ended (None while it goes on).
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// Feeds the last generated token if it has not been yet, so that the
    /// session has seen the prompt and every generated token (generation stops
    /// at `max_tokens` without feeding the last one). Then the session can be
    /// continued or saved.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(id) = self.pending.take() {
            self.session.feed(&[id])?;
        }
        Ok(())
    }

    /// Feeds the prompt now (otherwise the first `next` does), e.g. to time
    /// prefill apart from decode. Does nothing the second time.
    pub fn prefill(&mut self) -> Result<()> {
        if let Some(p) = self.prompt.take() {
            if !p.is_empty() {
                self.feed(&p)?;
            }
        }
        Ok(())
    }

    /// Feeds tokens; with a plain greedy sampler, or one with a top-k cut
    /// and nothing else reading the logits, what it needs of the next
    /// token's logits is taken where they are (on a GPU they stay there).
    fn feed(&mut self, ids: &[u32]) -> Result<()> {
        let v = self.session.model().hp.n_vocab;
        let r = if self.core.is_plain_greedy() {
            self.session.feed_greedy(ids).map(|_| ())
        } else if let Some(k) = self.core.device_top_k(v) {
            self.session.feed_top_k(ids, k).map(|_| ())
        } else {
            self.session.feed(ids).map(|_| ())
        };
        match r {
            // A NaN is reported by the choice that reads it, as `next` does.
            Ok(()) | Err(crate::ModelError::NanLogits { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn step(&mut self) -> Result<Option<String>> {
        self.prefill()?;
        loop {
            if self.finish.is_some() {
                return Ok(None);
            }
            if self.core.tokens().len() >= self.max_tokens {
                self.finish = Some(Finish::Length);
                let rest = self.core.flush();
                return Ok((!rest.is_empty()).then_some(rest));
            }
            if let Some(id) = self.pending.take() {
                self.feed(&[id])?;
            }
            let v = self.session.model().hp.n_vocab;
            let next = if self.core.is_plain_greedy() {
                let id = self.session.greedy()?;
                self.core.accept(id, self.tok, self.tok.eos_ids())
            } else if let Some(k) = self.core.device_top_k(v) {
                let cands = self.session.top_k(k)?;
                self.core.next_top_k(cands, self.tok, self.tok.eos_ids()).0
            } else {
                self.core.next(self.session.logits()?, self.tok, false)?
            };
            match next {
                Next::Eos => {
                    self.finish = Some(Finish::Eos);
                    let rest = self.core.flush();
                    return Ok((!rest.is_empty()).then_some(rest));
                }
                Next::Token { id, piece } => {
                    self.pending = Some(id);
                    if !piece.is_empty() {
                        return Ok(Some(piece));
                    }
                }
            }
        }
    }
}

impl Iterator for Generate<'_, '_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => None,
            Err(e) => {
                self.finish = Some(Finish::Error);
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_hold_back_and_cut() {
        let mut s = StopStrings::new(vec!["</end>".into(), "\n\n".into(), String::new()]);
        assert_eq!(s.push("abc</e"), "abc");
        assert_eq!(s.push("x"), "</ex");
        assert_eq!(s.push("\n"), "");
        assert_eq!(s.push("\nmore"), "");
        assert!(s.stopped());
        assert_eq!(s.text(), "abc</ex");
        assert_eq!(s.push("ignored"), "");
        assert_eq!(s.finish(), "");

        // No stop string found: the held-back tail comes out at the end.
        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("caf"), "caf");
        assert_eq!(s.push("é"), "");
        assert!(!s.stopped());
        assert_eq!(s.finish(), "é");
        assert_eq!(s.text(), "café");

        // Without stop strings everything passes at once.
        let mut s = StopStrings::new(Vec::new());
        assert_eq!(s.push("a\n\n"), "a\n\n");
        // A stop string inside one piece.
        let mut s = StopStrings::new(vec!["STOP".into()]);
        assert_eq!(s.push("xSTOPy"), "x");
        assert!(s.stopped());
    }

    /// The caller's end-of-sequence ids end generation and come back with
    /// the id; without them the same id is a token.
    #[test]
    fn next_with_eos_reports_the_id() {
        use crate::sampler::SamplerConfig;
        use crate::{Model, Session};
        let path = crate::llamacpp_fixture::llamacpp_gguf("falcon-mamba-tiny-q4_k_m.gguf");
        let model = Model::load(path).expect("fixture loads");
        let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
        let prompt = tok.encode("The falcon", false).expect("encodes");
        let mut session = Session::new(&model);
        let logits = session.feed(&prompt).expect("feeds").to_vec();
        let greedy = || {
            Sampler::new(SamplerConfig {
                temp: 0.0,
                ..SamplerConfig::default()
            })
        };
        let first = crate::sampler::argmax(&logits).expect("no NaN");
        let mut a = Sampling::new(greedy(), &prompt);
        assert_eq!(
            a.next_with_eos(&logits, &tok, &[first]).expect("samples"),
            (Next::Eos, first)
        );
        assert!(a.tokens().is_empty());
        let mut b = Sampling::new(greedy(), &prompt);
        let (next, id) = b.next_with_eos(&logits, &tok, &[]).expect("samples");
        assert_eq!(id, first);
        assert!(matches!(next, Next::Token { id, .. } if id == first));
        assert_eq!(b.tokens(), [first]);
    }

    #[test]
    fn log_probs_are_a_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let (lp, top) = log_probs(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let want = |l: f32| (l as f64 - z.ln()) as f32;
        assert!((lp.unwrap() - want(2.0)).abs() < 1e-6);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!((top[0].1 - want(3.0)).abs() < 1e-6);
        assert_eq!(log_probs(&logits, 9, 0), (None, Vec::new()));
        let sum: f64 = (0..4)
            .map(|i| (log_probs(&logits, i, 0).0.unwrap() as f64).exp())
            .sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }
}
