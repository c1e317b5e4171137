//! Collecting an importance matrix, as llama-imatrix does: the model runs
//! over a text in chunks of `ctx` tokens, each chunk a fresh sequence (BOS
//! first when the tokenizer asks for one), and for every matmul of every
//! block the squares of its input columns are summed over the tokens
//! ([`convert::imatrix::Imatrix::accumulate`]). `quantize --imatrix` then
//! weights each column by the mean. The perplexity of each chunk's second
//! half comes out too, as llama-imatrix prints it.
//!
//! What is collected, per block `l` (llama.cpp's names, their inputs):
//! `blk.l.ssm_in.weight` the normed residual `[t][d]`, `blk.l.ssm_x.weight`
//! the conv output `[t][E]`, `blk.l.ssm_dt.weight` dt_in `[t][R]` (after
//! Falcon Mamba's RMS norm), `blk.l.ssm_out.weight` the gated scan output
//! `[t][E]`. Not the LM head: llama-imatrix skips it unless asked.
//!
//! One difference: llama-imatrix ignores a matmul of fewer than 16 rows
//! (which can happen at the tail of a micro-batch); every token counts
//! here.

use convert::imatrix::Imatrix;

use crate::backend::Weight;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::session::Session;

/// How to collect.
#[derive(Clone, Debug)]
pub struct ImatrixOptions {
    /// Tokens per chunk (llama-imatrix's `-c`, default 512).
    pub ctx: usize,
    /// At most this many chunks (`--chunks`; None: all).
    pub chunks: Option<usize>,
    /// Also score the second half of each chunk (perplexity).
    pub ppl: bool,
    /// Tokens per forward.
    pub prefill_chunk: usize,
}

/// Progress after each chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkDone {
    pub done: usize,
    pub of: usize,
    /// The perplexity so far, when scoring.
    pub ppl: Option<f64>,
}

/// The name llama.cpp gives the matmul weight `w`, or None for the head.
fn weight_name(w: Weight) -> Option<String> {
    let (l, what) = match w {
        Weight::In(l) => (l, "ssm_in"),
        Weight::X(l) => (l, "ssm_x"),
        Weight::Dt(l) => (l, "ssm_dt"),
        Weight::Out(l) => (l, "ssm_out"),
        Weight::Head => return None,
    };
    Some(format!("blk.{l}.{what}.weight"))
}

/// Runs `model` over `tokens` (the whole text, tokenized with BOS first
/// when `bos` is given, as llama-imatrix tokenizes it) and returns the
/// matrix and the perplexity (when `opts.ppl`). `dataset` is recorded as
/// the text's name. Needs at least two chunks of tokens, as llama-imatrix.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    bos: Option<u32>,
    dataset: String,
    opts: &ImatrixOptions,
    progress: &mut dyn FnMut(ChunkDone),
) -> Result<(Imatrix, Option<f64>)> {
    let ctx = opts.ctx;
    if ctx < 2 {
        return Err(ModelError::Parameter {
            what: format!("--ctx-size {ctx}: a chunk needs at least 2 tokens"),
        });
    }
    if tokens.len() < 2 * ctx {
        return Err(ModelError::Parameter {
            what: format!(
                "the text gives {} tokens: at least {} are needed for chunks of {ctx} (--ctx-size; two chunks, as llama-imatrix asks)",
                tokens.len(),
                2 * ctx
            ),
        });
    }
    let n_chunks = (tokens.len() / ctx).min(opts.chunks.unwrap_or(usize::MAX));
    let mut m = Imatrix::new(vec![dataset], ctx as u32);
    let mut session = Session::try_with_chunk(model, opts.prefill_chunk.max(1))?;
    let mut all = Vec::new();
    let mut chunk = Vec::with_capacity(ctx);
    let first = ctx / 2;
    let (mut nll, mut scored) = (0f64, 0usize);
    for c in 0..n_chunks {
        chunk.clear();
        chunk.extend_from_slice(&tokens[c * ctx..(c + 1) * ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset()?;
        let mut observe = |w: Weight, rows: &[f32]| {
            if let Some(name) = weight_name(w) {
                m.accumulate(&name, rows, in_width(w, model));
            }
        };
        let mut score = |p: usize, row: &[f32]| {
            // Logits at p predict token p+1; positions first..ctx-1 count.
            if !opts.ppl || p < first || p + 1 >= ctx {
                return;
            }
            let target = chunk[p + 1] as usize;
            let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln() + mx;
            nll += lse - row.get(target).copied().unwrap_or(f32::NEG_INFINITY) as f64;
            scored += 1;
        };
        session.feed_each_observed(&chunk, &mut all, &mut score, Some(&mut observe))?;
        m.chunk_count = (c + 1) as u32;
        let ppl = (opts.ppl && scored > 0).then(|| (nll / scored as f64).exp());
        progress(ChunkDone {
            done: c + 1,
            of: n_chunks,
            ppl,
        });
    }
    let ppl = (opts.ppl && scored > 0).then(|| (nll / scored as f64).exp());
    Ok((m, ppl))
}

/// Values per input row of the matmul with weight `w`.
fn in_width(w: Weight, model: &Model) -> usize {
    let hp = &model.hp;
    match w {
        Weight::In(_) | Weight::Head => hp.n_embd,
        Weight::X(_) | Weight::Out(_) => hp.d_inner,
        Weight::Dt(_) => hp.dt_rank,
    }
}
