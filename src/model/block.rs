//! One Mamba block, device-independent: the steps of transformers'
//! `MambaMixer.slow_forward` / mamba-minimal's `MambaBlock.forward`, top to
//! bottom, each one op of the [`Backend`] (whose contract and shapes are in
//! [`crate::backend`]). The CPU's fast paths (SIMD scan, tiled matmuls) live
//! in `backend/cpu`, not here.
//!
//! Glossary: t rows (tokens of one sequence, or one token of each of t
//! sequences: [`Rows`]), d = embedding, E = d_inner, N = state size,
//! R = dt rank, K = conv kernel.

use crate::backend::{Act, Backend, Rows, Weight, Workspace};
use crate::error::Result;
use crate::model::Hparams;

/// Sees each matmul's input before it runs: the weight and the input rows
/// (`[t][in width]`, host memory). The importance matrix is made this way.
pub type Observer<'a, 'f> = &'a mut (dyn FnMut(Weight, &[f32]) + 'f);

/// Runs block `l` over the rows of `ws`'s residual stream X (`[t][d]`),
/// carrying the rows' states in their slots, and adds its output to X.
pub fn forward(be: &Backend, hp: &Hparams, ws: &mut Workspace, l: usize, rows: Rows) -> Result<()> {
    forward_observed(be, hp, ws, l, rows, None)
}

/// [`forward`], showing `observe` each matmul's input first (read back
/// from the backend: slow on a GPU, for the importance matrix only).
pub fn forward_observed(
    be: &Backend,
    hp: &Hparams,
    ws: &mut Workspace,
    l: usize,
    rows: Rows,
    mut observe: Option<Observer<'_, '_>>,
) -> Result<()> {
    let t = rows.len();
    let mut host = Vec::new();
    let mut see = |ws: &mut Workspace, w: Weight, act: Act| -> Result<()> {
        if let Some(f) = observe.as_mut() {
            host.resize(t * be.act_width(act), 0.0);
            be.read_act(ws, act, 0..t, &mut host)?;
            f(w, &host);
        }
        Ok(())
    };

    // h = rmsnorm(x) * norm                                   h    [t][d]
    be.rms_norm(ws, l, t)?;

    // (x_in | z) = in_proj(h)                                 xz   [t][2E]
    see(ws, Weight::In(l), Act::H)?;
    be.matmul(ws, Weight::In(l), Act::H, Act::Xz, t)?;
    // The gate silu(z) only ever enters as a factor: apply it once here.
    be.silu_gate(ws, t)?;

    // x = silu(conv1d(x_in) + conv_b), causal over the sequence,
    // the last K-1 inputs kept in the conv state [K-1][E]     xc   [t][E]
    be.conv(ws, l, rows)?;

    // (dt_in | B | C) = x_proj(x)                              xdbl [t][R+2N]
    see(ws, Weight::X(l), Act::Xc)?;
    be.matmul(ws, Weight::X(l), Act::Xc, Act::Xdbl, t)?;
    // Falcon Mamba only: dt_in, B and C each RMS-normed, no weight.
    if hp.dt_b_c_rms {
        be.dt_b_c_rms(ws, t)?;
    }

    // dt = softplus(dt_proj(dt_in) + dt_bias)                 dt   [t][E]
    be.split_dt(ws, t)?; //                                    dt_in [t][R]
    see(ws, Weight::Dt(l), Act::DtIn)?;
    be.matmul(ws, Weight::Dt(l), Act::DtIn, Act::Dt, t)?;
    be.dt_softplus(ws, l, t)?;

    // Selective scan, per channel e and state n, token by token
    // (A = -exp(A_log) [E][N], ssm state h [E][N]):
    //   h = exp(dt A) h + dt B x;  y = C . h
    // then y = (y + x D) * silu(z)                             y    [t][E]
    be.scan(ws, l, rows)?;

    // x = x + out_proj(y)                                      out  [t][d]
    see(ws, Weight::Out(l), Act::Y)?;
    be.matmul(ws, Weight::Out(l), Act::Y, Act::Out, t)?;
    be.residual(ws, t)
}
