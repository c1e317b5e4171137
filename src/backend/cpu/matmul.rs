//! Threaded matmuls over the quant crate's single-threaded kernels.
//!
//! The f32 activations are quantized once per matmul to the kernel's activation
//! type (Q8_0, Q8_K or F32, as ggml does), then the weight rows are split into
//! contiguous ranges that rayon's current pool computes in parallel. Weights
//! stay quantized in the mapped file; each kernel dequantizes as it dots.
//! Buffers come from the caller's scratch: nothing is allocated per call once
//! the scratch has grown to its working size.

use super::team::{par_chunks_each, par_chunks_mut};

use super::CpuMat as Mat;
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

/// Below this many rows (a decode step's one, a batched step's few), per-row
/// work stays on the calling thread: activation quantization here, the
/// block's row-wise steps in `block`.
pub(crate) const PAR_MIN_ROWS: usize = 4;

/// Quantize `t` rows of `m.n_in` values in `x` into the front of `act`
/// (grown if short, never shrunk, so alternating sizes do not re-zero it);
/// returns the bytes written. Rows are quantized in parallel for a chunk.
fn quantize_acts(m: &Mat, x: &[f32], t: usize, act: &mut Vec<u8>) -> Result<usize> {
    let k = &m.kernel;
    let ab = quant::row_size(k.act, m.n_in).map_err(|e| quant_err(m, e))?;
    if act.len() < ab * t {
        act.resize(ab * t, 0);
    }
    let x = &x[..t * m.n_in];
    let dst = &mut act[..ab * t];
    let n = m.n_in;
    if t >= PAR_MIN_ROWS && rayon::current_num_threads() > 1 {
        par_chunks_mut(dst, ab, |j, d| {
            quant::quantize_row(k.act, &x[j * n..(j + 1) * n], d)
        })
    } else {
        x.chunks_exact(n)
            .zip(dst.chunks_exact_mut(ab))
            .try_for_each(|(src, d)| quant::quantize_row(k.act, src, d))
    }
    .map_err(|e| quant_err(m, e))?;
    Ok(ab * t)
}

/// A pointer to an f32 buffer that parallel tasks write disjoint parts of
/// (the matmul's output rows here, the scan's channel columns in `block`).
/// Whoever makes one holds the buffer's `&mut` borrow until the tasks end.
pub(crate) struct SharedOut<T = f32>(pub(crate) *mut T);
// SAFETY: used only to write disjoint elements from tasks that the creating
// call waits for, while it holds the buffer mutably borrowed.
unsafe impl<T: Send> Sync for SharedOut<T> {}

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
    let used = quantize_acts(m, x, t, act)?;
    let a = &act[..used];
    let k = &m.kernel;
    quant::check_matmul(k, n, rows, w, t, a, out).map_err(|e| quant_err(m, e))?;
    let serial = rows * n < PAR_MIN_WORK || rayon::current_num_threads() <= 1;
    if t == 1 {
        if serial {
            quant::matvec_unchecked(k, n, w, a, out);
        } else {
            let rc = rows_per_task(rows);
            // `w` holds rows * rb bytes (check_matmul).
            par_chunks_each(out, rc, |i, o| {
                let wc = &w[i * rc * rb..(i * rc + o.len()) * rb];
                quant::matvec_unchecked(k, n, wc, a, o);
            });
        }
        return Ok(());
    }
    if serial {
        quant::matmul_unchecked(k, n, rows, w, t, a, out);
        return Ok(());
    }
    // Each task computes its rows for all t activations into a [t][its rows]
    // block of `tmp`, then copies them into out's [t][rows] layout while they
    // are still in cache.
    let rc = rows_per_task(rows);
    if tmp.len() < t * rows {
        tmp.resize(t * rows, 0.0);
    }
    let shared = SharedOut(out.as_mut_ptr());
    par_chunks_each(&mut tmp[..t * rows], t * rc, |c, tc| {
        let (r0, r) = (c * rc, tc.len() / t);
        let wc = &w[r0 * rb..(r0 + r) * rb];
        quant::matmul_unchecked(k, n, r, wc, t, a, tc);
        let shared = &shared;
        for (j, src) in tc.chunks_exact(r).enumerate() {
            // SAFETY: r0 + r <= rows and j < t, so the range lies inside
            // `out` (t * rows values, borrowed mutably by this call for
            // the whole parallel region); tasks own disjoint row ranges
            // r0..r0 + r, so no two writes overlap.
            unsafe {
                std::slice::from_raw_parts_mut(shared.0.add(j * rows + r0), r).copy_from_slice(src)
            };
        }
    });
    Ok(())
}

/// Bytes of activation scratch a matmul over `t` rows of `m` needs.
pub fn act_bytes(m: &Mat, t: usize) -> usize {
    m.kernel.act.row_bytes(m.n_in).unwrap_or(0) * t
}
