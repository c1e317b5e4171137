//! The selective scan on the CPU: the portable body first, then the x86-64
//! AVX2 + FMA fast paths for N = 16 (every Mamba-1 checkpoint), which give
//! the body's bits. Channels are independent, so channel ranges run in
//! parallel (`team::par_chunks_mut`), each walking the chunk's tokens in order.
//!
//! Shapes (row-major; t rows, E = d_inner, N = state, R = dt rank):
//!   xz    [t][2E]    (x_in | silu(z)): only the gate half is read here
//!   xc    [t][E]     conv output x
//!   xdbl  [t][R+2N]  (dt_in | B | C): B and C are read here
//!   dt    [t][E]     softplus'd step
//!   y     [t][E]     out: (C . h + x D) * silu(z)
//!   ssm   [E][N]     the state, updated in place

use super::matmul::SharedOut;
use super::team::par_chunks_each;

/// Below this many (channel x state x token) updates the scan runs on the
/// calling thread.
const SCAN_PAR_MIN: usize = 1 << 14;

/// The selective scan over `p.t` tokens for every channel, updating `ssm`
/// ([E][N]) and writing the gated output into `y` ([t][E]). Channels are
/// independent, so channel ranges run in parallel, each walking all t tokens
/// in order.
pub(super) fn scan(p: &ScanArgs, ssm: &mut [f32], y: &mut [f32]) {
    let (e, n, t) = (p.e, p.n, p.t);
    // y is [t][E]; each task writes only its own channels' column entries.
    let y = SharedOut(y[..t * e].as_mut_ptr());
    let work = |e0: usize, sc: &mut [f32]| scan_range(p, e0, sc, &y);
    let threads = rayon::current_num_threads();
    if threads <= 1 || e * n * t < SCAN_PAR_MIN {
        work(0, ssm);
    } else {
        let ce = e.div_ceil(threads * 2).max(32);
        par_chunks_each(ssm, ce * n, |i, sc| work(i * ce, sc));
    }
}

/// The read-only inputs of the scan over one chunk (shapes as at the top).
pub(super) struct ScanArgs<'a> {
    pub(super) e: usize,
    pub(super) n: usize,
    pub(super) r: usize,
    pub(super) t: usize,
    /// [E][N] A = -exp(A_log)
    pub(super) a: &'a [f32],
    /// [E] skip weight D
    pub(super) d: &'a [f32],
    pub(super) xz: &'a [f32],
    pub(super) xc: &'a [f32],
    pub(super) xdbl: &'a [f32],
    pub(super) dt: &'a [f32],
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

/// The AVX2 dispatch of [`scan_range`]: the lane and one-channel N = 16
/// scans, else the body compiled with AVX2 and FMA.
///
/// # Safety
/// AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_range_avx2(p: &ScanArgs, e0: usize, sc: &mut [f32], y: &SharedOut) {
    // SAFETY: the caller guarantees AVX2 and FMA (this function's contract); the
    // callees' contracts hold: n == 16 is checked here.
    unsafe {
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
    // SAFETY: the caller guarantees AVX2, FMA and n == 16 (the
    // contract above); loads stay inside the slices they index (c + 8 <= e for
    // a whole block of 16 channels), stores are argued at each.
    unsafe {
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
                    let g0 = j * 2 * e + e + c; // silu(z), see `CpuBackend::silu_gate`
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
    // SAFETY: the caller guarantees AVX2, FMA and n == 16 (the
    // contract above); a row of 16 states, A, B and C are each two loads of 8
    // inside their slices; the store to y is argued at it.
    unsafe {
        use quant::math::x86::exp_nonpos8;
        use std::arch::x86_64::*;
        let (e, r, t) = (p.e, p.r, p.t);
        let xw = r + 32;
        let ne = (sc.len() / 16).min(e.saturating_sub(e0));
        for (i, srow) in sc.chunks_exact_mut(16).take(ne).enumerate() {
            let ch = e0 + i;
            // A decode step's state and A rows come from DRAM (the weights
            // streamed since the last step evicted them), 4 KiB pages of
            // 64 channels each, across which the hardware prefetchers do
            // not follow: fetch a few pages ahead.
            let ahead = |v: *const f32| v.wrapping_add(16 * SCAN_PREFETCH) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead(p.a.as_ptr().wrapping_add(ch * 16)));
            _mm_prefetch::<_MM_HINT_ET0>(ahead(srow.as_ptr()));
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
                let gate = p.xz[j * 2 * e + e + ch]; // silu(z), see `CpuBackend::silu_gate`
                let v = (ysum + 0.0 + xe * p.d[ch]) * gate;
                // SAFETY: as in `scan_range_body`.
                *y.0.add(j * e + ch) = v;
            }
            _mm256_storeu_ps(srow.as_mut_ptr(), h0);
            _mm256_storeu_ps(srow.as_mut_ptr().add(8), h1);
        }
    }
}

/// Channels ahead that the one-channel N = 16 scan prefetches (its state
/// and A rows; 64 bytes each per channel).
#[cfg(target_arch = "x86_64")]
const SCAN_PREFETCH: usize = 32;

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
            let gate = p.xz[j * 2 * e + e + ch]; // silu(z), see `CpuBackend::silu_gate`
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
            match path {
                "body" => scan_range_body(&args, e0, &mut st, &out),
                // SAFETY: AVX2 and FMA checked above; n == 16.
                "one" => unsafe { scan_range_16(&args, e0, &mut st, &out) },
                "lanes" => {
                    // SAFETY: as for "one".
                    let done = unsafe { scan_range_16_lanes(&args, e0, &mut st, &out) };
                    assert_eq!(done, 32);
                    // SAFETY: as for "one".
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
