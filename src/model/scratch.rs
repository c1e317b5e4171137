//! Preallocated working buffers for a forward pass over up to `chunk` tokens.
//! Sized once per session so prefill and decode allocate nothing per token
//! (the only growth is the first `--all` logits request).

use super::{matmul::act_bytes, Model};

/// Per-session scratch. Shapes are [chunk][...] row-major.
#[derive(Debug, Default)]
pub struct Scratch {
    pub chunk: usize,
    /// [C][d] residual stream (fp32).
    pub x: Vec<f32>,
    /// [C][d] RMS-normed input of a block / of the head.
    pub h: Vec<f32>,
    /// [C][2E] in_proj output: x then z per row.
    pub xz: Vec<f32>,
    /// [C][E] conv output after SiLU.
    pub xc: Vec<f32>,
    /// [C][R+2N] x_proj output: dt, B, C per row.
    pub xdbl: Vec<f32>,
    /// [C][R] dt part of xdbl, contiguous for dt_proj.
    pub dt_in: Vec<f32>,
    /// [C][E] softplus(dt_proj(dt) + bias).
    pub dt: Vec<f32>,
    /// [C][E] gated scan output, input of out_proj.
    pub y: Vec<f32>,
    /// [C][d] out_proj output.
    pub out: Vec<f32>,
    /// [V] logits of the last position.
    pub logits: Vec<f32>,
    /// Quantized activations of one matmul.
    pub act: Vec<u8>,
    /// Per-task matmul output blocks.
    pub tmp: Vec<f32>,
}

impl Scratch {
    /// Buffers for chunks of up to `chunk` tokens (at least 1).
    pub fn new(model: &Model, chunk: usize) -> Scratch {
        let c = chunk.max(1);
        let hp = &model.hp;
        let (d, e, r, n) = (hp.n_embd, hp.d_inner, hp.dt_rank, hp.d_state);
        let mut act = 0;
        let mut rows = 0;
        for l in &model.layers {
            for m in [&l.ssm_in, &l.ssm_x, &l.ssm_dt, &l.ssm_out] {
                act = act.max(act_bytes(m, c));
                rows = rows.max(m.n_out);
            }
        }
        act = act.max(act_bytes(&model.output, 1));
        Scratch {
            chunk: c,
            x: vec![0.0; c * d],
            h: vec![0.0; c * d],
            xz: vec![0.0; c * 2 * e],
            xc: vec![0.0; c * e],
            xdbl: vec![0.0; c * (r + 2 * n)],
            dt_in: vec![0.0; c * r],
            dt: vec![0.0; c * e],
            y: vec![0.0; c * e],
            out: vec![0.0; c * d],
            logits: vec![0.0; hp.n_vocab],
            act: Vec::with_capacity(act),
            tmp: Vec::with_capacity(c * rows),
        }
    }

    /// Bytes held by the scratch buffers.
    pub fn bytes(&self) -> usize {
        4 * (self.x.capacity()
            + self.h.capacity()
            + self.xz.capacity()
            + self.xc.capacity()
            + self.xdbl.capacity()
            + self.dt_in.capacity()
            + self.dt.capacity()
            + self.y.capacity()
            + self.out.capacity()
            + self.logits.capacity()
            + self.tmp.capacity())
            + self.act.capacity()
    }
}
