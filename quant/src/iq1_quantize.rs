//! The IQ1_S and IQ1_M quantizers (ggml-quants.c: quantize_row_iq1_s_impl,
//! quantize_row_iq1_m_impl, iq1_find_best_neighbour2), byte for byte.
//!
//! Each 32 (IQ1_S) or 16 (IQ1_M) values take levels -1, 0, 1 shifted by
//! +-delta (`x_p` or `x_m`), 8 at a time a point of the 2048-point IQ1 grid
//! ([`crate::iq_quantize`]'s lattice search, l = level + 1). The levels come
//! from an exhaustive search over the two cut points of the values sorted
//! (every split into "low", "middle", "high", both shifts), scored by the
//! weighted least-squares fit; groups off the grid take their best
//! neighbour. IQ1_M picks the shift per 8 values (four combinations per 16)
//! and refits the block scale at the end.

use crate::fp16::f32_to_f16;
use crate::iq_quantize::{search_for, Search, IQ1};
use crate::kquant_search::nearest_int;

const DELTA: f32 = 0.125;
const X_P: [f32; 3] = [-1.0 + DELTA, DELTA, 1.0 + DELTA];
const X_M: [f32; 3] = [-1.0 - DELTA, -DELTA, 1.0 - DELTA];

/// iq1_find_best_neighbour2: the neighbour of lattice point `u` nearest the
/// signed `x` at `scale` with level values `xx`; its levels go to `l`.
fn best_neighbour(
    s: &Search,
    u: usize,
    x: &[f32],
    w: &[f32],
    scale: f32,
    xx: &[f32; 3],
    l: &mut [i8],
) -> usize {
    let mut best_score = f32::MAX;
    // ggml falls back to a scan of the whole grid (reading past its input)
    // when no neighbour scores below f32::MAX, i.e. only for non-finite
    // inputs; the first neighbour stands in for it here.
    let nb = s.neighbours_of(u);
    let mut best = nb.first().copied().unwrap_or(0) as usize;
    for &j in nb {
        let mut d2 = 0f32;
        for ((&q, &xv), &wv) in s.point(j as usize).iter().zip(x).zip(w) {
            let diff = scale * xx[((q - 1) / 2) as usize] - xv;
            d2 += wv * diff * diff;
        }
        if d2 < best_score {
            best_score = d2;
            best = j as usize;
        }
    }
    for (o, &q) in l.iter_mut().zip(s.point(best)) {
        *o = (q - 1) / 2;
    }
    best
}

/// The positions of `xb` sorted by value, ties in position order (ggml's
/// qsort of (value, index) pairs compares values only; glibc's merge sort
/// keeps ties in order).
fn sorted_positions(xb: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..xb.len()).collect();
    idx.sort_by(|&a, &b| {
        xb[a]
            .partial_cmp(&xb[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx
}

/// Levels 0, 1, 2 for the sorted positions cut at i1 and i2.
fn levels(idx: &[usize], i1: usize, i2: usize) -> Vec<i8> {
    let mut l = vec![0i8; idx.len()];
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
    l
}

fn max_abs(xb: &[f32]) -> f32 {
    xb[1..]
        .iter()
        .fold(xb[0].abs(), |m, &x| if m > x.abs() { m } else { x.abs() })
}

/// Grid indices of the groups of `l` (levels 0..3), re-snapping the ones
/// off the grid; `xx_of(k)` the level values of group k. Returns the
/// indices and whether all were on the grid.
fn snap_groups(
    s: &Search,
    xb: &[f32],
    w: &[f32],
    scale: f32,
    l: &mut [i8],
    xx_of: impl Fn(usize) -> &'static [f32; 3],
) -> (Vec<usize>, bool) {
    let mut all_on = true;
    let idx = (0..l.len() / 8)
        .map(|k| {
            let u = s.lattice(&l[8 * k..8 * k + 8]);
            if s.map[u] >= 0 {
                s.map[u] as usize
            } else {
                all_on = false;
                let r = 8 * k..8 * k + 8;
                best_neighbour(
                    s,
                    u,
                    &xb[r.clone()],
                    &w[r.clone()],
                    scale,
                    xx_of(k),
                    &mut l[r],
                )
            }
        })
        .collect();
    (idx, all_on)
}

/// The fit of `xb` to the grid points `idx` with level values `xx_of(k)`.
fn refit(
    s: &Search,
    xb: &[f32],
    w: &[f32],
    idx: &[usize],
    xx_of: impl Fn(usize) -> &'static [f32; 3],
) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for (k, &g) in idx.iter().enumerate() {
        let xx = xx_of(k);
        for (j, &p) in s.point(g).iter().enumerate() {
            let q = xx[((p - 1) / 2) as usize];
            sumqx += w[8 * k + j] * q * xb[8 * k + j];
            sumq2 += w[8 * k + j] * q * q;
        }
    }
    (sumqx, sumq2)
}

/// ggml's quantize_iq1_s (an importance matrix is required, as in ggml):
/// 50-byte blocks (fp16 d, 32 low bytes of the grid indices, per 32 values
/// a u16 of their high 3-bit parts, a 3-bit scale and the shift's sign).
pub fn quantize_iq1_s(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    const EPS: f32 = 1e-12;
    let s = search_for(IQ1);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(50))
        .enumerate()
    {
        blk.fill(0);
        let mut sumx2 = 0f32;
        for &v in x {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / 256.0;
        let mut scales = [0f32; 8];
        let mut shifts = [1i8; 8];
        let mut qh = [0u16; 8];
        let mut max_scale = 0f32;
        for ib in 0..8 {
            let xb = &x[32 * ib..32 * ib + 32];
            let q = &qw[256 * ibl + 32 * ib..256 * ibl + 32 * ib + 32];
            let w: Vec<f32> = q
                .iter()
                .zip(xb)
                .map(|(&q, &v)| q * (sigma2 + v * v).sqrt())
                .collect();
            if max_abs(xb) < EPS {
                continue;
            }
            let idx = sorted_positions(xb);
            let (mut sumx, mut sumw) = (vec![0f32; 33], vec![0f32; 33]);
            for (j, &i) in idx.iter().enumerate() {
                sumx[j + 1] = sumx[j] + w[i] * xb[i];
                sumw[j + 1] = sumw[j] + w[i];
            }
            let mut best_score = -f32::MAX;
            let mut scale = max_abs(xb);
            let mut best: Option<(usize, usize, i8)> = None;
            for i1 in 0..=32 {
                for i2 in i1..=32 {
                    for (xs, shift) in [(&X_P, 1i8), (&X_M, -1i8)] {
                        let sumqx = (sumx[i1] - sumx[0]) * xs[0]
                            + (sumx[i2] - sumx[i1]) * xs[1]
                            + (sumx[32] - sumx[i2]) * xs[2];
                        let sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0]
                            + (sumw[i2] - sumw[i1]) * xs[1] * xs[1]
                            + (sumw[32] - sumw[i2]) * xs[2] * xs[2];
                        if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                            scale = sumqx / sumq2;
                            best_score = scale * sumqx;
                            best = Some((i1, i2, shift));
                        }
                    }
                }
            }
            let Some((i1, i2, mut shift)) = best else {
                continue;
            };
            let mut l = levels(&idx, i1, i2);
            if scale < 0.0 {
                l.iter_mut().for_each(|v| *v = 2 - *v);
                scale = -scale;
                shift = -shift;
            }
            let xx: &'static [f32; 3] = if shift == 1 { &X_P } else { &X_M };
            let (index, all_on) = snap_groups(s, xb, &w, scale, &mut l, |_| xx);
            if !all_on {
                let (sumqx, sumq2) = refit(s, xb, &w, &index, |_| xx);
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            let mut h = 0u16;
            for (k, &g) in index.iter().enumerate() {
                blk[2 + 4 * ib + k] = g as u8;
                h |= ((g >> 8) as u16) << (3 * k);
            }
            qh[ib] = h;
            scales[ib] = scale;
            shifts[ib] = shift;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            // The indices written stay, with no scale (as ggml leaves them).
            for (o, v) in blk[34..50].chunks_exact_mut(2).zip(&qh) {
                o.copy_from_slice(&v.to_le_bytes());
            }
            continue;
        }
        let d = max_scale / 15.0;
        blk[..2].copy_from_slice(&f32_to_f16(d * 1.125).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..8 {
            let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7) as u16;
            if shifts[ib] == -1 {
                l |= 8;
            }
            qh[ib] |= l << 12;
        }
        for (o, v) in blk[34..50].chunks_exact_mut(2).zip(&qh) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// ggml's quantize_iq1_m: 56-byte blocks (32 low bytes of the grid
/// indices, per 16 values a byte of their high 3-bit parts and the two
/// shift signs, four u16 of 3-bit scales whose top nibbles hold the fp16 d).
pub fn quantize_iq1_m(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    const EPS: f32 = 1e-7;
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let s = search_for(IQ1);
    let xx_for = |k: usize, shift: i8| -> &'static [f32; 3] {
        let plus = if k == 0 { shift < 2 } else { shift % 2 == 0 };
        if plus {
            &X_P
        } else {
            &X_M
        }
    };
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(56))
        .enumerate()
    {
        blk.fill(0);
        let mut sumx2 = 0f32;
        for &v in x {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / 256.0;
        let weights = |ib: usize| -> Vec<f32> {
            let xb = &x[16 * ib..16 * ib + 16];
            match qw {
                Some(q) => q[256 * ibl + 16 * ib..256 * ibl + 16 * ib + 16]
                    .iter()
                    .zip(xb)
                    .map(|(&q, &v)| q * (sigma2 + v * v).sqrt())
                    .collect(),
                None => xb.iter().map(|&v| v * v).collect(),
            }
        };
        let mut scales = [0f32; 16];
        let mut shifts = [0i8; 16];
        let mut max_scale = 0f32;
        for ib in 0..16 {
            let xb = &x[16 * ib..16 * ib + 16];
            let w = weights(ib);
            if max_abs(xb) < EPS {
                continue;
            }
            let idx = sorted_positions(xb);
            let mut px = [[0f32; 17]; 2];
            let mut pw = [[0f32; 17]; 2];
            for (j, &i) in idx.iter().enumerate() {
                let h = usize::from(i >= 8);
                px[h][j + 1] = px[h][j] + w[i] * xb[i];
                px[1 - h][j + 1] = px[1 - h][j];
                pw[h][j + 1] = pw[h][j] + w[i];
                pw[1 - h][j + 1] = pw[1 - h][j];
            }
            let txs = [px[0][16], px[1][16]];
            let tws = [pw[0][16], pw[1][16]];
            let (p2, m2) = (X_P[2], X_M[2]);
            let cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1];
            let cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
            let cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1];
            let cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
            let mut best_score = -f32::MAX;
            let mut scale = max_abs(xb);
            let mut best: Option<(usize, usize, i8)> = None;
            for i1 in 0..=16 {
                for i2 in i1..=16 {
                    let (mut qx_p, mut qx_m, mut q2_p, mut q2_m) =
                        ([0f32; 2], [0f32; 2], [0f32; 2], [0f32; 2]);
                    for h in 0..2 {
                        let sx = px[h][i1] + px[h][i2];
                        qx_p[h] = txs[h] * p2 - sx;
                        qx_m[h] = txs[h] * m2 - sx;
                        q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                        q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
                    }
                    let sumqx = [
                        qx_p[0] + qx_p[1],
                        qx_p[0] + qx_m[1],
                        qx_m[0] + qx_p[1],
                        qx_m[0] + qx_m[1],
                    ];
                    let sumq2 = [
                        q2_p[0] + q2_p[1],
                        q2_p[0] + q2_m[1],
                        q2_m[0] + q2_p[1],
                        q2_m[0] + q2_m[1],
                    ];
                    for k in 0..4 {
                        if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                            scale = sumqx[k] / sumq2[k];
                            best_score = scale * sumqx[k];
                            best = Some((i1, i2, k as i8));
                        }
                    }
                }
            }
            let Some((i1, i2, mut best_k)) = best else {
                continue;
            };
            let mut l = levels(&idx, i1, i2);
            if scale < 0.0 {
                l.iter_mut().for_each(|v| *v = 2 - *v);
                scale = -scale;
                best_k = 3 - best_k;
            }
            let (index, all_on) = snap_groups(s, xb, &w, scale, &mut l, |k| xx_for(k, best_k));
            if !all_on {
                let (sumqx, sumq2) = refit(s, xb, &w, &index, |k| xx_for(k, best_k));
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            blk[2 * ib] = index[0] as u8;
            blk[2 * ib + 1] = index[1] as u8;
            blk[32 + ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
            scales[ib] = scale;
            shifts[ib] = best_k;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let mut sc = [0u16; 4];
        let mut d = max_scale / 15.0;
        let id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for ib in 0..16 {
            let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
            sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
            blk[32 + ib] |= MASKS[shifts[ib] as usize];
            let xb = &x[16 * ib..16 * ib + 16];
            let w = weights(ib);
            let qh = blk[32 + ib] as usize;
            for k in 0..2 {
                let xx = xx_for(k, shifts[ib]);
                let g = blk[2 * ib + k] as usize + ((qh << (8 - 4 * k)) & 0x700);
                for (j, &p) in s.point(g).iter().enumerate() {
                    let q = xx[((p - 1) / 2) as usize] * (2 * l + 1) as f32;
                    sumqx += w[8 * k + j] * q * xb[8 * k + j];
                    sumq2 += w[8 * k + j] * q * q;
                }
            }
        }
        if sumq2 > 0.0 {
            d = sumqx / sumq2;
        }
        let bits = f32_to_f16(d * 1.1125);
        sc[0] |= (bits & 0x000f) << 12;
        sc[1] |= (bits & 0x00f0) << 8;
        sc[2] |= (bits & 0x0f00) << 4;
        sc[3] |= bits & 0xf000;
        for (o, v) in blk[48..56].chunks_exact_mut(2).zip(&sc) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
}
