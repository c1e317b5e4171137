//! The scale searches shared by ggml's reference K-quantizers
//! (ggml-quants.c: nearest_int, make_qx_quants, make_qkx2_quants,
//! get_scale_min_k4). Every float operation happens in the same order as the
//! reference so the chosen integers, and therefore the bytes, are identical.

/// Values below this magnitude count as an all-zero group.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, via the 1.5 * 2^23 magic-number trick
/// ggml uses (valid for |x| < 2^22; outside that it wraps like ggml's).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Symmetric quantization of `x` to integers in [-nmax, nmax-1], stored in
/// `l` offset by nmax, with the RMSE-weighted scale search ggml runs for
/// Q6_K (rmse_type 1: weights x^2, 18 extra trial scales). Returns the scale.
// The scalar reference, kept to test the lane version against.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let mut w = [0f32; 32];
    let w = &mut w[..x.len()];
    for (w, &v) in w.iter_mut().zip(x) {
        *w = v * v;
    }
    make_qx_quants(nmax, x, l, w)
}

/// ggml's make_qx_quants with rmse_type 1 and explicit weights `w` (an
/// importance matrix's, or x^2 for [`make_qx_quants_rmse1`]): the scale
/// from the largest magnitude, then 18 trial scales around it, keeping the
/// one whose weighted least-squares fit is best. Levels go to `l` offset by
/// nmax (0..2 nmax). Returns the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], w: &[f32]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let clamp = |q: i32| q.clamp(-nmax, nmax - 1);
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for ((&v, &w), q) in x.iter().zip(w).zip(l.iter_mut()) {
        let li = clamp(nearest_int(iscale * v));
        *q = (li + nmax) as i8;
        let lf = li as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (&v, &w) in x.iter().zip(w) {
            let lf = clamp(nearest_int(iscale * v)) as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (&v, q) in x.iter().zip(l.iter_mut()) {
                *q = (nmax + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's make_qp_quants: non-negative `x` (the sub-block scales or mins
/// of a K super-block) to levels 0..=nmax in `l` under one scale, chosen
/// by weighted squared error among 9 trials, then refined by up to 5
/// passes that move single levels while the weighted fit improves.
/// Returns the scale. As in ggml, levels are bytes: a negative `x` wraps.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], w: &[f32]) -> f32 {
    let mut max = 0f32;
    for &v in x {
        max = max.max(v);
    }
    if max < GROUP_MAX_EPS {
        l.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for (q, &v) in l.iter_mut().zip(x) {
        *q = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for ((&q, &v), &w) in l.iter().zip(x).zip(w) {
        let diff = v - scale * q as f32;
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for (&v, &w) in x.iter().zip(w) {
            let li = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * li as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for ((q, &v), &w) in l.iter_mut().zip(x).zip(w) {
        let li = nearest_int(iscale * v).min(nmax);
        *q = li as u8;
        let lf = li as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for ((q, &v), &w) in l.iter_mut().zip(x).zip(w) {
            let lf = *q as f32;
            let mut slx = sumlx - w * v * lf;
            let mut sl2 = suml2 - w * lf * lf;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != *q as i32 {
                    let nf = new_l as f32;
                    slx += w * v * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The weights ggml's importance-matrix quantizers fit with: the column's
/// importance `qw` times the value's magnitude against the block's spread,
/// `qw[i] * sqrt(sigma2 + x[i]^2)`.
#[inline]
pub(crate) fn importance_weights(x: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// Sum of squares in order, as ggml's quantizers compute sigma2 from it.
#[inline]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Asymmetric quantization `x ~ scale * l - min_out` with l in [0, nmax],
/// by weighted least squares over nstep+1 trial scales (ggml's
/// make_qkx2_quants; `use_mad` scores a trial by the weighted absolute
/// error instead of the squared one, as Q2_K does). Returns (scale,
/// min_out) where min_out >= 0 is the value subtracted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let (Some(&x0), Some(&w0)) = (x.first(), weights.first()) else {
        return (0.0, 0.0);
    };
    let mut min = x0;
    let mut max = x0;
    let mut sum_w = w0;
    let mut sum_x = sum_w * x0;
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.iter_mut().for_each(|q| *q = 0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for ((&v, &w), q) in x.iter().zip(weights).zip(l.iter_mut()) {
        let li = nearest_int(iscale * (v - min)).clamp(0, nmax);
        *q = li as u8;
        let diff = scale * li as f32 + min - v;
        best_error += w * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for ((&v, &w), q) in x.iter().zip(weights).zip(laux.iter_mut()) {
            let li = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *q = li as u8;
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * v;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for ((&v, &w), &q) in x.iter().zip(weights).zip(laux.iter()) {
                let diff = this_scale * q as f32 + this_min - v;
                cur_error += w * err(diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Trial scales evaluated side by side by [`make_qx_quants_rmse1_lanes`]
/// (18 used, padded to whole AVX2 registers).
const NC: usize = 24;

/// [`make_qx_quants_rmse1`] for 16 values with the 18 trial scales in
/// parallel lanes (each lane sums in the reference order; the lanes are then
/// compared in the reference order), so the result is identical.
#[inline(always)]
pub(crate) fn make_qx_quants_rmse1_lanes(nmax: i32, x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        *l = [0; 16];
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let iscale0 = -nmaxf / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..16 {
        let v = x[i];
        let li = nearest_int(iscale0 * v).max(-nmax).min(nmax - 1);
        l[i] = (li + nmax) as i8;
        let w = v * v;
        let lf = li as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    // Lane k is trial is = k - 9 for k < 9 and k - 8 above (is = 0 skipped);
    // lanes 18.. repeat is = 9 and are never read.
    let mut iscale = [0f32; NC];
    for (k, s) in iscale.iter_mut().enumerate() {
        let k = k.min(17) as i32;
        let is = if k < 9 { k - 9 } else { k - 8 };
        *s = -(nmaxf + 0.1f32 * is as f32) / max;
    }
    let mut lfs = [[0f32; NC]; 16];
    let mut lx = [0f32; NC];
    let mut l2 = [0f32; NC];
    for i in 0..16 {
        let v = x[i];
        let w = v * v;
        let row = &mut lfs[i];
        for k in 0..NC {
            let lf = nearest_int(iscale[k] * v).max(-nmax).min(nmax - 1) as f32;
            row[k] = lf;
            lx[k] += w * v * lf;
            l2[k] += w * lf * lf;
        }
    }
    let mut pick = None;
    for k in 0..18 {
        if l2[k] > 0.0 && lx[k] * lx[k] > best * l2[k] {
            scale = lx[k] / l2[k];
            best = scale * lx[k];
            pick = Some(k);
        }
    }
    if let Some(k) = pick {
        for i in 0..16 {
            l[i] = (nmax + lfs[i][k] as i32) as i8;
        }
    }
    scale
}

/// The 16 make_qx_quants (rmse_type 1) searches of one 256-value Q6_K
/// super-block: levels (offset by nmax) and one scale per 16 values.
pub(crate) fn make_qx_quants_rmse1_x16(
    nmax: i32,
    x: &[f32; 256],
    levels: &mut [i8; 256],
    scales: &mut [f32; 16],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { make_qx_quants_rmse1_x16_avx2(nmax, x, levels, scales) };
    }
    make_qx_quants_rmse1_x16_with(nmax, x, levels, scales, true)
}

/// [`make_qx_quants_rmse1_x16`] compiled for AVX2 (no FMA).
///
/// # Safety
/// The CPU has AVX2 (the arrays' lengths are in their types).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn make_qx_quants_rmse1_x16_avx2(
    nmax: i32,
    x: &[f32; 256],
    levels: &mut [i8; 256],
    scales: &mut [f32; 16],
) {
    make_qx_quants_rmse1_x16_with(nmax, x, levels, scales, true)
}

/// The scalar reference of [`make_qx_quants_rmse1_x16`].
// The scalar reference, kept to test the lane version against.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn make_qx_quants_rmse1_x16_ref(
    nmax: i32,
    x: &[f32; 256],
    levels: &mut [i8; 256],
    scales: &mut [f32; 16],
) {
    make_qx_quants_rmse1_x16_with(nmax, x, levels, scales, false)
}

#[inline(always)]
fn make_qx_quants_rmse1_x16_with(
    nmax: i32,
    x: &[f32; 256],
    levels: &mut [i8; 256],
    scales: &mut [f32; 16],
    lanes: bool,
) {
    for ((xs, ls), s) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .zip(scales.iter_mut())
    {
        let (Ok(xs), Ok(ls)) = (<&[f32; 16]>::try_from(xs), <&mut [i8; 16]>::try_from(ls)) else {
            continue; // unreachable: chunks_exact(16)
        };
        *s = if lanes {
            make_qx_quants_rmse1_lanes(nmax, xs, ls)
        } else {
            make_qx_quants_rmse1(nmax, xs, ls)
        };
    }
}

/// Unpack the 6-bit (scale, min) pair `j` (0..8) from the 12 packed bytes of
/// a Q4_K/Q5_K block.
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Pack eight 6-bit (scale, min) pairs into 12 bytes (inverse of
/// [`get_scale_min_k4`]).
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Quantize one 256-value super-block the way Q4_K and Q5_K share: per
/// 32-value sub-block a make_qkx2_quants search, 6-bit scales and mins
/// relative to the block maxima, then every value re-quantized against the
/// stored (fp16-rounded) scales. Returns (d bits, dmin bits, packed scales,
/// levels L[256] in 0..=nmax).
pub(crate) fn quantize_k_superblock(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    if nstep < 1 {
        return quantize_k_superblock_ref(x, nmax, rmin, nstep);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { quantize_k_superblock_avx2(x, nmax, rmin, nstep) };
    }
    search_and_finish(x, nmax, rmin, nstep, true, false)
}

/// [`quantize_k_superblock`] compiled for AVX2 (no FMA: every product and
/// sum stays a separately rounded operation, as in the reference).
///
/// # Safety
/// The CPU has AVX2 (the arrays' lengths are in their types).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_k_superblock_avx2(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    search_and_finish(x, nmax, rmin, nstep, true, true)
}

/// The straight scalar transcription of ggml (the reference the faster
/// paths are tested against).
pub(crate) fn quantize_k_superblock_ref(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    search_and_finish(x, nmax, rmin, nstep, false, false)
}

/// Run `search` (one of the two below), then [`finish_k_superblock`].
#[inline(always)]
fn search_and_finish(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    lanes: bool,
    avx2: bool,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    if lanes {
        search_x8(
            x,
            nmax,
            rmin,
            nstep,
            avx2,
            &mut levels,
            &mut scales,
            &mut mins,
        );
    } else {
        search_ref(x, nmax, rmin, nstep, &mut levels, &mut scales, &mut mins);
    }
    finish_k_superblock(x, nmax, levels, &scales, &mins)
}

/// The trial loop of [`search_x8`], portable: per lane the reference's
/// operations in its order, branches as selects.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn trials_portable(
    xt: &[[f32; 8]; 32],
    wt: &[[f32; 8]; 32],
    nmax: i32,
    cs: &[f32],
    sum_w: &[f32; 8],
    sum_x: &[f32; 8],
    max: &[f32; 8],
    min: &mut [f32; 8],
    scale: &mut [f32; 8],
    best_error: &mut [f32; 8],
    lt: &mut [[f32; 8]; 32],
) {
    let mut laux = [[0f32; 8]; 32];
    let mut iscale = [0f32; 8];
    for &c in cs {
        for j in 0..8 {
            iscale[j] = c / (max[j] - min[j]);
        }
        let mut sum_l = [0f32; 8];
        let mut sum_l2 = [0f32; 8];
        let mut sum_xl = [0f32; 8];
        for ((ar, xr), wr) in laux.iter_mut().zip(xt).zip(wt) {
            for j in 0..8 {
                let (v, w) = (xr[j], wr[j]);
                let lf = nearest_int(iscale[j] * (v - min[j])).max(0).min(nmax) as f32;
                ar[j] = lf;
                sum_l[j] += w * lf;
                sum_l2[j] += w * lf * lf;
                sum_xl[j] += w * lf * v;
            }
        }
        let mut d = [0f32; 8];
        let mut this_scale = [0f32; 8];
        let mut this_min = [0f32; 8];
        for j in 0..8 {
            d[j] = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
            let s = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / d[j];
            let m = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / d[j];
            let pos = m > 0.0;
            this_min[j] = if pos { 0.0 } else { m };
            this_scale[j] = if pos { sum_xl[j] / sum_l2[j] } else { s };
        }
        let mut cur_error = [0f32; 8];
        for ((ar, xr), wr) in laux.iter().zip(xt).zip(wt) {
            for j in 0..8 {
                let diff = this_scale[j] * ar[j] + this_min[j] - xr[j];
                cur_error[j] += wr[j] * (diff * diff);
            }
        }
        let mut take = [false; 8];
        for j in 0..8 {
            take[j] = d[j] > 0.0 && cur_error[j] < best_error[j];
            if take[j] {
                best_error[j] = cur_error[j];
                scale[j] = this_scale[j];
                min[j] = this_min[j];
            }
        }
        for (lr, ar) in lt.iter_mut().zip(&laux) {
            for j in 0..8 {
                lr[j] = if take[j] { ar[j] } else { lr[j] };
            }
        }
    }
}

/// The trial loop of [`search_x8`] in AVX2 intrinsics (LLVM scalarizes the
/// portable loop's accumulators): the same operations per lane, in the same
/// order, no FMA; comparisons are ordered (false on NaN) like Rust's.
///
/// # Safety
/// The CPU has AVX2; `cs` is only indexed (bounds-checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn trials_avx2(
    xt: &[[f32; 8]; 32],
    wt: &[[f32; 8]; 32],
    nmax: i32,
    cs: &[f32],
    sum_w: &[f32; 8],
    sum_x: &[f32; 8],
    max: &[f32; 8],
    min: &mut [f32; 8],
    scale: &mut [f32; 8],
    best_error: &mut [f32; 8],
    lt: &mut [[f32; 8]; 32],
) {
    use std::arch::x86_64::*;
    let magic = _mm256_set1_ps(12_582_912.0);
    let mant = _mm256_set1_epi32(0x007f_ffff);
    let half = _mm256_set1_epi32(0x0040_0000);
    let zero_i = _mm256_setzero_si256();
    let nmax_i = _mm256_set1_epi32(nmax);
    let zero = _mm256_setzero_ps();
    let sw = _mm256_loadu_ps(sum_w.as_ptr());
    let sx = _mm256_loadu_ps(sum_x.as_ptr());
    let mx = _mm256_loadu_ps(max.as_ptr());
    let mut mn = _mm256_loadu_ps(min.as_ptr());
    let mut sc = _mm256_loadu_ps(scale.as_ptr());
    let mut be = _mm256_loadu_ps(best_error.as_ptr());
    let mut laux = [_mm256_setzero_ps(); 32];
    for &c in cs {
        let iscale = _mm256_div_ps(_mm256_set1_ps(c), _mm256_sub_ps(mx, mn));
        let mut s_l = zero;
        let mut s_l2 = zero;
        let mut s_xl = zero;
        for i in 0..32 {
            let v = _mm256_loadu_ps(xt[i].as_ptr());
            let w = _mm256_loadu_ps(wt[i].as_ptr());
            let t = _mm256_mul_ps(iscale, _mm256_sub_ps(v, mn));
            let b = _mm256_castps_si256(_mm256_add_ps(t, magic));
            let q = _mm256_sub_epi32(_mm256_and_si256(b, mant), half);
            let q = _mm256_min_epi32(_mm256_max_epi32(q, zero_i), nmax_i);
            let lf = _mm256_cvtepi32_ps(q);
            laux[i] = lf;
            let wl = _mm256_mul_ps(w, lf);
            s_l = _mm256_add_ps(s_l, wl);
            s_l2 = _mm256_add_ps(s_l2, _mm256_mul_ps(wl, lf));
            s_xl = _mm256_add_ps(s_xl, _mm256_mul_ps(wl, v));
        }
        let d = _mm256_sub_ps(_mm256_mul_ps(sw, s_l2), _mm256_mul_ps(s_l, s_l));
        let s = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sw, s_xl), _mm256_mul_ps(sx, s_l)),
            d,
        );
        let m = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(s_l2, sx), _mm256_mul_ps(s_l, s_xl)),
            d,
        );
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero);
        let this_min = _mm256_blendv_ps(m, zero, pos);
        let this_scale = _mm256_blendv_ps(s, _mm256_div_ps(s_xl, s_l2), pos);
        let mut cur = zero;
        for i in 0..32 {
            let v = _mm256_loadu_ps(xt[i].as_ptr());
            let w = _mm256_loadu_ps(wt[i].as_ptr());
            let diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, laux[i]), this_min),
                v,
            );
            cur = _mm256_add_ps(cur, _mm256_mul_ps(w, _mm256_mul_ps(diff, diff)));
        }
        let take = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero),
            _mm256_cmp_ps::<_CMP_LT_OQ>(cur, be),
        );
        be = _mm256_blendv_ps(be, cur, take);
        sc = _mm256_blendv_ps(sc, this_scale, take);
        mn = _mm256_blendv_ps(mn, this_min, take);
        if _mm256_movemask_ps(take) != 0 {
            for i in 0..32 {
                let old = _mm256_loadu_ps(lt[i].as_ptr());
                _mm256_storeu_ps(lt[i].as_mut_ptr(), _mm256_blendv_ps(old, laux[i], take));
            }
        }
    }
    _mm256_storeu_ps(min.as_mut_ptr(), mn);
    _mm256_storeu_ps(scale.as_mut_ptr(), sc);
    _mm256_storeu_ps(best_error.as_mut_ptr(), be);
}

/// Sub-block searches of one super-block, one at a time: weights
/// av_x + |x| and make_qkx2_quants. Fills levels, scales and mins.
fn search_ref(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    levels: &mut [u8; 256],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) =
            make_qkx2_quants(nmax, xs, &weights, ls, &mut laux, rmin, 0.1, nstep, false);
        scales[j] = scale;
        mins[j] = min;
    }
}

/// [`search_ref`] with the 8 sub-blocks in 8 lanes: lane j runs exactly
/// the reference's float operations on sub-block j, in the same order, with
/// every data-dependent branch turned into a per-lane select, so scales,
/// mins and levels are identical. Needs nstep >= 1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn search_x8(
    x: &[f32; 256],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    avx2: bool,
    levels: &mut [u8; 256],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) {
    const RDELTA: f32 = 0.1;
    // xt[i][j] = x[32 j + i]: value i of sub-block j.
    let mut xt = [[0f32; 8]; 32];
    for (i, row) in xt.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = x[32 * j + i];
        }
    }
    let mut sum_x2 = [0f32; 8];
    for row in &xt {
        for j in 0..8 {
            sum_x2[j] += row[j] * row[j];
        }
    }
    let mut av_x = [0f32; 8];
    for j in 0..8 {
        av_x[j] = (sum_x2[j] / 32.0).sqrt();
    }
    let mut wt = [[0f32; 8]; 32];
    for (wr, xr) in wt.iter_mut().zip(&xt) {
        for j in 0..8 {
            wr[j] = av_x[j] + xr[j].abs();
        }
    }
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = [0f32; 8];
    for j in 0..8 {
        sum_x[j] = sum_w[j] * xt[0][j];
    }
    for (xr, wr) in xt.iter().zip(&wt).skip(1) {
        for j in 0..8 {
            let v = xr[j];
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            sum_w[j] += wr[j];
            sum_x[j] += wr[j] * v;
        }
    }
    let mut flat = [false; 8];
    for j in 0..8 {
        if min[j] > 0.0 {
            min[j] = 0.0;
        }
        flat[j] = max[j] == min[j];
    }
    let min0 = min;
    let nmaxf = nmax as f32;
    let mut scale = [0f32; 8];
    let mut iscale = [0f32; 8];
    for j in 0..8 {
        iscale[j] = nmaxf / (max[j] - min[j]);
        scale[j] = 1.0 / iscale[j];
    }
    // Levels as f32 (exact small integers), lt[i][j] like xt.
    let mut lt = [[0f32; 8]; 32];
    let mut best_error = [0f32; 8];
    for ((lr, xr), wr) in lt.iter_mut().zip(&xt).zip(&wt) {
        for j in 0..8 {
            let v = xr[j];
            let lf = nearest_int(iscale[j] * (v - min[j])).max(0).min(nmax) as f32;
            lr[j] = lf;
            let diff = scale[j] * lf + min[j] - v;
            best_error[j] += wr[j] * (diff * diff);
        }
    }
    // The trial numerators rmin + rdelta * is + nmax, is = 0..=nstep.
    let cs: Vec<f32> = (0..=nstep)
        .map(|is| rmin + RDELTA * is as f32 + nmaxf)
        .collect();
    #[cfg(target_arch = "x86_64")]
    let done = avx2 && {
        // SAFETY: callers pass avx2 = true only when AVX2 is present.
        unsafe {
            trials_avx2(
                &xt,
                &wt,
                nmax,
                &cs,
                &sum_w,
                &sum_x,
                &max,
                &mut min,
                &mut scale,
                &mut best_error,
                &mut lt,
            )
        };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = avx2;
        false
    };
    if !done {
        trials_portable(
            &xt,
            &wt,
            nmax,
            &cs,
            &sum_w,
            &sum_x,
            &max,
            &mut min,
            &mut scale,
            &mut best_error,
            &mut lt,
        );
    }
    for j in 0..8 {
        if flat[j] {
            scales[j] = 0.0;
            mins[j] = -min0[j];
        } else {
            scales[j] = scale[j];
            mins[j] = -min[j];
        }
    }
    for (i, lr) in lt.iter().enumerate() {
        for j in 0..8 {
            levels[32 * j + i] = if flat[j] { 0 } else { lr[j] as u8 };
        }
    }
}

/// The shared tail after a search (one of the two above): 6-bit scales
/// and mins relative to the block maxima, then every value re-quantized
/// against the stored (fp16-rounded) scales.
#[inline(always)]
fn finish_k_superblock(
    x: &[f32; 256],
    nmax: i32,
    mut levels: [u8; 256],
    scales: &[f32; 8],
    mins: &[f32; 8],
) -> (u16, u16, [u8; 12], [u8; 256]) {
    use crate::fp16::f32_to_f16;
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int's result in a uint8_t before the clamp.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d_bits = f32_to_f16(max_scale / 63.0);
    let dmin_bits = f32_to_f16(max_min / 63.0);
    requantize_k_superblock(x, nmax, &mut levels, &packed, d_bits, dmin_bits);
    (d_bits, dmin_bits, packed, levels)
}

/// Every value of a Q4_K/Q5_K super-block re-quantized against its stored
/// (fp16 d, dmin, 6-bit scale and min) pairs; a sub-block whose scale is
/// zero keeps the levels of the search, as ggml does.
pub(crate) fn requantize_k_superblock(
    x: &[f32; 256],
    nmax: i32,
    levels: &mut [u8; 256],
    packed: &[u8; 12],
    d_bits: u16,
    dmin_bits: u16,
) {
    use crate::fp16::f16_to_f32;
    let d_all = f16_to_f32(d_bits);
    let dmin_all = f16_to_f32(dmin_bits);
    for (j, (xs, lv)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue; // keeps the levels from the search
        }
        let dm = dmin_all * m as f32;
        for (q, &v) in lv.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K/Q5_K with an importance matrix (ggml's quantize_row_q{4,5}_K_impl):
/// per 32 values the asymmetric search with weights `qw * sqrt(sigma2 +
/// x^2)` (rmin -0.9, rdelta 0.05, 36 steps), the eight scales and mins
/// each fitted by [`make_qp_quants`] (6 bits) weighted by their sub-block's
/// total weight, then every value re-quantized. `clamp63` caps the 6-bit
/// levels as Q5_K does (Q4_K stores them unclamped). Returns what
/// [`quantize_k_superblock`] does.
pub(crate) fn quantize_k_superblock_weighted(
    x: &[f32; 256],
    qw: &[f32],
    nmax: i32,
    clamp63: bool,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    use crate::fp16::f32_to_f16;
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut levels = [0u8; 256];
    let mut laux = [0u8; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut w = [0f32; 32];
        importance_weights(xs, &qw[32 * j..], sigma2, &mut w);
        for &v in &w {
            sw[j] += v;
        }
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &w,
            &mut levels[32 * j..32 * j + 32],
            &mut laux,
            -0.9,
            0.05,
            36,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d = make_qp_quants(63, &scales, &mut ls, &sw);
    let m = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp63 {
        ls.iter_mut()
            .chain(lm.iter_mut())
            .for_each(|v| *v = (*v).min(63));
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let (d_bits, dmin_bits) = (f32_to_f16(d), f32_to_f16(m));
    requantize_k_superblock(x, nmax, &mut levels, &packed, d_bits, dmin_bits);
    (d_bits, dmin_bits, packed, levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(127.0), 127);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 5, 63, 40];
        let lm = [63, 2, 0, 31, 33, 62, 1, 16];
        let p = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &p), (ls[j], lm[j]));
        }
    }
    /// Deterministic mixed test data: 256-value blocks drawn from many
    /// shapes (normal-ish, uniform, one-signed, heavy-tailed, tiny, huge,
    /// sparse, constant, zero, integer-valued with rounding ties, single
    /// spikes), xorshift so no rand API drift.
    fn mixed_blocks(nblocks: usize, seed: u64) -> Vec<[f32; 256]> {
        let mut s = seed | 1;
        let mut u = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..nblocks)
            .map(|b| {
                let mut x = [0f32; 256];
                let kind = b % 12;
                let scale = [1.0f32, 1e-3, 30.0, 1e-20, 1e4][b % 5];
                for (i, v) in x.iter_mut().enumerate() {
                    let r = u() * 2.0 - 1.0;
                    *v = match kind {
                        0 => (u() + u() + u() + u() - 2.0) * scale,
                        1 => r * scale,
                        2 => u() * scale,
                        3 => -u() * scale,
                        4 => r * r * r * r * r * scale,
                        5 => {
                            if u() < 0.9 {
                                0.0
                            } else {
                                r * scale
                            }
                        }
                        6 => ((i / 32) as f32 - 3.5) * scale,
                        7 => 0.0,
                        8 => ((r * 8.0).round()) * 0.5,
                        9 => {
                            if i % 37 == 0 {
                                scale
                            } else {
                                r * 1e-6
                            }
                        }
                        10 => (r * 16.0).round(),
                        _ => (u() * 4.0 - 1.0) * scale,
                    };
                }
                x
            })
            .collect()
    }

    #[test]
    fn k_superblock_lanes_match_scalar_reference() {
        // Q4_K (nmax 15, rmin -1, nstep 20) on 4096 blocks = 1M values,
        // Q5_K (nmax 31, rmin -0.5, nstep 15) on 1024 blocks.
        for &(nmax, rmin, nstep, nblocks) in &[(15, -1.0f32, 20, 4096), (31, -0.5, 15, 1024)] {
            for (b, x) in mixed_blocks(nblocks, 0x5eed_0000 + nmax as u64)
                .iter()
                .enumerate()
            {
                let want = quantize_k_superblock_ref(x, nmax, rmin, nstep);
                // The portable lane copy, then the dispatched one (AVX2 here).
                let lanes = search_and_finish(x, nmax, rmin, nstep, true, false);
                assert_eq!(lanes, want, "portable lanes, nmax {nmax}, block {b}");
                let got = quantize_k_superblock(x, nmax, rmin, nstep);
                assert_eq!(got, want, "dispatched, nmax {nmax}, block {b}");
            }
        }
    }

    #[test]
    fn qx_rmse1_lanes_match_scalar_reference() {
        // Q6_K (nmax 32) on 4096 blocks = 1M values.
        for (b, x) in mixed_blocks(4096, 0x0006_0006).iter().enumerate() {
            let (mut lw, mut sw) = ([0i8; 256], [0f32; 16]);
            make_qx_quants_rmse1_x16_ref(32, x, &mut lw, &mut sw);
            let (mut lp, mut sp) = ([0i8; 256], [0f32; 16]);
            make_qx_quants_rmse1_x16_with(32, x, &mut lp, &mut sp, true);
            let (mut ld, mut sd) = ([0i8; 256], [0f32; 16]);
            make_qx_quants_rmse1_x16(32, x, &mut ld, &mut sd);
            let bits = |s: &[f32; 16]| s.map(f32::to_bits);
            assert_eq!(
                (lp, bits(&sp)),
                (lw, bits(&sw)),
                "portable lanes, block {b}"
            );
            assert_eq!((ld, bits(&sd)), (lw, bits(&sw)), "dispatched, block {b}");
        }
    }
}
