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
pub(crate) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
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
    for (&v, q) in x.iter().zip(l.iter_mut()) {
        let li = clamp(nearest_int(iscale * v));
        *q = (li + nmax) as i8;
        let w = v * v;
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
        for &v in x {
            let lf = clamp(nearest_int(iscale * v)) as f32;
            let w = v * v;
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

/// Asymmetric quantization `x ~ scale * l - min_out` with l in [0, nmax],
/// by weighted least squares over nstep+1 trial scales (ggml's
/// make_qkx2_quants with use_mad = false). Returns (scale, min_out) where
/// min_out >= 0 is the value subtracted.
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
) -> (f32, f32) {
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
        best_error += w * (diff * diff);
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
                cur_error += w * (diff * diff);
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
    use crate::fp16::{f16_to_f32, f32_to_f16};
    let mut levels = [0u8; 256];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
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
        let (scale, min) = make_qkx2_quants(nmax, xs, &weights, ls, &mut laux, rmin, 0.1, nstep);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
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
    let d_all = f16_to_f32(d_bits);
    let dmin_all = f16_to_f32(dmin_bits);
    for (j, (xs, lv)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue; // keeps the levels from the search, as ggml does
        }
        let dm = dmin_all * m as f32;
        for (q, &v) in lv.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
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
}
