//! A session: one sequence's recurrent state (a slot of the backend's state
//! pool) plus the scratch buffers to run the model over it. Prefill goes in chunks of `chunk` tokens (projections as
//! matrix-matrix products over the chunk, conv and scan sequential inside it),
//! so memory is O(chunk) whatever the prompt length, and the state never grows.
//!
//! [`BatchDecoder`] steps several sessions by one token each through one
//! batched forward ([`Model::forward_batch`]); each session ends exactly as if
//! it had been fed its token alone.
//!
//! Greedy decoding ([`Session::feed_greedy`], [`BatchDecoder::step_greedy`])
//! chooses the next token where the logits are, and sampling with a top-k
//! cut ([`Session::feed_top_k`], [`BatchDecoder::step_top_k`]) takes its k
//! candidates there. On a GPU the logits then stay there: the session keeps
//! the choice or the candidates and its last row of the residual
//! stream (`d` floats), and computes the logits from that row only if they
//! are asked for ([`Session::logits`], [`Session::snapshot`]), bit for bit
//! what the forward would have brought back. Everything that reads a
//! session's position sees the same values either way.

use crate::backend::{check_top_k, Greedy, TopK};
use crate::error::{ModelError, Result};
use crate::model::{Model, Scratch};
use crate::state::{State, StateSlot};

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
    slot: StateSlot,
    scratch: Scratch,
    /// [V] the logits after the last fed token (host); stale while
    /// `logits_on_device`.
    logits: Vec<f32>,
    /// [d] the residual stream after the last block at the last fed token
    /// (host), kept when the logits stayed on the device.
    hidden: Vec<f32>,
    /// The logits were left on the device (by a greedy feed): `logits` is
    /// computed from `hidden` when asked for.
    logits_on_device: bool,
    /// The greedy choice after the last fed token, when already made.
    pick: Option<Greedy>,
    /// The largest logits after the last fed token, when already taken.
    top: Option<TopK>,
    n_past: u64,
}

impl<'m> Session<'m> {
    /// A fresh sequence with the default prefill chunk.
    ///
    /// # Panics
    /// If the backend cannot allocate a state slot (the CPU backend always
    /// can); [`Session::try_with_chunk`] returns that error instead.
    pub fn new(model: &'m Model) -> Session<'m> {
        Session::with_chunk(model, DEFAULT_CHUNK)
    }

    /// A fresh sequence prefilling `chunk` tokens per forward (at least 1).
    ///
    /// # Panics
    /// As [`Session::new`].
    pub fn with_chunk(model: &'m Model, chunk: usize) -> Session<'m> {
        match Session::try_with_chunk(model, chunk) {
            Ok(s) => s,
            Err(e) => panic!("cannot allocate a session: {e}"),
        }
    }

    /// [`Session::with_chunk`], or the backend's error.
    pub fn try_with_chunk(model: &'m Model, chunk: usize) -> Result<Session<'m>> {
        Ok(Session {
            model,
            slot: model.new_slot()?,
            scratch: Scratch::new(model, chunk),
            logits: vec![0.0; model.hp.n_vocab],
            hidden: vec![0.0; model.hp.n_embd],
            logits_on_device: false,
            pick: None,
            top: None,
            n_past: 0,
        })
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
        self.scratch.chunk()
    }

    /// The state slot this session holds in the backend's pool.
    pub fn slot(&self) -> &StateSlot {
        &self.slot
    }

    /// Feeds tokens (any number, at least one) and returns the logits after the
    /// last one. Every id is checked first: on error the session is unchanged
    /// (short of a backend failure midway).
    pub fn feed(&mut self, ids: &[u32]) -> Result<&[f32]> {
        if ids.is_empty() {
            return Err(ModelError::Empty);
        }
        self.model.check_ids(ids)?;
        for c in ids.chunks(self.scratch.chunk()) {
            self.forget_last();
            self.model
                .forward_chunk(c, &self.slot, &mut self.scratch, &mut self.logits, None)?;
            self.n_past += c.len() as u64;
        }
        Ok(&self.logits)
    }

    /// Feeds tokens (as [`Session::feed`]) and returns the greedy next
    /// token: the id of the largest logit, the lowest on ties (NaN logits
    /// are an error, after the tokens are fed). On a GPU the choice is made
    /// there and the last chunk's logits stay there (see the module docs);
    /// on the CPU this is `feed` and [`crate::sampler::argmax`].
    pub fn feed_greedy(&mut self, ids: &[u32]) -> Result<u32> {
        if !self.model.backend().greedy_on_device() {
            let pick = Greedy::of(self.feed(ids)?);
            self.pick = Some(pick);
            return pick.id();
        }
        let pick = self.feed_keeping_logits(ids, |m, last, slot, s, hidden| {
            m.forward_chunk_greedy(last, slot, s, hidden)
        })?;
        self.pick = Some(pick);
        pick.id()
    }

    /// Feeds tokens on a device, the last chunk through `last_chunk` (a
    /// forward that leaves its logits on the device and fills the row of X
    /// they come from): what it returns, with the logits left there.
    fn feed_keeping_logits<T>(
        &mut self,
        ids: &[u32],
        last_chunk: impl FnOnce(&Model, &[u32], &StateSlot, &mut Scratch, &mut [f32]) -> Result<T>,
    ) -> Result<T> {
        if ids.is_empty() {
            return Err(ModelError::Empty);
        }
        self.model.check_ids(ids)?;
        let chunk = self.scratch.chunk();
        let (head, last) = ids.split_at((ids.len() - 1) / chunk * chunk);
        if !head.is_empty() {
            self.feed(head)?;
        }
        self.forget_last();
        let r = last_chunk(
            self.model,
            last,
            &self.slot,
            &mut self.scratch,
            &mut self.hidden,
        )?;
        self.n_past += last.len() as u64;
        self.logits_on_device = true;
        Ok(r)
    }

    /// The greedy next token at this position (as [`Session::feed_greedy`]
    /// returns it; 0 before any token).
    pub fn greedy(&mut self) -> Result<u32> {
        let p = match (self.pick, &self.top) {
            (Some(p), _) => p,
            (None, Some(t)) => t.greedy(),
            (None, None) => Greedy::of(self.logits()?),
        };
        self.pick = Some(p);
        p.id()
    }

    /// Feeds tokens (as [`Session::feed`]) and returns the `k` largest
    /// logits after the last one, (id, logit) in the sampler's candidate
    /// order (`1 <= k <= min(V, TOP_K_MAX)`), which is all
    /// [`crate::Sampler::sample_top_k`] needs. On a GPU they are taken there
    /// and the last chunk's logits stay there, as with
    /// [`Session::feed_greedy`]; on the CPU this is `feed` and
    /// [`TopK::of`]. NaN logits are an error, after the tokens are fed.
    pub fn feed_top_k(&mut self, ids: &[u32], k: usize) -> Result<&[(u32, f32)]> {
        check_top_k(k, self.model.hp.n_vocab)?;
        if !self.model.backend().greedy_on_device() {
            self.feed(ids)?;
            return self.top_k(k);
        }
        let top = self.feed_keeping_logits(ids, |m, last, slot, s, hidden| {
            m.forward_chunk_top_k(last, slot, s, k, hidden)
        })?;
        self.top = Some(top);
        self.top_k(k)
    }

    /// The `k` largest logits at this position, as [`Session::feed_top_k`]
    /// returns them: from the list the device brought back when it holds k,
    /// else from the logits (computed on the host if need be).
    pub fn top_k(&mut self, k: usize) -> Result<&[(u32, f32)]> {
        check_top_k(k, self.model.hp.n_vocab)?;
        let held = |t: &TopK| t.nan.is_some() || t.cands.len() >= k;
        if !self.top.as_ref().is_some_and(held) {
            let top = TopK::of(self.logits()?, k);
            self.top = Some(top);
        }
        match &self.top {
            Some(t) => t.first(k),
            None => Err(ModelError::Backend {
                what: "no top-k list".into(),
            }),
        }
    }

    /// Before a forward: what was known of the last position goes (a
    /// failed forward then leaves nothing stale behind).
    fn forget_last(&mut self) {
        self.pick = None;
        self.top = None;
        self.logits_on_device = false;
    }

    /// Feeds tokens and calls `each(position_in_ids, logits)` for every
    /// position, in order. Uses a [chunk][V] buffer allocated on first call.
    /// Ids are checked first, as in [`Session::feed`].
    pub fn feed_each(
        &mut self,
        ids: &[u32],
        all: &mut Vec<f32>,
        each: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        self.feed_each_observed(ids, all, each, None)
    }

    /// [`Session::feed_each`], showing `observe` (when given) the input of
    /// every matmul of every block as it runs (the importance matrix is
    /// collected so).
    pub fn feed_each_observed(
        &mut self,
        ids: &[u32],
        all: &mut Vec<f32>,
        mut each: impl FnMut(usize, &[f32]),
        mut observe: Option<crate::model::block::Observer<'_, '_>>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Err(ModelError::Empty);
        }
        self.model.check_ids(ids)?;
        let v = self.model.hp.n_vocab;
        all.resize(self.scratch.chunk() * v, 0.0);
        let mut pos = 0;
        for c in ids.chunks(self.scratch.chunk()) {
            self.forget_last();
            self.model.forward_chunk_observed(
                c,
                &self.slot,
                &mut self.scratch,
                &mut self.logits,
                Some(all),
                observe.as_deref_mut(),
            )?;
            for (j, row) in all.chunks_exact(v).take(c.len()).enumerate() {
                each(pos + j, row);
            }
            pos += c.len();
            self.n_past += c.len() as u64;
        }
        Ok(())
    }

    /// The logits after the last fed token (zeros before any); computed
    /// from the kept row of the residual stream when a greedy feed left them
    /// on the device.
    pub fn logits(&mut self) -> Result<&[f32]> {
        if self.logits_on_device {
            self.model
                .logits_of_hidden(&self.hidden, &mut self.scratch, &mut self.logits)?;
            self.logits_on_device = false;
        }
        Ok(&self.logits)
    }

    /// The logits when they are on the host now; None after a greedy feed
    /// on a GPU, until [`Session::logits`] runs the LM head for them.
    pub fn host_logits(&self) -> Option<&[f32]> {
        (!self.logits_on_device).then_some(&self.logits[..])
    }

    /// Back to an empty sequence.
    pub fn reset(&mut self) -> Result<()> {
        self.model.reset_state(&self.slot)?;
        self.forget_last();
        self.n_past = 0;
        self.logits.fill(0.0);
        Ok(())
    }

    /// The recurrent state, copied to the host.
    pub fn state(&self) -> Result<State> {
        self.model.read_state(&self.slot)
    }

    /// A host copy of the state and position, to come back to with
    /// [`Session::restore`] (or to save: `state_file`). Computes the logits
    /// if a greedy feed left them on the device.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.logits()?;
        Ok(Snapshot {
            state: self.state()?,
            logits: self.logits.clone(),
            n_past: self.n_past,
        })
    }

    /// Returns to a snapshot taken from a session of the same model (any
    /// backend). On error the session is unchanged.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if snap.logits.len() != self.logits.len() {
            return Err(ModelError::ForeignState {
                what: "the snapshot".into(),
            });
        }
        self.model
            .write_state(&self.slot, &snap.state)
            .map_err(|e| match e {
                ModelError::ForeignState { .. } => ModelError::ForeignState {
                    what: "the snapshot".into(),
                },
                e => e,
            })?;
        self.forget_last();
        self.logits.copy_from_slice(&snap.logits);
        self.n_past = snap.n_past;
        Ok(())
    }

    /// This session to `other`'s position (same model): the state copied
    /// slot to slot on the device, the logits and position with it. A
    /// server's `n > 1` forks one prefilled prompt into several slots this
    /// way.
    pub fn copy_from(&mut self, other: &Session<'m>) -> Result<()> {
        if !std::ptr::eq(self.model, other.model) {
            return Err(ModelError::ForeignState {
                what: "the session to copy".into(),
            });
        }
        self.model.copy_state(&other.slot, &self.slot)?;
        self.take_last(other);
        Ok(())
    }

    /// `other`'s last position (logits or the row they come from, the
    /// greedy pick, the count) into this session.
    fn take_last(&mut self, other: &Session<'m>) {
        self.logits.copy_from_slice(&other.logits);
        self.hidden.copy_from_slice(&other.hidden);
        self.logits_on_device = other.logits_on_device;
        self.pick = other.pick;
        self.top = other.top.clone();
        self.n_past = other.n_past;
    }

    /// A second session at this one's position: a new slot, the state
    /// copied on the device (no host round trip).
    pub fn fork(&self) -> Result<Session<'m>> {
        let mut s = Session::try_with_chunk(self.model, self.chunk())?;
        self.model.copy_state(&self.slot, &s.slot)?;
        s.take_last(self);
        Ok(s)
    }

    /// Bytes of state plus scratch plus logits.
    pub fn bytes(&self) -> usize {
        self.model.backend().slot_bytes()
            + self.scratch.bytes()
            + (self.logits.capacity() + self.hidden.capacity()) * 4
    }
}

/// A saved session position, in host form.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: State,
    pub logits: Vec<f32>,
    pub n_past: u64,
}

/// Decodes one token for each of several sessions of one model at once: the
/// projections and the LM head are one matmul over all of them (each weight
/// row read once per step), the conv and scan use each session's own slot.
pub struct BatchDecoder<'m> {
    model: &'m Model,
    scratch: Scratch,
    /// [max_batch][V]
    logits: Vec<f32>,
    /// [max_batch] greedy picks or top-k lists and [max_batch][d] rows of
    /// X of a greedy or top-k step on a device (allocated on the first).
    picks: Vec<Greedy>,
    tops: Vec<TopK>,
    hidden: Vec<f32>,
}

impl<'m> BatchDecoder<'m> {
    /// A decoder for batches of up to `max_batch` sessions (at least 1).
    pub fn new(model: &'m Model, max_batch: usize) -> BatchDecoder<'m> {
        let b = max_batch.max(1);
        BatchDecoder {
            model,
            scratch: Scratch::new(model, b),
            logits: vec![0.0; b * model.hp.n_vocab],
            picks: Vec::new(),
            tops: Vec::new(),
            hidden: Vec::new(),
        }
    }

    /// The most sessions one step takes.
    pub fn max_batch(&self) -> usize {
        self.scratch.chunk()
    }

    /// Feeds `ids[j]` to `sessions[j]` for every `j` (same lengths, at most
    /// [`max_batch`](Self::max_batch), all sessions of this decoder's model).
    /// Afterwards each session's [`Session::logits`] and
    /// [`Session::n_past`] are what `feed(&[ids[j]])` would have left.
    pub fn step(&mut self, sessions: &mut [&mut Session<'m>], ids: &[u32]) -> Result<()> {
        self.check(sessions)?;
        let slots: Vec<&StateSlot> = sessions.iter().map(|s| &s.slot).collect();
        self.model
            .forward_batch(ids, &slots, &mut self.scratch, &mut self.logits)?;
        let v = self.model.hp.n_vocab;
        for (s, row) in sessions.iter_mut().zip(self.logits.chunks_exact(v)) {
            s.forget_last();
            s.logits.copy_from_slice(row);
            s.n_past += 1;
        }
        Ok(())
    }

    /// [`step`](Self::step) for greedy decoding: afterwards each session's
    /// [`Session::greedy`] is its next token, chosen where the logits are.
    /// On a GPU only the ids and each sequence's row of the residual stream
    /// cross to the host (`4 d` bytes, not `4 V`: 16 KB instead of 260 KB per
    /// sequence for the 7B); [`Session::logits`] computes a session's logits
    /// from that row if asked. Each session ends as `feed_greedy(&[ids[j]])`
    /// would leave it.
    pub fn step_greedy(&mut self, sessions: &mut [&mut Session<'m>], ids: &[u32]) -> Result<()> {
        if !self.model.backend().greedy_on_device() {
            self.step(sessions, ids)?;
            for s in sessions.iter_mut() {
                s.pick = Some(Greedy::of(&s.logits));
            }
            return Ok(());
        }
        let mut picks = std::mem::take(&mut self.picks);
        picks.resize(self.max_batch(), Greedy::Id(0));
        let r = self.step_keeping_logits(sessions, ids, |m, ids, slots, s, hidden| {
            m.forward_batch_greedy(ids, slots, s, &mut picks, hidden)
        });
        if r.is_ok() {
            for (s, &pick) in sessions.iter_mut().zip(&picks) {
                s.pick = Some(pick);
            }
        }
        self.picks = picks;
        r
    }

    /// A step on a device through `forward` (a batched forward that leaves
    /// the logits on the device and fills each sequence's row of X): each
    /// session takes its row and moves on by one token.
    fn step_keeping_logits(
        &mut self,
        sessions: &mut [&mut Session<'m>],
        ids: &[u32],
        forward: impl FnOnce(&Model, &[u32], &[&StateSlot], &mut Scratch, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        self.check(sessions)?;
        let d = self.model.hp.n_embd;
        self.hidden.resize(self.max_batch() * d, 0.0);
        let slots: Vec<&StateSlot> = sessions.iter().map(|s| &s.slot).collect();
        forward(self.model, ids, &slots, &mut self.scratch, &mut self.hidden)?;
        for (s, row) in sessions.iter_mut().zip(self.hidden.chunks_exact(d)) {
            s.forget_last();
            s.hidden.copy_from_slice(row);
            s.logits_on_device = true;
            s.n_past += 1;
        }
        Ok(())
    }

    /// [`step`](Self::step) for sampling with a top-k cut: afterwards each
    /// session's [`Session::top_k`] (for any k up to this one) and
    /// [`Session::greedy`] come from the `k` candidates taken where the
    /// logits are; on a GPU only they and each sequence's row of the
    /// residual stream cross to the host. Each session ends as
    /// `feed_top_k(&[ids[j]], k)` would leave it.
    pub fn step_top_k(
        &mut self,
        sessions: &mut [&mut Session<'m>],
        ids: &[u32],
        k: usize,
    ) -> Result<()> {
        check_top_k(k, self.model.hp.n_vocab)?;
        if !self.model.backend().greedy_on_device() {
            return self.step(sessions, ids);
        }
        let mut tops = std::mem::take(&mut self.tops);
        tops.resize(self.max_batch(), TopK::default());
        let r = self.step_keeping_logits(sessions, ids, |m, ids, slots, s, hidden| {
            m.forward_batch_top_k(ids, slots, s, k, &mut tops, hidden)
        });
        if r.is_ok() {
            for (s, top) in sessions.iter_mut().zip(tops.iter_mut()) {
                s.top = Some(std::mem::take(top));
            }
        }
        self.tops = tops;
        r
    }

    fn check(&self, sessions: &[&mut Session<'m>]) -> Result<()> {
        if sessions.iter().any(|s| !std::ptr::eq(s.model, self.model)) {
            return Err(ModelError::ForeignState {
                what: "a session of the batch".into(),
            });
        }
        Ok(())
    }

    /// Bytes of the batch scratch, logits and greedy rows.
    pub fn bytes(&self) -> usize {
        self.scratch.bytes() + (self.logits.capacity() + self.hidden.capacity()) * 4
    }
}
