//! Batched decode: one token for each of B independent sequences in one
//! forward. The scratch's rows are sequences instead of time steps: the
//! embedding lookup, the RMS norms, every projection (in, x, dt, out) and the
//! LM head run over all B rows at once (one matmul each, so each weight row
//! is read once per step for all sequences), while the causal conv and the
//! selective scan run row by row on each sequence's own state.
//!
//! A matmul over t rows gives per row bit for bit the matvec of that row, and
//! conv and scan are per row, so each sequence's logits equal, bit for bit,
//! stepping that sequence alone (`forward_chunk` with one token).
//!
//! Shapes (row-major, B = ids.len() <= s.chunk, V = vocabulary):
//!   x       [B][d]   residual stream (row j: sequence j's token)
//!   logits  [B][V]   the caller's buffer

use super::{block, matmul::matmul, Model, Scratch};
use crate::error::{ModelError, Result};
use crate::state::State;

fn mismatch(what: String) -> ModelError {
    ModelError::Metadata {
        file: "<session>".into(),
        key: "batch".into(),
        what,
    }
}

impl Model {
    /// Feeds `ids[j]` to the sequence whose state is `states[j]`, for every
    /// `j`, and writes its logits to `logits[j*V..(j+1)*V]`. `ids` and
    /// `states` have the same length B, 1 <= B <= `s.chunk`; `logits` holds at
    /// least B*V values; every state must belong to this model (and the
    /// states must be distinct, which `&mut` guarantees).
    pub fn forward_batch(
        &self,
        ids: &[u32],
        states: &mut [&mut State],
        s: &mut Scratch,
        logits: &mut [f32],
    ) -> Result<()> {
        let b = ids.len();
        if b == 0 {
            return Err(ModelError::Empty);
        }
        let (d, v) = (self.hp.n_embd, self.hp.n_vocab);
        if states.len() != b {
            return Err(mismatch(format!(
                "{b} tokens but {} states (one token per sequence)",
                states.len()
            )));
        }
        if b > s.chunk {
            return Err(mismatch(format!(
                "{b} sequences exceed the scratch chunk {}",
                s.chunk
            )));
        }
        let have = logits.len();
        let out = logits.get_mut(..b * v).ok_or_else(|| {
            mismatch(format!(
                "logits buffer of {have} values, {b} sequences need {}",
                b * v
            ))
        })?;
        let hp = &self.hp;
        let (conv, ssm) = (
            hp.d_conv.saturating_sub(1) * hp.d_inner,
            hp.d_inner * hp.d_state,
        );
        for (j, st) in states.iter().enumerate() {
            let same = st.layers.len() == self.layers.len()
                && st
                    .layers
                    .iter()
                    .all(|l| l.conv.len() == conv && l.ssm.len() == ssm);
            if !same {
                return Err(mismatch(format!("state {j} belongs to another model")));
            }
        }
        // Embedding: one row per sequence.
        self.embed(ids, &mut s.x)?;
        for (li, layer) in self.layers.iter().enumerate() {
            block::forward_seqs(self, layer, li, states, s)?;
        }
        // Final norm per row, then the LM head over all rows: [B][V].
        for j in 0..b {
            block::rms_norm(
                &s.x[j * d..(j + 1) * d],
                Some(&self.output_norm),
                self.hp.norm_eps,
                &mut s.h[j * d..(j + 1) * d],
            );
        }
        matmul(
            &self.output,
            self.data(&self.output),
            &s.h[..b * d],
            b,
            out,
            &mut s.act,
            &mut s.tmp,
        )
    }
}
