//! The Mamba block, run over a chunk of `t` tokens with the state carried in
//! and out (mamba-minimal style; transformers' `slow_forward` is the
//! reference). Projections are matrix-matrix products over the chunk; the
//! causal conv and the selective scan walk the chunk token by token.
//! `forward_seqs` runs the same block with the rows meaning one token of each
//! of several sequences (batched decode): the projections are the same
//! matmuls, the conv and scan run per row on that sequence's own state.
//!
//! Shapes (row-major, C = chunk, d = embedding, E = d_inner, N = state,
//! R = dt rank, K = conv kernel):
//!   x      [t][d]      residual stream, fp32
//!   h      [t][d]      rmsnorm(x) * norm
//!   xz     [t][2E]     in_proj(h) = (x_in | z), then (x_in | silu(z))
//!   xc     [t][E]      silu(conv(x_in))           conv state [(K-1)][E]
//!   xdbl   [t][R+2N]   x_proj(xc) = (dt | B | C)   (Falcon: each RMS-normed)
//!   dt     [t][E]      softplus(dt_proj(dt) + dt_bias)
//!   y      [t][E]      (scan(xc, dt, A, B, C) + xc * D) * silu(z)   ssm state [E][N]
//!   out    [t][d]      out_proj(y); x += out

use rayon::prelude::*;

use super::matmul::{matmul, SharedOut, PAR_MIN_ROWS};
use super::{Hparams, Layer, Model, Scratch};
use crate::error::{ModelError, Result};
use crate::state::{LayerState, State};

/// Below this many (channel x state x token) updates the scan runs on the
/// calling thread.
const SCAN_PAR_MIN: usize = 1 << 14;

/// Calls `f(j, row j)` for the first `t` rows of width `w` of `buf`, in
/// parallel from [`PAR_MIN_ROWS`] rows on (a prefill chunk; a decode step's
/// rows stay on the calling thread).
fn each_row(buf: &mut [f32], w: usize, t: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let buf = &mut buf[..t * w];
    if t >= PAR_MIN_ROWS && rayon::current_num_threads() > 1 {
        buf.par_chunks_exact_mut(w)
            .enumerate()
            .for_each(|(j, r)| f(j, r));
    } else {
        buf.chunks_exact_mut(w)
            .enumerate()
            .for_each(|(j, r)| f(j, r));
    }
}

/// `out = x / sqrt(mean(x^2) + eps) * w` (w = None: weightless).
pub(crate) fn rms_norm(x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]) {
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
fn rms_norm_inplace(x: &mut [f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = 1.0 / (ss + eps).sqrt();
    for v in x {
        *v *= scale;
    }
}

/// Runs one block over the first `t` rows of `s.x` (t <= s.chunk), updating
/// `st` and adding the block's output to `s.x`.
pub fn forward(
    model: &Model,
    layer: &Layer,
    st: &mut LayerState,
    s: &mut Scratch,
    t: usize,
) -> Result<()> {
    run(model, layer, Rows::Time(st), s, t)
}

/// Runs one block for one token of each of `states.len()` independent
/// sequences: row `j` of `s.x` is sequence `j`'s token, and its conv and scan
/// use `states[j].layers[li]`. The projections are one matmul over all rows.
pub(crate) fn forward_seqs(
    model: &Model,
    layer: &Layer,
    li: usize,
    states: &mut [&mut State],
    s: &mut Scratch,
) -> Result<()> {
    let t = states.len();
    run(model, layer, Rows::Seqs(states, li), s, t)
}

/// What the rows of the scratch are: `t` time steps of one sequence (with its
/// layer state), or one token of each sequence (with layer `li` of each state).
enum Rows<'a, 'b> {
    Time(&'a mut LayerState),
    Seqs(&'a mut [&'b mut State], usize),
}

fn layer_of(st: &mut State, li: usize) -> Result<&mut LayerState> {
    st.layers.get_mut(li).ok_or_else(|| ModelError::Metadata {
        file: "<session>".into(),
        key: "state".into(),
        what: "state belongs to another model".into(),
    })
}

fn run(model: &Model, layer: &Layer, mut rows: Rows, s: &mut Scratch, t: usize) -> Result<()> {
    let hp = &model.hp;
    let (d, e, n, r) = (hp.n_embd, hp.d_inner, hp.d_state, hp.dt_rank);
    let xw = r + 2 * n;
    let Scratch {
        x,
        h,
        xz,
        xc,
        xdbl,
        dt_in,
        dt,
        y,
        out,
        act,
        tmp,
        ..
    } = s;

    // 1. h = rmsnorm(x) * norm
    {
        let x = &x[..];
        each_row(h, d, t, |j, hr| {
            rms_norm(&x[j * d..(j + 1) * d], Some(&layer.norm), hp.norm_eps, hr)
        });
    }
    // 2. xz = in_proj(h): [t][2E]
    matmul(&layer.ssm_in, model.data(&layer.ssm_in), h, t, xz, act, tmp)?;
    // The gate silu(z) only ever enters as a factor: apply it to the z half
    // of each row here, eight lanes at a time, instead of per channel in the
    // scan.
    each_row(xz, 2 * e, t, |_, row| {
        quant::math::silu_slice(&mut row[e..])
    });
    // 3. causal depthwise conv + SiLU, token by token, state carried.
    match &mut rows {
        Rows::Time(st) => conv(hp, layer, &mut st.conv, xz, xc, t),
        Rows::Seqs(states, li) => {
            for (j, st) in states.iter_mut().enumerate() {
                let ls = layer_of(st, *li)?;
                conv(
                    hp,
                    layer,
                    &mut ls.conv,
                    &xz[j * 2 * e..],
                    &mut xc[j * e..],
                    1,
                );
            }
        }
    }
    // 4. xdbl = x_proj(xc): [t][R+2N]
    matmul(
        &layer.ssm_x,
        model.data(&layer.ssm_x),
        xc,
        t,
        xdbl,
        act,
        tmp,
    )?;
    // 5. Falcon: weightless RMS norm of dt, B and C separately.
    if hp.dt_b_c_rms {
        each_row(xdbl, xw, t, |_, row| {
            let (dtp, bc) = row.split_at_mut(r);
            let (bp, cp) = bc.split_at_mut(n);
            rms_norm_inplace(dtp, hp.dt_b_c_eps);
            rms_norm_inplace(bp, hp.dt_b_c_eps);
            rms_norm_inplace(cp, hp.dt_b_c_eps);
        });
    }
    // 6. dt = softplus(dt_proj(dt_part) + bias): [t][E]
    for (src, dst) in xdbl.chunks_exact(xw).zip(dt_in.chunks_exact_mut(r)).take(t) {
        dst.copy_from_slice(&src[..r]);
    }
    matmul(
        &layer.ssm_dt,
        model.data(&layer.ssm_dt),
        dt_in,
        t,
        dt,
        act,
        tmp,
    )?;
    each_row(dt, e, t, |_, row| {
        for (v, &b) in row.iter_mut().zip(&layer.dt_b) {
            *v += b;
        }
        quant::math::softplus_slice(row);
    });
    // 7. selective scan, gated by silu(z): y [t][E]
    match &mut rows {
        Rows::Time(st) => {
            scan(hp, layer, &mut st.ssm, xz, xc, xdbl, dt, y, t);
        }
        Rows::Seqs(states, li) => {
            for (j, st) in states.iter_mut().enumerate() {
                let ls = layer_of(st, *li)?;
                scan(
                    hp,
                    layer,
                    &mut ls.ssm,
                    &xz[j * 2 * e..],
                    &xc[j * e..],
                    &xdbl[j * xw..],
                    &dt[j * e..],
                    &mut y[j * e..(j + 1) * e],
                    1,
                );
            }
        }
    }
    // 8. out = out_proj(y): [t][d]; residual add.
    matmul(
        &layer.ssm_out,
        model.data(&layer.ssm_out),
        y,
        t,
        out,
        act,
        tmp,
    )?;
    let out = &out[..];
    each_row(x, d, t, |j, row| {
        for (xv, &o) in row.iter_mut().zip(&out[j * d..(j + 1) * d]) {
            *xv += o;
        }
    });
    Ok(())
}

/// y_j[e] = silu(b[e] + sum_k w[k][e] * in_{j-K+1+k}[e]), inputs from the conv
/// state (the last K-1 inputs, oldest first) then the chunk. Rows are
/// independent given the state, so a chunk's rows run in parallel; the state
/// then takes the chunk's last K-1 inputs.
fn conv(hp: &Hparams, layer: &Layer, cs: &mut [f32], xz: &[f32], xc: &mut [f32], t: usize) {
    let (e, k) = (hp.d_inner, hp.d_conv);
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
        each_row(xc, e, t, |j, o| {
            o.copy_from_slice(&layer.conv_b);
            for tap in 0..k {
                let w = &layer.conv_w[tap * e..(tap + 1) * e];
                let src = input(j as isize + tap as isize - (k as isize - 1));
                for ((ov, &wv), &pv) in o.iter_mut().zip(w).zip(src) {
                    *ov += wv * pv;
                }
            }
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

/// The selective scan over `t` tokens for every channel, writing the gated
/// output into `y` ([t][E]). Channels are independent, so
/// channel ranges run in parallel, each walking all t tokens in order.
#[allow(clippy::too_many_arguments)]
fn scan(
    hp: &Hparams,
    layer: &Layer,
    ssm: &mut [f32],
    xz: &[f32],
    xc: &[f32],
    xdbl: &[f32],
    dt: &[f32],
    y: &mut [f32],
    t: usize,
) {
    let (e, n, r) = (hp.d_inner, hp.d_state, hp.dt_rank);
    let args = ScanArgs {
        e,
        n,
        r,
        t,
        a: &layer.a,
        d: &layer.d,
        xz,
        xc,
        xdbl,
        dt,
    };
    // y is [t][E]; each task writes only its own channels' column entries.
    let y = SharedOut(y[..t * e].as_mut_ptr());
    let work = |e0: usize, sc: &mut [f32]| scan_range(&args, e0, sc, &y);
    let threads = rayon::current_num_threads();
    if threads <= 1 || e * n * t < SCAN_PAR_MIN {
        work(0, ssm);
    } else {
        let ce = e.div_ceil(threads * 2).max(32);
        ssm.par_chunks_mut(ce * n)
            .enumerate()
            .for_each(|(i, sc)| work(i * ce, sc));
    }
}

/// The read-only inputs of the scan over one chunk (shapes as at the top).
struct ScanArgs<'a> {
    e: usize,
    n: usize,
    r: usize,
    t: usize,
    /// [E][N] A = -exp(A_log)
    a: &'a [f32],
    /// [E] skip weight D
    d: &'a [f32],
    xz: &'a [f32],
    xc: &'a [f32],
    xdbl: &'a [f32],
    dt: &'a [f32],
}

/// Scan of channels `e0..e0 + sc.len() / N` over the chunk: `sc` their
/// states [ne][N]; their gated outputs go to column entries of `y`. On
/// x86-64 with AVX2 and FMA the same code is compiled 8 lanes wide (the N
/// states of a channel in registers, `exp_nonpos` inlined from quant::math:
/// dt > 0 and A < 0, so exp(dt A) <= 1).
/// Every multiply-add is an explicit `mul_add`, which the other build
/// computes with the same single rounding, so both give the same bits.
fn scan_range(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { scan_range_avx2(p, e0, sc, y) };
        return;
    }
    scan_range_body(p, e0, sc, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_range_avx2(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) {
    if p.n == 16 {
        let done = if p.t >= SCAN_LANES_MIN_T {
            scan_range_16_lanes(p, e0, sc, y)
        } else {
            0
        };
        scan_range_16(p, e0 + done, &mut sc[done * 16..], y);
    } else {
        scan_range_body(p, e0, sc, y);
    }
}

/// From this many tokens on, [`scan_range_16_lanes`] takes the channels in
/// sixteens (its transposes of the states in and out cost more than a
/// decode step's scan).
#[cfg(target_arch = "x86_64")]
const SCAN_LANES_MIN_T: usize = 4;

/// [`scan_range_body`] for N = 16 with channels in the eight lanes, 16
/// channels (two lane groups) at a time: per token, dt, x, the gate and y
/// of the 16 channels are one whole cache line each. (With one channel at
/// a time those four were scalars E floats apart from token to token, a
/// multiple of 4 KiB: the chunk's lines all fell in one L1 set, were
/// evicted before the next channel came back to them, and the stores to y
/// stalled on L2.) The 16 states of a channel are held per lane, [16][8],
/// transposed in and out of the [channel][16] state once per chunk.
/// Per lane, the same operations in the same order as the body, and y's
/// sum over states in the body's order, so the same bits. Returns how many
/// channels it did: the largest multiple of 16 it holds.
///
/// # Safety
/// AVX2 and FMA; `p.n == 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_range_16_lanes(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) -> usize {
    use quant::math::x86::exp_nonpos8;
    use std::arch::x86_64::*;
    const G: usize = 2; // lane groups of 8 channels per block
    let (e, r, t) = (p.e, p.r, p.t);
    let xw = r + 32;
    let ne = (sc.len() / 16).min(e.saturating_sub(e0));
    let blocks = ne / (8 * G);
    // [16][lane] from [lane][16] (states or A of eight channels).
    let lanes = |m: &[f32]| -> [__m256; 16] {
        std::array::from_fn(|k| {
            _mm256_setr_ps(
                m[k],
                m[16 + k],
                m[32 + k],
                m[48 + k],
                m[64 + k],
                m[80 + k],
                m[96 + k],
                m[112 + k],
            )
        })
    };
    let zero = _mm256_setzero_ps();
    for (b, st) in sc.chunks_exact_mut(128 * G).take(blocks).enumerate() {
        let c0 = e0 + 8 * G * b;
        let mut h: [[__m256; 16]; G] = std::array::from_fn(|g| lanes(&st[128 * g..]));
        let a: [[__m256; 16]; G] =
            std::array::from_fn(|g| lanes(&p.a[(c0 + 8 * g) * 16..(c0 + 8 * g + 8) * 16]));
        let dv: [__m256; G] =
            std::array::from_fn(|g| _mm256_loadu_ps(p.d[c0 + 8 * g..c0 + 8 * g + 8].as_ptr()));
        for j in 0..t {
            // Each token's lines are on pages of their own, where the
            // hardware prefetchers do not follow: fetch token j + 2's
            // (first and last channel, in case the 64 bytes straddle two
            // lines), y's for writing.
            let jp = j + 2;
            if jp < t {
                for cp in [c0, c0 + 8 * G - 1] {
                    let f = |v: &[f32], i: usize| v.as_ptr().wrapping_add(i) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(f(p.dt, jp * e + cp));
                    _mm_prefetch::<_MM_HINT_T0>(f(p.xc, jp * e + cp));
                    _mm_prefetch::<_MM_HINT_T0>(f(p.xz, jp * 2 * e + e + cp));
                    _mm_prefetch::<_MM_HINT_ET0>(y.0.wrapping_add(jp * e + cp) as *const i8);
                }
            }
            let bc = &p.xdbl[j * xw + r..(j + 1) * xw];
            for (g, ((h, a), &dv)) in h.iter_mut().zip(&a).zip(&dv).enumerate() {
                let c = c0 + 8 * g;
                let dt = _mm256_loadu_ps(p.dt[j * e + c..j * e + c + 8].as_ptr());
                let x = _mm256_loadu_ps(p.xc[j * e + c..j * e + c + 8].as_ptr());
                let dtx = _mm256_mul_ps(dt, x);
                for k in 0..16 {
                    let da = exp_nonpos8(_mm256_mul_ps(dt, a[k]));
                    h[k] = _mm256_fmadd_ps(da, h[k], _mm256_mul_ps(_mm256_set1_ps(bc[k]), dtx));
                }
                // acc[l] = C[l+8] h[l+8] + C[l] h[l], the body's 8 partial sums.
                let acc: [__m256; 8] = std::array::from_fn(|l| {
                    let lo = _mm256_fmadd_ps(h[l], _mm256_set1_ps(bc[16 + l]), zero);
                    _mm256_fmadd_ps(h[l + 8], _mm256_set1_ps(bc[24 + l]), lo)
                });
                let ysum = _mm256_add_ps(
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
                    _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])),
                );
                let g0 = j * 2 * e + e + c; // silu(z), see `run`
                let gate = _mm256_loadu_ps(p.xz[g0..g0 + 8].as_ptr());
                let v = _mm256_mul_ps(
                    _mm256_add_ps(_mm256_add_ps(ysum, zero), _mm256_mul_ps(x, dv)),
                    gate,
                );
                // SAFETY: as in `scan_range_body`; c + 8 <= e.
                _mm256_storeu_ps(y.0.add(j * e + c), v);
            }
        }
        for (g, hg) in h.iter().enumerate() {
            let mut out = [[0f32; 8]; 16];
            for (o, v) in out.iter_mut().zip(hg) {
                _mm256_storeu_ps(o.as_mut_ptr(), *v);
            }
            for (l, s) in st[128 * g..128 * (g + 1)].chunks_exact_mut(16).enumerate() {
                for (k, v) in s.iter_mut().enumerate() {
                    *v = out[k][l];
                }
            }
        }
    }
    blocks * 8 * G
}

/// [`scan_range_body`] for N = 16 (every Mamba-1 checkpoint) in explicit
/// AVX2: a channel's 16 states stay in two registers for the whole chunk.
/// The same operations in the same order as the body, so the same bits.
///
/// # Safety
/// AVX2 and FMA; `p.n == 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_range_16(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) {
    use quant::math::x86::exp_nonpos8;
    use std::arch::x86_64::*;
    let (e, r, t) = (p.e, p.r, p.t);
    let xw = r + 32;
    let ne = (sc.len() / 16).min(e.saturating_sub(e0));
    for (i, srow) in sc.chunks_exact_mut(16).take(ne).enumerate() {
        let ch = e0 + i;
        let arow = &p.a[ch * 16..(ch + 1) * 16];
        let (a0, a1) = (
            _mm256_loadu_ps(arow.as_ptr()),
            _mm256_loadu_ps(arow.as_ptr().add(8)),
        );
        let mut h0 = _mm256_loadu_ps(srow.as_ptr());
        let mut h1 = _mm256_loadu_ps(srow.as_ptr().add(8));
        for j in 0..t {
            let bc = &p.xdbl[j * xw + r..(j + 1) * xw];
            let (b, c) = (bc.as_ptr(), bc.as_ptr().add(16));
            let dte = p.dt[j * e + ch];
            let xe = p.xc[j * e + ch];
            let (dtv, dtx) = (_mm256_set1_ps(dte), _mm256_set1_ps(dte * xe));
            let e0v = exp_nonpos8(_mm256_mul_ps(dtv, a0));
            h0 = _mm256_fmadd_ps(e0v, h0, _mm256_mul_ps(_mm256_loadu_ps(b), dtx));
            let e1v = exp_nonpos8(_mm256_mul_ps(dtv, a1));
            h1 = _mm256_fmadd_ps(e1v, h1, _mm256_mul_ps(_mm256_loadu_ps(b.add(8)), dtx));
            let acc = _mm256_fmadd_ps(h0, _mm256_loadu_ps(c), _mm256_setzero_ps());
            let acc = _mm256_fmadd_ps(h1, _mm256_loadu_ps(c.add(8)), acc);
            // ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), as the body.
            let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let ysum = _mm_cvtss_f32(s2) + _mm_cvtss_f32(_mm_shuffle_ps::<1>(s2, s2));
            let gate = p.xz[j * 2 * e + e + ch]; // silu(z), see `run`
            let v = (ysum + 0.0 + xe * p.d[ch]) * gate;
            // SAFETY: as in `scan_range_body`.
            *y.0.add(j * e + ch) = v;
        }
        _mm256_storeu_ps(srow.as_mut_ptr(), h0);
        _mm256_storeu_ps(srow.as_mut_ptr().add(8), h1);
    }
}

#[inline(always)]
fn scan_range_body(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) {
    let (e, n, r, t) = (p.e, p.n, p.r, p.t);
    let xw = r + 2 * n;
    let ne = (sc.len() / n).min(e.saturating_sub(e0));
    // Channel outer, token inner: a channel's N states stay in L1 for the
    // whole chunk; B and C of the chunk (t x 2N) and the dt/x/z rows are
    // shared by neighbouring channels, and neighbouring channels fill the
    // same lines of y. (Token-outer order streamed every channel's state
    // through L2 once per token.)
    for (i, srow) in sc.chunks_exact_mut(n).take(ne).enumerate() {
        let ch = e0 + i;
        let arow = &p.a[ch * n..(ch + 1) * n];
        for j in 0..t {
            let row = &p.xdbl[j * xw..(j + 1) * xw];
            let (bv, cv) = (&row[r..r + n], &row[r + n..r + 2 * n]);
            let dte = p.dt[j * e + ch];
            let xe = p.xc[j * e + ch];
            let dtx = dte * xe;
            // h = exp(dt A) h + B (dt x); y = C . h, in 8 partial sums.
            let mut acc = [0f32; 8];
            let mut tail = 0.0f32;
            let mut s8 = srow.chunks_exact_mut(8);
            let mut abc = arow
                .chunks_exact(8)
                .zip(bv.chunks_exact(8).zip(cv.chunks_exact(8)));
            for (sv, (av, (bq, cq))) in (&mut s8).zip(&mut abc) {
                let sv: &mut [f32; 8] = sv.try_into().expect("chunk of 8");
                let (av, bq, cq): (&[f32; 8], &[f32; 8], &[f32; 8]) = (
                    av.try_into().expect("chunk of 8"),
                    bq.try_into().expect("chunk of 8"),
                    cq.try_into().expect("chunk of 8"),
                );
                for l in 0..8 {
                    let h = quant::math::exp_nonpos(dte * av[l]).mul_add(sv[l], bq[l] * dtx);
                    sv[l] = h;
                    acc[l] = h.mul_add(cq[l], acc[l]);
                }
            }
            let rest = s8.into_remainder();
            let k0 = n - rest.len();
            for (k, h) in (k0..n).zip(rest) {
                *h = quant::math::exp_nonpos(dte * arow[k]).mul_add(*h, bv[k] * dtx);
                tail = h.mul_add(cv[k], tail);
            }
            let ysum =
                ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
            let gate = p.xz[j * 2 * e + e + ch]; // silu(z), see `run`
            let v = (ysum + tail + xe * p.d[ch]) * gate;
            // SAFETY: j < t and ch < e, so the index lies in y's t * E
            // values; channel ch belongs to this task alone.
            unsafe { *y.0.add(j * e + ch) = v };
        }
    }
}

// The hand-written scans exist on x86-64 only; elsewhere the body is all.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The hand-written N = 16 scans (one channel at a time, and sixteen
    /// channels in lanes) are the generic body bit for bit: states and
    /// outputs, over a chunk, for channel ranges not starting at 0, with a
    /// count (37) that leaves the lane path a remainder for the other.
    #[test]
    fn avx2_scan_for_16_states_is_the_body_bit_for_bit() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            eprintln!("note: CPU lacks AVX2/FMA; skipped");
            return;
        }
        let (e, n, r, t) = (48, 16, 6, 9);
        let mut rng = StdRng::seed_from_u64(16);
        let mut v = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| rng.gen_range(lo..hi)).collect()
        };
        let a = v(e * n, -20.0, -0.01);
        let d = v(e, -1.0, 1.0);
        let xz = v(t * 2 * e, -3.0, 3.0);
        let xc = v(t * e, -3.0, 3.0);
        let xdbl = v(t * (r + 2 * n), -2.0, 2.0);
        let mut dt = v(t * e, 0.0, 4.0);
        dt[5] = 0.0;
        dt[7] = 1e-30;
        dt[e + 13] = 0.0;
        let state0 = v(e * n, -1.0, 1.0);
        let args = ScanArgs {
            e,
            n,
            r,
            t,
            a: &a,
            d: &d,
            xz: &xz,
            xc: &xc,
            xdbl: &xdbl,
            dt: &dt,
        };
        let (e0, ne) = (5, 37);
        let run = |path: &str| {
            let mut st = state0[e0 * n..(e0 + ne) * n].to_vec();
            let mut y = vec![0f32; t * e];
            let out = SharedOut(y.as_mut_ptr());
            // SAFETY (the unsafe calls): AVX2 and FMA checked above; n == 16.
            match path {
                "body" => scan_range_body(&args, e0, &mut st, &out),
                "one" => unsafe { scan_range_16(&args, e0, &mut st, &out) },
                "lanes" => {
                    let done = unsafe { scan_range_16_lanes(&args, e0, &mut st, &out) };
                    assert_eq!(done, 32);
                    unsafe { scan_range_16(&args, e0 + done, &mut st[done * n..], &out) };
                }
                _ => unreachable!(),
            }
            (st, y)
        };
        let (want_st, want_y) = run("body");
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for path in ["one", "lanes"] {
            let (got_st, got_y) = run(path);
            assert_eq!(bits(&got_st), bits(&want_st), "{path}: states");
            assert_eq!(bits(&got_y), bits(&want_y), "{path}: y");
        }
        assert!(want_y.iter().any(|&v| v != 0.0));
    }
}
