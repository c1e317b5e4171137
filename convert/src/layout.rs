//! The tensors of a Mamba-1 checkpoint: Hugging Face names and shapes, the
//! GGUF names, dims and transforms llama.cpp's `mamba` architecture uses.
//!
//! Shapes: HF row-major (outermost first); GGUF dims innermost first. With
//! d = hidden, E = d_inner, N = state, R = dt_rank, K = conv kernel, V = vocab:
//!
//! | HF                                   | HF shape   | GGUF                     | dims      |
//! |--------------------------------------|------------|--------------------------|-----------|
//! | backbone.embeddings.weight           | [V, d]     | token_embd.weight        | {d, V}    |
//! | backbone.layers.i.norm.weight        | [d]        | blk.i.attn_norm.weight   | {d}       |
//! | backbone.layers.i.mixer.in_proj.weight   | [2E, d] | blk.i.ssm_in.weight     | {d, 2E}   |
//! | backbone.layers.i.mixer.conv1d.weight    | [E,1,K] | blk.i.ssm_conv1d.weight | {K, E}    |
//! | backbone.layers.i.mixer.conv1d.bias      | [E]     | blk.i.ssm_conv1d.bias   | {E}       |
//! | backbone.layers.i.mixer.x_proj.weight    | [R+2N, E] | blk.i.ssm_x.weight    | {E, R+2N} |
//! | backbone.layers.i.mixer.dt_proj.weight   | [E, R]  | blk.i.ssm_dt.weight     | {R, E}    |
//! | backbone.layers.i.mixer.dt_proj.bias     | [E]     | blk.i.ssm_dt.bias       | {E}       |
//! | backbone.layers.i.mixer.A_log            | [E, N]  | blk.i.ssm_a (= -exp)    | {N, E}    |
//! | backbone.layers.i.mixer.D                | [E]     | blk.i.ssm_d             | {E}       |
//! | backbone.layers.i.mixer.out_proj.weight  | [d, E]  | blk.i.ssm_out.weight    | {E, d}    |
//! | backbone.norm_f.weight               | [d]        | output_norm.weight       | {d}       |
//! | lm_head.weight (absent when tied)    | [V, d]     | output.weight            | {d, V}    |

use crate::config::HParams;

/// What is done to the values on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// `A = -exp(A_log)`.
    NegExp,
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct Planned {
    pub hf_name: String,
    pub gguf_name: String,
    /// Expected HF shape (outermost first).
    pub hf_shape: Vec<u64>,
    /// GGUF dims (innermost first).
    pub dims: Vec<u64>,
    pub transform: Transform,
    /// A bitsandbytes-quantizable Linear weight (in_proj, x_proj, dt_proj, out_proj).
    pub linear: bool,
}

impl Planned {
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

fn p(hf: String, gg: String, hf_shape: Vec<u64>, t: Transform, linear: bool) -> Planned {
    // GGUF dims are the HF shape reversed, with conv1d's middle 1 squeezed.
    let mut dims: Vec<u64> = hf_shape.iter().rev().copied().collect();
    if gg.ends_with("ssm_conv1d.weight") && dims.len() == 3 {
        dims.remove(1);
    }
    Planned {
        hf_name: hf,
        gguf_name: gg,
        hf_shape,
        dims,
        transform: t,
        linear,
    }
}

/// The tensors a checkpoint with these hyper-parameters must hold, in the
/// order we write them. `with_output`: write output.weight (untied head).
pub fn plan(hp: &HParams, with_output: bool) -> Vec<Planned> {
    let (d, e, n, r, k, v) = (
        hp.d_model,
        hp.d_inner,
        hp.d_state,
        hp.dt_rank,
        hp.d_conv,
        hp.vocab_size,
    );
    let mut out = vec![p(
        "backbone.embeddings.weight".into(),
        "token_embd.weight".into(),
        vec![v, d],
        Transform::None,
        false,
    )];
    for i in 0..hp.n_layer {
        let hf = |s: &str| format!("backbone.layers.{i}.{s}");
        let gg = |s: &str| format!("blk.{i}.{s}");
        out.push(p(
            hf("norm.weight"),
            gg("attn_norm.weight"),
            vec![d],
            Transform::None,
            false,
        ));
        out.push(p(
            hf("mixer.in_proj.weight"),
            gg("ssm_in.weight"),
            vec![2 * e, d],
            Transform::None,
            true,
        ));
        out.push(p(
            hf("mixer.conv1d.weight"),
            gg("ssm_conv1d.weight"),
            vec![e, 1, k],
            Transform::None,
            false,
        ));
        out.push(p(
            hf("mixer.conv1d.bias"),
            gg("ssm_conv1d.bias"),
            vec![e],
            Transform::None,
            false,
        ));
        out.push(p(
            hf("mixer.x_proj.weight"),
            gg("ssm_x.weight"),
            vec![r + 2 * n, e],
            Transform::None,
            true,
        ));
        out.push(p(
            hf("mixer.dt_proj.weight"),
            gg("ssm_dt.weight"),
            vec![e, r],
            Transform::None,
            true,
        ));
        out.push(p(
            hf("mixer.dt_proj.bias"),
            gg("ssm_dt.bias"),
            vec![e],
            Transform::None,
            false,
        ));
        out.push(p(
            hf("mixer.A_log"),
            gg("ssm_a"),
            vec![e, n],
            Transform::NegExp,
            false,
        ));
        out.push(p(
            hf("mixer.D"),
            gg("ssm_d"),
            vec![e],
            Transform::None,
            false,
        ));
        out.push(p(
            hf("mixer.out_proj.weight"),
            gg("ssm_out.weight"),
            vec![d, e],
            Transform::None,
            true,
        ));
    }
    out.push(p(
        "backbone.norm_f.weight".into(),
        "output_norm.weight".into(),
        vec![d],
        Transform::None,
        false,
    ));
    if with_output {
        out.push(p(
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![v, d],
            Transform::None,
            false,
        ));
    }
    out
}

/// The suffixes bitsandbytes adds next to a quantized weight.
pub const BNB_AUX: &[&str] = &[
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".quant_state.bitsandbytes__fp4",
    ".quant_state.bitsandbytes__nf4",
];
