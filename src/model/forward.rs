//! The whole-model forward, device-independent: embedding lookup, the blocks,
//! the final norm and the LM head, over a chunk of one sequence
//! ([`Model::forward_chunk`]) or one token of each of several sequences
//! ([`Model::forward_batch`]); and the model's state slots.
//!
//! Batched decode: the rows of the workspace are sequences instead of time
//! steps. The embedding, the norms, every projection and the LM head run over
//! all B rows at once (one matmul each, so each weight row is read once per
//! step for all sequences), while the conv and the scan run on each row's own
//! state slot. A matmul over t rows gives per row bit for bit the matvec of
//! that row, and conv and scan are per row, so each sequence's logits equal,
//! bit for bit, stepping that sequence alone.
//!
//! The greedy forms ([`Model::forward_chunk_greedy`],
//! [`Model::forward_batch_greedy`]) end in the backend's `greedy` op instead
//! of its `head`: the last position's choice is made where the logits are,
//! and what comes back is the choice plus that position's row of X, from
//! which [`Model::logits_of_hidden`] gives the logits later, bit for bit
//! (the same final norm and LM head over the same row).
//!
//! Every caller mistake is checked before any state changes: a failed call
//! changes nothing.

use super::{block, Model, Scratch};
use crate::backend::{check_top_k, prefix_mut, Greedy, Rows, TopK};
use crate::error::{ModelError, Result};
use crate::state::{State, StateSlot};

impl Model {
    /// Refuses any id outside the vocabulary (before anything runs).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.hp.n_vocab;
        match ids.iter().find(|&&id| id as usize >= v) {
            Some(&id) => Err(ModelError::Token { id, vocab: v }),
            None => Ok(()),
        }
    }

    fn check_slot(&self, slot: &StateSlot, what: impl FnOnce() -> String) -> Result<()> {
        if slot.is_of(&self.slots) {
            Ok(())
        } else {
            Err(ModelError::ForeignState { what: what() })
        }
    }

    /// Runs `ids` (1..=`s.chunk()` tokens) through the model, carrying the
    /// state in `slot`. The last position's logits land in `logits` (`[V]`);
    /// with `all`, every position's logits are written to it as `[t][V]`.
    pub fn forward_chunk(
        &self,
        ids: &[u32],
        slot: &StateSlot,
        s: &mut Scratch,
        logits: &mut [f32],
        all: Option<&mut [f32]>,
    ) -> Result<()> {
        self.forward_chunk_observed(ids, slot, s, logits, all, None)
    }

    /// [`forward_chunk`](Self::forward_chunk), showing `observe` (when
    /// given) the input of every matmul of every block first: what
    /// `imatrix` collects.
    pub fn forward_chunk_observed(
        &self,
        ids: &[u32],
        slot: &StateSlot,
        s: &mut Scratch,
        logits: &mut [f32],
        all: Option<&mut [f32]>,
        observe: Option<block::Observer<'_, '_>>,
    ) -> Result<()> {
        let t = ids.len();
        let v = self.hp.n_vocab;
        let logits = prefix_mut(logits, v, "logits")?;
        let all = match all {
            Some(dst) => Some(prefix_mut(dst, t * v, "all-logits")?),
            None => None,
        };
        self.run_chunk(ids, slot, s, observe)?;
        let (be, ws) = (&self.backend, s.ws());
        match all {
            Some(dst) => {
                be.head(ws, 0..t, dst)?;
                logits.copy_from_slice(&dst[(t - 1) * v..t * v]);
            }
            None => be.head(ws, t - 1..t, logits)?,
        }
        Ok(())
    }

    /// [`forward_chunk`](Self::forward_chunk) choosing greedily where the
    /// logits are ([`Backend::greedy`](crate::backend::Backend::greedy)):
    /// the last position's choice and its row of X after the last block
    /// (`hidden`, `[d]`, from which [`logits_of_hidden`](Self::logits_of_hidden)
    /// gives its logits) come back, the logits do not.
    pub fn forward_chunk_greedy(
        &self,
        ids: &[u32],
        slot: &StateSlot,
        s: &mut Scratch,
        hidden: &mut [f32],
    ) -> Result<Greedy> {
        let t = ids.len();
        let hidden = prefix_mut(hidden, self.hp.n_embd, "hidden")?;
        self.run_chunk(ids, slot, s, None)?;
        let (be, ws) = (&self.backend, s.ws());
        let mut pick = [Greedy::Id(0)];
        be.greedy(ws, t - 1..t, &mut pick)?;
        be.read_x(ws, t - 1..t, hidden)?;
        Ok(pick[0])
    }

    /// [`forward_chunk_greedy`](Self::forward_chunk_greedy) bringing back
    /// the last position's `k` largest logits instead of one id.
    pub fn forward_chunk_top_k(
        &self,
        ids: &[u32],
        slot: &StateSlot,
        s: &mut Scratch,
        k: usize,
        hidden: &mut [f32],
    ) -> Result<TopK> {
        let t = ids.len();
        let hidden = prefix_mut(hidden, self.hp.n_embd, "hidden")?;
        check_top_k(k, self.hp.n_vocab)?;
        self.run_chunk(ids, slot, s, None)?;
        let (be, ws) = (&self.backend, s.ws());
        let mut top = [TopK::default()];
        be.top_k(ws, t - 1..t, k, &mut top)?;
        be.read_x(ws, t - 1..t, hidden)?;
        let [top] = top;
        Ok(top)
    }

    /// Embedding and blocks over a chunk of one sequence (X then holds the
    /// chunk's rows after the last block).
    fn run_chunk(
        &self,
        ids: &[u32],
        slot: &StateSlot,
        s: &mut Scratch,
        mut observe: Option<block::Observer<'_, '_>>,
    ) -> Result<()> {
        let t = ids.len();
        if t == 0 {
            return Err(ModelError::Empty);
        }
        if t > s.chunk() {
            return Err(ModelError::TooMany {
                n: t,
                what: "tokens",
                chunk: s.chunk(),
            });
        }
        self.check_slot(slot, || "the state".into())?;
        self.check_ids(ids)?;
        let (be, ws) = (&self.backend, s.ws());
        be.embed(ws, ids)?;
        let rows = Rows::Chunk {
            slot: slot.index(),
            t,
        };
        let mut blocks = || -> Result<()> {
            for l in 0..self.hp.n_layer {
                block::forward_observed(be, &self.hp, ws, l, rows, observe.as_deref_mut())?;
            }
            Ok(())
        };
        if t == 1 {
            // A decode step: many small parallel ops.
            be.step(blocks)
        } else {
            blocks()
        }
    }

    /// The logits (`[V]`) of a position from its row of X after the last
    /// block, as [`forward_chunk_greedy`](Self::forward_chunk_greedy) and
    /// [`forward_batch_greedy`](Self::forward_batch_greedy) return it: the
    /// final norm and the LM head over that one row, bit for bit what the
    /// forward would have brought back.
    pub fn logits_of_hidden(
        &self,
        hidden: &[f32],
        s: &mut Scratch,
        logits: &mut [f32],
    ) -> Result<()> {
        let d = self.hp.n_embd;
        if hidden.len() != d {
            return Err(ModelError::Buffer {
                what: "hidden",
                need: d,
                have: hidden.len(),
            });
        }
        let logits = prefix_mut(logits, self.hp.n_vocab, "logits")?;
        let (be, ws) = (&self.backend, s.ws());
        be.write_x(ws, 0, hidden)?;
        be.head(ws, 0..1, logits)
    }

    /// Feeds `ids[j]` to the sequence in `slots[j]`, for every `j`, and
    /// writes its logits to `logits[j*V..(j+1)*V]`. `ids` and `slots` have
    /// the same length B, 1 <= B <= `s.chunk()`; `logits` holds at least B*V
    /// values; the slots are distinct and of this model.
    pub fn forward_batch(
        &self,
        ids: &[u32],
        slots: &[&StateSlot],
        s: &mut Scratch,
        logits: &mut [f32],
    ) -> Result<()> {
        let b = ids.len();
        let out = prefix_mut(logits, b * self.hp.n_vocab, "logits")?;
        self.run_batch(ids, slots, s)?;
        // Final norm per row, then the LM head over all rows: [B][V].
        self.backend.head(s.ws(), 0..b, out)
    }

    /// [`forward_batch`](Self::forward_batch) choosing greedily where the
    /// logits are: `picks[j]` gets sequence `j`'s choice and
    /// `hidden[j*d..(j+1)*d]` its row of X after the last block (see
    /// [`forward_chunk_greedy`](Self::forward_chunk_greedy)).
    pub fn forward_batch_greedy(
        &self,
        ids: &[u32],
        slots: &[&StateSlot],
        s: &mut Scratch,
        picks: &mut [Greedy],
        hidden: &mut [f32],
    ) -> Result<()> {
        let b = ids.len();
        let picks = prefix_mut(picks, b, "greedy picks")?;
        let hidden = prefix_mut(hidden, b * self.hp.n_embd, "hidden")?;
        self.run_batch(ids, slots, s)?;
        let (be, ws) = (&self.backend, s.ws());
        be.greedy(ws, 0..b, picks)?;
        be.read_x(ws, 0..b, hidden)
    }

    /// [`forward_batch_greedy`](Self::forward_batch_greedy) bringing back
    /// each sequence's `k` largest logits instead of one id.
    pub fn forward_batch_top_k(
        &self,
        ids: &[u32],
        slots: &[&StateSlot],
        s: &mut Scratch,
        k: usize,
        out: &mut [TopK],
        hidden: &mut [f32],
    ) -> Result<()> {
        let b = ids.len();
        let out = prefix_mut(out, b, "top-k lists")?;
        let hidden = prefix_mut(hidden, b * self.hp.n_embd, "hidden")?;
        check_top_k(k, self.hp.n_vocab)?;
        self.run_batch(ids, slots, s)?;
        let (be, ws) = (&self.backend, s.ws());
        be.top_k(ws, 0..b, k, out)?;
        be.read_x(ws, 0..b, hidden)
    }

    /// Checks a batch, then its embedding and blocks (X then holds one row
    /// per sequence after the last block).
    fn run_batch(&self, ids: &[u32], slots: &[&StateSlot], s: &mut Scratch) -> Result<()> {
        let b = ids.len();
        if b == 0 {
            return Err(ModelError::Empty);
        }
        if slots.len() != b {
            return Err(ModelError::Batch {
                what: format!(
                    "{b} tokens but {} states (one token per sequence)",
                    slots.len()
                ),
            });
        }
        if b > s.chunk() {
            return Err(ModelError::TooMany {
                n: b,
                what: "sequences",
                chunk: s.chunk(),
            });
        }
        let mut idx = Vec::with_capacity(b);
        for (j, slot) in slots.iter().enumerate() {
            self.check_slot(slot, || format!("state {j}"))?;
            if idx.contains(&slot.index()) {
                return Err(ModelError::Batch {
                    what: format!("state {j} is in the batch twice"),
                });
            }
            idx.push(slot.index());
        }
        self.check_ids(ids)?;
        let (be, ws) = (&self.backend, s.ws());
        // Embedding: one row per sequence.
        be.embed(ws, ids)?;
        be.step(|| {
            for l in 0..self.hp.n_layer {
                block::forward(be, &self.hp, ws, l, Rows::Seqs(&idx))?;
            }
            Ok(())
        })
    }

    /// A state slot for a new sequence, zeroed.
    pub fn new_slot(&self) -> Result<StateSlot> {
        let slot = self.slots.take();
        self.backend.reserve_slots(slot.index() + 1)?;
        self.backend.zero_slot(slot.index())?;
        Ok(slot)
    }

    /// Allocates the state pool for `n` sequences at once (a server's
    /// `--parallel`); later slots beyond it grow the pool.
    pub fn reserve_slots(&self, n: usize) -> Result<()> {
        self.backend.reserve_slots(n)
    }

    /// The slot's state, in host form.
    pub fn read_state(&self, slot: &StateSlot) -> Result<State> {
        self.check_slot(slot, || "the state".into())?;
        self.backend.read_slot(slot.index())
    }

    /// Sets the slot's state from its host form (of this model's shape).
    pub fn write_state(&self, slot: &StateSlot, state: &State) -> Result<()> {
        self.check_slot(slot, || "the state".into())?;
        self.backend.write_slot(slot.index(), state)
    }

    /// Slot `to` = slot `from`, on the device.
    pub fn copy_state(&self, from: &StateSlot, to: &StateSlot) -> Result<()> {
        self.check_slot(from, || "the source state".into())?;
        self.check_slot(to, || "the target state".into())?;
        self.backend.copy_slot(from.index(), to.index())
    }

    /// The slot back to the start of a sequence.
    pub fn reset_state(&self, slot: &StateSlot) -> Result<()> {
        self.check_slot(slot, || "the state".into())?;
        self.backend.zero_slot(slot.index())
    }
}
