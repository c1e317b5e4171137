//! The whole-model forward over one chunk: embedding lookup, the blocks, the
//! final norm and the LM head (for the last position, or for every position
//! when asked).

use super::{block, matmul::matmul, Model, Scratch};
use crate::error::{ModelError, Result};
use crate::state::State;

impl Model {
    /// Embedding lookup: row `j` of `x` ([len][d]) = token_embd row
    /// `ids[j]` (token_embd {d, V}), dequantized.
    pub(crate) fn embed(&self, ids: &[u32], x: &mut [f32]) -> Result<()> {
        let (d, v) = (self.hp.n_embd, self.hp.n_vocab);
        let emb = self.data(&self.tok_embd);
        let rb = self.tok_embd.row_bytes;
        for (&id, xr) in ids.iter().zip(x.chunks_exact_mut(d)) {
            let i = id as usize;
            let row = emb
                .get(i * rb..(i + 1) * rb)
                .filter(|_| i < v)
                .ok_or(ModelError::Token { id, vocab: v })?;
            quant::dequantize_row(self.tok_embd.kernel.weight, row, xr).map_err(|source| {
                ModelError::Quant {
                    name: self.tok_embd.name.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Runs `ids` (1..=s.chunk tokens) through the model, carrying `state`.
    /// The last position's logits land in `s.logits`; with `all`, every
    /// position's logits are written to it as [t][V].
    pub fn forward_chunk(
        &self,
        ids: &[u32],
        state: &mut State,
        s: &mut Scratch,
        all: Option<&mut [f32]>,
    ) -> Result<()> {
        let t = ids.len();
        if t == 0 {
            return Err(ModelError::Empty);
        }
        let (d, v) = (self.hp.n_embd, self.hp.n_vocab);
        if t > s.chunk {
            return Err(ModelError::Metadata {
                file: "<session>".into(),
                key: "chunk".into(),
                what: format!("{t} tokens exceed the scratch chunk {}", s.chunk),
            });
        }
        self.embed(ids, &mut s.x)?;
        if state.layers.len() != self.layers.len() {
            return Err(ModelError::Metadata {
                file: "<session>".into(),
                key: "state".into(),
                what: "state belongs to another model".into(),
            });
        }
        for (layer, st) in self.layers.iter().zip(state.layers.iter_mut()) {
            block::forward(self, layer, st, s, t)?;
        }
        let out = self.data(&self.output);
        match all {
            Some(dst) => {
                for j in 0..t {
                    block::rms_norm(
                        &s.x[j * d..(j + 1) * d],
                        Some(&self.output_norm),
                        self.hp.norm_eps,
                        &mut s.h[j * d..(j + 1) * d],
                    );
                }
                let dst = dst.get_mut(..t * v).ok_or(ModelError::Metadata {
                    file: "<session>".into(),
                    key: "logits".into(),
                    what: "all-logits buffer too small".into(),
                })?;
                matmul(&self.output, out, &s.h, t, dst, &mut s.act, &mut s.tmp)?;
                s.logits.copy_from_slice(&dst[(t - 1) * v..t * v]);
            }
            None => {
                let last = &s.x[(t - 1) * d..t * d];
                block::rms_norm(
                    last,
                    Some(&self.output_norm),
                    self.hp.norm_eps,
                    &mut s.h[..d],
                );
                matmul(
                    &self.output,
                    out,
                    &s.h[..d],
                    1,
                    &mut s.logits,
                    &mut s.act,
                    &mut s.tmp,
                )?;
            }
        }
        Ok(())
    }
}
