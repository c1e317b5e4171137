//! Prompt prefill for `serve` and `chat`: restore the longest cached prefix
//! state ([`PrefixCache`]), then tokenize and feed the rest piece by piece
//! between the prompt's message boundaries, caching the state at each
//! boundary. [`PrefillRun`] does it one chunk per call, so a scheduler can
//! interleave it with other sequences' decode steps; [`prefill`] runs it
//! to the end. Errors are typed; the server maps them to HTTP statuses.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::error::ModelError;
use crate::prefix_cache::PrefixCache;
use crate::session::Session;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why a prompt could not be prefilled.
#[derive(Debug, thiserror::Error)]
pub enum PrefillError {
    /// The prompt gives no tokens.
    #[error("the prompt is empty")]
    Empty,
    /// More tokens than the caller's limit.
    #[error("the prompt is {n}+ tokens, more than the limit of {max}")]
    TooLong { n: usize, max: usize },
    /// The tokenizer refused a piece.
    #[error(transparent)]
    Tokenize(#[from] TokenizerError),
    /// A boundary that is not a character boundary of the text.
    #[error("prompt boundary inside a character")]
    Boundary,
    /// The model refused (or the backend failed).
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl PrefillError {
    /// Whether the prompt is at fault (an HTTP 400), not the runtime (500).
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            PrefillError::Empty | PrefillError::TooLong { .. } | PrefillError::Tokenize(_)
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A prompt as text plus the byte offsets (increasing, inside the text) where
/// the state is worth caching (the end of each chat message).
#[derive(Clone, Debug)]
pub struct Prompt {
    pub text: String,
    pub bounds: Vec<usize>,
}

/// An incremental prompt prefill: [`PrefillRun::start`] restores the longest
/// cached prefix, each [`PrefillRun::step`] feeds at most one chunk (and
/// tokenizes the next piece between the prompt's boundaries, and caches the
/// state at each boundary, when it gets there).
pub struct PrefillRun {
    /// The prompt's tokens known so far (restored, then piece by piece).
    tokens: Vec<u32>,
    /// How many of them the cache supplied.
    cached: usize,
    /// Tokens fed (or restored).
    fed: usize,
    /// Bytes of the prompt text `tokens` cover once the current piece is in.
    pos: usize,
    /// The boundary the current piece ends at, cached once it is fed.
    piece_end: Option<usize>,
    /// Boundaries still to tokenize up to.
    ends: VecDeque<usize>,
}

impl PrefillRun {
    /// Restores the longest cached prefix of `prompt` into `session` (or
    /// resets it and starts with BOS when the tokenizer adds one).
    pub fn start(
        cache: &Mutex<PrefixCache>,
        session: &mut Session,
        tok: &Tokenizer,
        prompt: &Prompt,
        max_prompt: usize,
    ) -> Result<PrefillRun, PrefillError> {
        let text = prompt.text.as_str();
        let hit = lock(cache).restore_longest(text, max_prompt, session);
        let (pos, tokens, cached) = match hit {
            Some(h) => {
                let n = h.tokens.len();
                (h.text_len, h.tokens, n)
            }
            None => {
                session.reset()?;
                let bos = if tok.add_bos() { tok.bos_id() } else { None };
                (0, bos.into_iter().collect::<Vec<u32>>(), 0)
            }
        };
        let mut ends: VecDeque<usize> = prompt
            .bounds
            .iter()
            .copied()
            .filter(|&b| b > pos && b < text.len())
            .collect();
        if pos < text.len() || tokens.len() > cached {
            ends.push_back(text.len());
        }
        Ok(PrefillRun {
            fed: cached,
            tokens,
            cached,
            pos,
            piece_end: None,
            ends,
        })
    }

    /// Feeds at most one chunk; true once the whole prompt is in.
    pub fn step(
        &mut self,
        cache: &Mutex<PrefixCache>,
        session: &mut Session,
        tok: &Tokenizer,
        prompt: &Prompt,
        max_prompt: usize,
    ) -> Result<bool, PrefillError> {
        let text = prompt.text.as_str();
        loop {
            if let Some(rest) = self.tokens.get(self.fed..).filter(|r| !r.is_empty()) {
                let n = rest.len().min(session.chunk().max(1));
                session.feed(&rest[..n])?;
                self.fed += n;
                return Ok(false);
            }
            if let Some(end) = self.piece_end.take() {
                self.pos = end;
                if self.fed > 0 {
                    lock(cache).insert(&text[..end], &self.tokens, session)?;
                }
            }
            let Some(end) = self.ends.pop_front() else {
                return Ok(true);
            };
            let Some(piece) = text.get(self.pos..end) else {
                return Err(PrefillError::Boundary);
            };
            let ids = tok.encode(piece, false)?;
            self.tokens.extend_from_slice(&ids);
            if self.tokens.len() > max_prompt {
                return Err(PrefillError::TooLong {
                    n: self.tokens.len(),
                    max: max_prompt,
                });
            }
            self.piece_end = Some(end);
        }
    }

    /// A run with nothing to do (a placeholder to swap a finished run out).
    pub fn empty() -> PrefillRun {
        PrefillRun {
            tokens: Vec::new(),
            cached: 0,
            fed: 0,
            pos: 0,
            piece_end: None,
            ends: VecDeque::new(),
        }
    }

    /// The prompt's tokens and how many the cache supplied (after `step`
    /// returned true).
    pub fn finish(self) -> Result<(Vec<u32>, usize), PrefillError> {
        if self.tokens.is_empty() {
            return Err(PrefillError::Empty);
        }
        Ok((self.tokens, self.cached))
    }
}

/// Brings `session` to the state after `prompt`: restores the longest cached
/// prefix, then tokenizes and feeds the rest piece by piece between the
/// prompt's boundaries, caching the state at each boundary and at the end.
/// `check` is called before each chunk; an error it returns aborts.
/// Returns the prompt's tokens and how many of them the cache supplied.
pub fn prefill<E: From<PrefillError>>(
    cache: &Mutex<PrefixCache>,
    session: &mut Session,
    tok: &Tokenizer,
    prompt: &Prompt,
    max_prompt: usize,
    mut check: impl FnMut() -> Option<E>,
) -> Result<(Vec<u32>, usize), E> {
    let mut run = PrefillRun::start(cache, session, tok, prompt, max_prompt)?;
    loop {
        if let Some(e) = check() {
            return Err(e);
        }
        if run.step(cache, session, tok, prompt, max_prompt)? {
            return Ok(run.finish()?);
        }
    }
}
