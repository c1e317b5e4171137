//! Threaded matmuls over the quant crate's single-threaded kernels.
//!
//! The f32 activations are quantized once per matmul to the kernel's activation
//! type (Q8_0, Q8_K or F32, as ggml does), then the weight rows are split into
//! contiguous ranges that rayon's current pool computes in parallel. Weights
//! stay quantized in the mapped file; each kernel dequantizes as it dots.
//! Buffers come from the caller's scratch: nothing is allocated per call once
//! the scratch has grown to its working size.

use rayon::prelude::*;

use super::Mat;
use crate::error::{ModelError, Result};

/// Below this many weight values a matmul runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 15;

/// Rows per parallel task: several tasks per thread for balance, at least 16
/// rows so a task is worth its scheduling, and a multiple of 8 so tiled
/// kernels (eight rows at a time) get whole tiles.
fn rows_per_task(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 4).max(16).next_multiple_of(8)
}

fn quant_err(m: &Mat, source: quant::QuantError) -> ModelError {
    ModelError::Quant {
        name: m.name.clone(),
        source,
    }
}

/// Quantize `t` rows of `m.n_in` values in `x` into `act` (resized within its
/// capacity).
fn quantize_acts(m: &Mat, x: &[f32], t: usize, act: &mut Vec<u8>) -> Result<()> {
    let k = &m.kernel;
    let ab = quant::row_size(k.act, m.n_in).map_err(|e| quant_err(m, e))?;
    act.resize(ab * t, 0);
    for (src, dst) in x.chunks_exact(m.n_in).take(t).zip(act.chunks_exact_mut(ab)) {
        quant::quantize_row(k.act, src, dst).map_err(|e| quant_err(m, e))?;
    }
    Ok(())
}

/// `out[j][r] = dot(row r of m, x[j])` for `j < t`: `x` is `[t][n_in]`, `out`
/// is `[t][n_out]`. `w` is the matrix's bytes (`Model::data`). `act` and `tmp`
/// are scratch.
pub fn matmul(
    m: &Mat,
    w: &[u8],
    x: &[f32],
    t: usize,
    out: &mut [f32],
    act: &mut Vec<u8>,
    tmp: &mut Vec<f32>,
) -> Result<()> {
    let (n, rows, rb) = (m.n_in, m.n_out, m.row_bytes);
    if x.len() < t * n || out.len() < t * rows {
        return Err(ModelError::Quant {
            name: m.name.clone(),
            source: quant::QuantError::BufferSize {
                ty: m.kernel.act,
                what: "activation/output",
                expected: t * n,
                got: x.len(),
            },
        });
    }
    let out = &mut out[..t * rows];
    quantize_acts(m, x, t, act)?;
    let a = &act[..];
    let k = &m.kernel;
    quant::check_matmul(k, n, rows, w, t, a, out).map_err(|e| quant_err(m, e))?;
    let serial = rows * n < PAR_MIN_WORK || rayon::current_num_threads() <= 1;
    if t == 1 {
        if serial {
            quant::matvec(k, n, w, a, out);
        } else {
            let rc = rows_per_task(rows);
            out.par_chunks_mut(rc)
                .zip(w.par_chunks(rc * rb))
                .for_each(|(o, wc)| quant::matvec(k, n, wc, a, o));
        }
        return Ok(());
    }
    if serial {
        quant::matmul(k, n, rows, w, t, a, out);
        return Ok(());
    }
    // Each task writes its rows for all t activations as a [t][its rows] block
    // of `tmp`; the blocks are then scattered into out's [t][rows] layout.
    let rc = rows_per_task(rows);
    tmp.resize(t * rows, 0.0);
    tmp.par_chunks_mut(t * rc)
        .zip(w.par_chunks(rc * rb))
        .for_each(|(tc, wc)| {
            let r = wc.len() / rb;
            quant::matmul(k, n, r, wc, t, a, &mut tc[..t * r]);
        });
    for (c, tc) in tmp.chunks(t * rc).enumerate() {
        let r0 = c * rc;
        let r = tc.len() / t;
        for j in 0..t {
            out[j * rows + r0..j * rows + r0 + r].copy_from_slice(&tc[j * r..(j + 1) * r]);
        }
    }
    Ok(())
}

/// Bytes of activation scratch a matmul over `t` rows of `m` needs.
pub fn act_bytes(m: &Mat, t: usize) -> usize {
    m.kernel.act.row_bytes(m.n_in).unwrap_or(0) * t
}
