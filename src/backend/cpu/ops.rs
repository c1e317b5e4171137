//! The CPU's row-wise steps: RMS norms, the causal depthwise conv with its
//! state, and the helper that runs a chunk's rows in parallel.

use super::matmul::PAR_MIN_ROWS;
use super::team::par_chunks_each;

/// Calls `f(j, row j)` for the first `t` rows of width `w` of `buf`, in
/// parallel from [`PAR_MIN_ROWS`] rows on (a prefill chunk; a decode step's
/// rows stay on the calling thread).
pub(super) fn each_row(
    buf: &mut [f32],
    w: usize,
    t: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let buf = &mut buf[..t * w];
    if t >= PAR_MIN_ROWS && rayon::current_num_threads() > 1 {
        par_chunks_each(buf, w, f);
    } else {
        buf.chunks_exact_mut(w)
            .enumerate()
            .for_each(|(j, r)| f(j, r));
    }
}

/// Columns per part when a decode step's one row is split across threads
/// (a multiple of 8: SIMD bodies and tails fall as in one call over the row).
const COL_PART: usize = 1024;

/// `f(col0, piece)` over `row` in pieces of [`COL_PART`] columns, in
/// parallel when there are several and several threads (a decode step's
/// row-wise ops, whose elements are independent); else `f(0, row)`.
pub(super) fn each_col_part(row: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if row.len() >= 2 * COL_PART && rayon::current_num_threads() > 1 {
        par_chunks_each(row, COL_PART, |i, c| f(i * COL_PART, c));
    } else {
        f(0, row);
    }
}

/// `out = x / sqrt(mean(x^2) + eps) * w` (w = None: weightless).
pub(super) fn rms_norm(x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = 1.0 / (ss + eps).sqrt();
    match w {
        Some(w) => {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = v * scale * g;
            }
        }
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale;
            }
        }
    }
}

/// Weightless RMS norm in place.
pub(super) fn rms_norm_inplace(x: &mut [f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = 1.0 / (ss + eps).sqrt();
    for v in x {
        *v *= scale;
    }
}

/// y_j[e] = silu(b[e] + sum_k w[k][e] * in_{j-K+1+k}[e]), inputs from the conv
/// state (the last K-1 inputs, oldest first) then the chunk. Rows are
/// independent given the state, so a chunk's rows run in parallel; the state
/// then takes the chunk's last K-1 inputs.
/// `w` is [K][E] (tap-major), `b` [E], `cs` the state [(K-1)][E], `xz` the
/// in_proj rows [t][2E] (x_in is the first half), `xc` the output [t][E].
pub(super) fn conv(
    (e, k): (usize, usize),
    (w, b): (&[f32], &[f32]),
    cs: &mut [f32],
    xz: &[f32],
    xc: &mut [f32],
    t: usize,
) {
    if k == 0 {
        return;
    }
    {
        let cs = &cs[..];
        // Input i of the chunk (i < 0: from the state, -1 the newest).
        let input = |i: isize| -> &[f32] {
            if i >= 0 {
                let i = i as usize;
                &xz[i * 2 * e..i * 2 * e + e]
            } else {
                let m = (k as isize - 1 + i) as usize;
                &cs[m * e..(m + 1) * e]
            }
        };
        // Row j's channels c0..c0 + o.len().
        let row = |j: usize, c0: usize, o: &mut [f32]| {
            let n = o.len();
            o.copy_from_slice(&b[c0..c0 + n]);
            for tap in 0..k {
                let w = &w[tap * e + c0..tap * e + c0 + n];
                let src = &input(j as isize + tap as isize - (k as isize - 1))[c0..c0 + n];
                for ((ov, &wv), &pv) in o.iter_mut().zip(w).zip(src) {
                    *ov += wv * pv;
                }
            }
            quant::math::silu_slice(o);
        };
        if t == 1 {
            // A decode step: its one row's channels split across threads.
            each_col_part(&mut xc[..e], |c0, o| row(0, c0, o));
        } else {
            each_row(xc, e, t, |j, o| row(j, 0, o));
        }
    }
    // State row m becomes input t - (K-1) + m: an older state row t + m (> m,
    // so a forward in-place copy) or chunk row t - (K-1) + m.
    for m in 0..k - 1 {
        let i = (t + m) as isize - (k as isize - 1);
        if i >= 0 {
            let i = i as usize;
            cs[m * e..(m + 1) * e].copy_from_slice(&xz[i * 2 * e..i * 2 * e + e]);
        } else {
            cs.copy_within((t + m) * e..(t + m + 1) * e, m * e);
        }
    }
}
