//! The prompt cache: model states at text prefixes (the end of each chat
//! message, the end of a prompt, the end of a reply), least recently used
//! evicted beyond a byte budget.
//!
//! Entries are keyed by the prompt *text* they cover, and carry the tokens the
//! state has seen. A request whose prompt text starts with an entry's text
//! restores that state and tokenizes and feeds only the rest, so a follow-up
//! chat turn that repeats the model's reply continues from exactly the tokens
//! the model generated, as an uninterrupted session would (re-tokenizing the
//! reply's text could give other tokens).

use crate::error::Result;
use crate::session::{Session, Snapshot};

struct Entry {
    text: String,
    tokens: Vec<u32>,
    snap: Snapshot,
    bytes: usize,
    last_used: u64,
}

/// A byte-bounded LRU of states at text prefixes.
pub struct PrefixCache {
    entries: Vec<Entry>,
    cap: usize,
    used: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// What a lookup restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Bytes of the prompt text the restored state covers.
    pub text_len: usize,
    /// The tokens that state has seen.
    pub tokens: Vec<u32>,
}

fn snap_bytes(s: &Snapshot) -> usize {
    s.state.bytes() + s.logits.len() * 4
}

impl PrefixCache {
    /// A cache holding at most `cap_bytes` of states, texts and tokens.
    pub fn new(cap_bytes: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            cap: cap_bytes,
            used: 0,
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// (hits, misses) of [`restore_longest`](Self::restore_longest).
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Restores into `session` the state of the longest entry whose text is a
    /// prefix of `text` (and whose token count is at most `max_tokens`).
    pub fn restore_longest(
        &mut self,
        text: &str,
        max_tokens: usize,
        session: &mut Session,
    ) -> Option<Hit> {
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .filter(|e| e.tokens.len() <= max_tokens && text.starts_with(e.text.as_str()))
            .max_by_key(|e| e.text.len());
        let Some(e) = best else {
            self.misses += 1;
            return None;
        };
        if session.restore(&e.snap).is_err() {
            self.misses += 1;
            return None;
        }
        e.last_used = self.clock;
        self.hits += 1;
        Some(Hit {
            text_len: e.text.len(),
            tokens: e.tokens.clone(),
        })
    }

    /// Stores the session's state (its host form) as the one after `text` /
    /// `tokens`. Errs only when the backend cannot read the state.
    pub fn insert(&mut self, text: &str, tokens: &[u32], session: &Session) -> Result<()> {
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.text == text) {
            e.last_used = self.clock;
            return Ok(());
        }
        let snap = session.snapshot()?;
        let bytes = snap_bytes(&snap) + text.len() + tokens.len() * 4;
        if bytes > self.cap {
            return Ok(());
        }
        while self.used + bytes > self.cap {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let old = self.entries.swap_remove(i);
            self.used -= old.bytes;
        }
        self.used += bytes;
        self.entries.push(Entry {
            text: text.to_string(),
            tokens: tokens.to_vec(),
            snap,
            bytes,
            last_used: self.clock,
        });
        Ok(())
    }
}
