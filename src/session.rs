//! A session: one sequence's recurrent state plus the scratch buffers to run
//! the model over it. Prefill goes in chunks of `chunk` tokens (projections as
//! matrix-matrix products over the chunk, conv and scan sequential inside it),
//! so memory is O(chunk) whatever the prompt length, and the state never grows.
//!
//! [`BatchDecoder`] steps several sessions by one token each through one
//! batched forward ([`Model::forward_batch`]); each session ends exactly as if
//! it had been fed its token alone.

use crate::error::{ModelError, Result};
use crate::model::{Model, Scratch};
use crate::state::State;

/// Default prefill chunk (tokens per forward). Measured (pp512, 1.4B shape,
/// 2 threads, `bench --prefill-chunk C`): Q4_0 32/64/128/256 gave 57.8 /
/// 58.1 / 64.4 / 65.1 tok/s, Q4_K_M 60.5 / 66.4 / 71.7 / 74.0; each weight
/// tile is decoded once per chunk, so longer chunks spread that work. 128
/// takes most of the gain; 256 adds a few percent, within the noise, for
/// twice the scratch (7B: about 36 MB more).
pub const DEFAULT_CHUNK: usize = 128;

/// Prefill chunk of `serve`'s slots: every chunk holds up the other slots'
/// next decode step, and each slot keeps its own scratch, so the server
/// stays at 64.
pub const SERVE_CHUNK: usize = 64;

/// A model's running sequence.
pub struct Session<'m> {
    model: &'m Model,
    state: State,
    scratch: Scratch,
    n_past: u64,
}

impl<'m> Session<'m> {
    /// A fresh sequence with the default prefill chunk.
    pub fn new(model: &'m Model) -> Session<'m> {
        Session::with_chunk(model, DEFAULT_CHUNK)
    }

    /// A fresh sequence prefilling `chunk` tokens per forward (at least 1).
    pub fn with_chunk(model: &'m Model, chunk: usize) -> Session<'m> {
        Session {
            model,
            state: State::new(&model.hp),
            scratch: Scratch::new(model, chunk),
            n_past: 0,
        }
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens fed since the last reset.
    pub fn n_past(&self) -> u64 {
        self.n_past
    }

    /// The prefill chunk size.
    pub fn chunk(&self) -> usize {
        self.scratch.chunk
    }

    /// Feeds tokens (any number, at least one) and returns the logits after the
    /// last one.
    pub fn feed(&mut self, ids: &[u32]) -> Result<&[f32]> {
        if ids.is_empty() {
            return Err(ModelError::Empty);
        }
        for c in ids.chunks(self.scratch.chunk) {
            self.model
                .forward_chunk(c, &mut self.state, &mut self.scratch, None)?;
            self.n_past += c.len() as u64;
        }
        Ok(&self.scratch.logits)
    }

    /// Feeds tokens and calls `each(position_in_ids, logits)` for every
    /// position, in order. Uses a [chunk][V] buffer allocated on first call.
    pub fn feed_each(
        &mut self,
        ids: &[u32],
        all: &mut Vec<f32>,
        mut each: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        if ids.is_empty() {
            return Err(ModelError::Empty);
        }
        let v = self.model.hp.n_vocab;
        all.resize(self.scratch.chunk * v, 0.0);
        let mut pos = 0;
        for c in ids.chunks(self.scratch.chunk) {
            self.model
                .forward_chunk(c, &mut self.state, &mut self.scratch, Some(all))?;
            for (j, row) in all.chunks_exact(v).take(c.len()).enumerate() {
                each(pos + j, row);
            }
            pos += c.len();
            self.n_past += c.len() as u64;
        }
        Ok(())
    }

    /// The logits after the last fed token (zeros before any).
    pub fn logits(&self) -> &[f32] {
        &self.scratch.logits
    }

    /// Back to an empty sequence.
    pub fn reset(&mut self) {
        self.state.reset();
        self.n_past = 0;
        self.scratch.logits.fill(0.0);
    }

    /// The recurrent state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// A copy of the state and position, to come back to with [`Session::restore`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state.clone(),
            logits: self.scratch.logits.clone(),
            n_past: self.n_past,
        }
    }

    /// Returns to a snapshot taken from a session of the same model.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if !self.state.copy_from(&snap.state) || snap.logits.len() != self.scratch.logits.len() {
            return Err(ModelError::Metadata {
                file: "<session>".into(),
                key: "snapshot".into(),
                what: "snapshot belongs to a model of another shape".into(),
            });
        }
        self.scratch.logits.copy_from_slice(&snap.logits);
        self.n_past = snap.n_past;
        Ok(())
    }

    /// Bytes of state plus scratch.
    pub fn bytes(&self) -> usize {
        self.state.bytes() + self.scratch.bytes()
    }
}

/// A saved session position.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: State,
    pub logits: Vec<f32>,
    pub n_past: u64,
}

/// Decodes one token for each of several sessions of one model at once: the
/// projections and the LM head are one matmul over all of them (each weight
/// row read once per step), the conv and scan use each session's own state.
pub struct BatchDecoder<'m> {
    model: &'m Model,
    scratch: Scratch,
    /// [max_batch][V]
    logits: Vec<f32>,
}

impl<'m> BatchDecoder<'m> {
    /// A decoder for batches of up to `max_batch` sessions (at least 1).
    pub fn new(model: &'m Model, max_batch: usize) -> BatchDecoder<'m> {
        let b = max_batch.max(1);
        BatchDecoder {
            model,
            scratch: Scratch::new(model, b),
            logits: vec![0.0; b * model.hp.n_vocab],
        }
    }

    /// The most sessions one step takes.
    pub fn max_batch(&self) -> usize {
        self.scratch.chunk
    }

    /// Feeds `ids[j]` to `sessions[j]` for every `j` (same lengths, at most
    /// [`max_batch`](Self::max_batch), all sessions of this decoder's model).
    /// Afterwards each session's [`Session::logits`] and
    /// [`Session::n_past`] are what `feed(&[ids[j]])` would have left.
    pub fn step(&mut self, sessions: &mut [&mut Session<'m>], ids: &[u32]) -> Result<()> {
        if sessions.iter().any(|s| !std::ptr::eq(s.model, self.model)) {
            return Err(ModelError::Metadata {
                file: "<session>".into(),
                key: "batch".into(),
                what: "a session of another model".into(),
            });
        }
        let mut states: Vec<&mut State> = sessions.iter_mut().map(|s| &mut s.state).collect();
        self.model
            .forward_batch(ids, &mut states, &mut self.scratch, &mut self.logits)?;
        let v = self.model.hp.n_vocab;
        for (s, row) in sessions.iter_mut().zip(self.logits.chunks_exact(v)) {
            s.scratch.logits.copy_from_slice(row);
            s.n_past += 1;
        }
        Ok(())
    }

    /// Bytes of the batch scratch and logits.
    pub fn bytes(&self) -> usize {
        self.scratch.bytes() + self.logits.capacity() * 4
    }
}
