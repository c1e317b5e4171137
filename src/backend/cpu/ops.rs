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
    if t == 1 {
        conv_step((e, k), (w, b), cs, &xz[..e], &mut xc[..e]);
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
        each_row(xc, e, t, |j, o| {
            conv_cols(
                k,
                e,
                (w, b),
                0,
                |tap| input(j as isize + tap as isize - (k as isize - 1)),
                o,
            );
            quant::math::silu_slice(o);
        });
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

/// [`conv`] for one token (a decode step): its channels split across
/// threads, each part computing its outputs from its columns of the state
/// and then shifting those columns (state row m takes row m + 1, the last
/// row takes `x`) while they are in cache, instead of one serial pass over
/// the whole state afterwards. `x` is the token's conv input [E], `o` its
/// output [E].
fn conv_step(
    (e, k): (usize, usize),
    wb: (&[f32], &[f32]),
    cs: &mut [f32],
    x: &[f32],
    o: &mut [f32],
) {
    let cs = &mut cs[..(k - 1) * e];
    let state = super::matmul::SharedOut(cs.as_mut_ptr());
    each_col_part(o, |c0, o| {
        let n = o.len();
        let state = &state;
        let xp = &x[c0..c0 + n];
        // Row m's columns c0..c0 + n (c0 + n <= E) lie inside `cs` ((K-1) *
        // E values, borrowed mutably by this call for the whole parallel
        // region); parts own disjoint column ranges, so no other part reads
        // or writes them.
        let row = |m: usize| {
            // SAFETY: see above; nothing writes these columns while the
            // slices live (until `conv_cols` returns).
            unsafe { std::slice::from_raw_parts(state.0.add(m * e + c0), n) }
        };
        conv_cols(
            k,
            e,
            wb,
            c0,
            |tap| if tap + 1 < k { row(tap) } else { xp },
            o,
        );
        quant::math::silu_slice(o);
        for m in 0..k - 1 {
            // SAFETY: this part's columns of rows m and m + 1 < K - 1 (see
            // above), no longer borrowed; `xp` is another buffer.
            unsafe {
                let dst = state.0.add(m * e + c0);
                if m + 2 < k {
                    std::ptr::copy_nonoverlapping(state.0.add((m + 1) * e + c0), dst, n);
                } else {
                    std::ptr::copy_nonoverlapping(xp.as_ptr(), dst, n);
                }
            }
        }
    });
}

/// `o[c] = b[c0 + c] + sum_tap w[tap][c0 + c] * src(tap)[c]` (before the
/// SiLU): `src(tap)` the tap's inputs from column c0 on. Taps are added in
/// order, a multiply then an add each, as the conv's reference; the
/// channels go in blocks of 64 with every tap's stream advanced per block,
/// so the K weight rows and K inputs are all in flight at once (tap by tap
/// over the whole range, the hardware prefetcher met one 4 KiB stream
/// after another, each starting cold). Built with AVX2 where the CPU has
/// it (the same operations, so the same bits).
fn conv_cols<'a>(
    k: usize,
    e: usize,
    wb: (&[f32], &[f32]),
    c0: usize,
    src: impl Fn(usize) -> &'a [f32],
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { conv_cols_avx2(k, e, wb, c0, src, o) };
        return;
    }
    conv_cols_body(k, e, wb, c0, src, o);
}

/// [`conv_cols_body`] compiled with AVX2 (no FMA: the same roundings).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn conv_cols_avx2<'a>(
    k: usize,
    e: usize,
    wb: (&[f32], &[f32]),
    c0: usize,
    src: impl Fn(usize) -> &'a [f32],
    o: &mut [f32],
) {
    conv_cols_body(k, e, wb, c0, src, o);
}

#[inline(always)]
fn conv_cols_body<'a>(
    k: usize,
    e: usize,
    (w, b): (&[f32], &[f32]),
    c0: usize,
    src: impl Fn(usize) -> &'a [f32],
    o: &mut [f32],
) {
    const BLOCK: usize = 64;
    let n = o.len();
    for cb in (0..n).step_by(BLOCK) {
        let m = BLOCK.min(n - cb);
        let ob = &mut o[cb..cb + m];
        ob.copy_from_slice(&b[c0 + cb..c0 + cb + m]);
        for tap in 0..k {
            let wt = &w[tap * e + c0 + cb..tap * e + c0 + cb + m];
            let s = &src(tap)[cb..cb + m];
            for ((ov, &wv), &pv) in ob.iter_mut().zip(wt).zip(s) {
                *ov += wv * pv;
            }
        }
    }
}
