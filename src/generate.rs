//! Text generation as an iterator of text pieces.
//!
//! [`Generate`] feeds a prompt to a [`Session`], then samples one token at a
//! time, yielding the text each token completes (a multi-byte character split
//! across tokens comes out whole, with the later token). It stops at any of the
//! tokenizer's end-of-sequence ids (not fed, not shown) or after `max_tokens`.
//!
//! ```
//! use mamba_gguf::{generate::Generate, tokenizer::Tokenizer, Model, Sampler, SamplerConfig, Session};
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llamacpp/falcon-mamba-tiny-q4_k_m.gguf");
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
        let id = self.sampler.try_sample(logits, &self.history)?;
        if !ignore_eos && tok.eos_ids().contains(&id) {
            return Ok(Next::Eos);
        }
        self.history.push(id);
        self.generated.push(id);
        Ok(Next::Token {
            id,
            piece: self.decoder.push(tok, id),
        })
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
                self.session.feed(&p)?;
            }
        }
        Ok(())
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
                self.session.feed(&[id])?;
            }
            match self.core.next(self.session.logits(), self.tok, false)? {
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
