//! The grid quantizers of IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS and IQ2_S
//! (ggml-quants.c: iq3xs_init_impl / iq2xs_init_impl, the
//! find_best_neighbour functions, quantize_row_iq{3_xxs,3_s,2_xxs,2_xs,2_s}
//! _impl), byte for byte, with and without an importance matrix.
//!
//! Each codes a sub-block (32 or 16 values) as groups of D magnitudes that
//! must form a point of a grid, plus signs and a sub-block scale. IQ3: D = 4,
//! levels l in 0..8 (3 bits); IQ2: D = 8, l in 0..3 (2 bits); a group point
//! stands for the values `2 l + 1`, and its lattice index packs the l's
//! (`l0 | l1 << b | ...`). The search, per sub-block: fold the signs out
//! (XXS/XS keep an even number of negatives per 8 values by flipping the
//! least important one, so 7 sign bits are stored), try a range of scales;
//! at each, round every group to the lattice and, if that point is off the
//! grid, take the best of its precomputed nearest grid points (weighted
//! distance); keep the scale of the best weighted fit; then re-snap groups
//! at the final scale. Sub-block scales go to 4 bits against the block's
//! largest.
//!
//! Which lattice points are on each grid comes from the dequantization
//! tables ([`crate::iq3_grids`], [`crate::iq2_grids`]): IQ3S_GRID's bytes
//! are the `2 l + 1` themselves, IQ3XXS_GRID's the levels 4, 12, ..., 52,
//! 62 of l = 0..7, the IQ2 grids' 8, 25, 43 of l = 0..2.

use std::sync::OnceLock;

use crate::fp16::f32_to_f16;
use crate::iq1_grid::IQ1S_GRID;
use crate::iq2_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use crate::kquant_search::{make_qp_quants, nearest_int, GROUP_MAX_EPS};

/// A grid of D-value points and, for every lattice point off it, its
/// nearest grid points.
pub(crate) struct Search {
    /// Values per point (4 or 8).
    dim: usize,
    /// Bits per level in a lattice index (3 or 2).
    bits: usize,
    /// `[points][dim]` the values `2 l + 1`.
    grid: Vec<i8>,
    /// Per lattice index: the grid index, or -1 when off the grid.
    pub(crate) map: Vec<i32>,
    /// Per lattice index off the grid: the grid indices at the `nwant`
    /// smallest distinct squared distances, nearest first, ties by index
    /// (the order ggml's qsort of (distance, index) pairs gives). Made on
    /// first use: ggml fills all 65,536 IQ2 lists up front (about a second
    /// for IQ2_S here), while a model's rows reach a small part of them.
    neighbours: Vec<OnceLock<Vec<u16>>>,
    nwant: usize,
}

impl Search {
    /// `levels(byte)` maps a dequantization table byte to its level l.
    fn new(
        dim: usize,
        bits: usize,
        points: &[u64],
        levels: impl Fn(u8) -> i8,
        nwant: usize,
    ) -> Search {
        let mut grid = Vec::with_capacity(points.len() * dim);
        for &v in points {
            grid.extend((0..dim).map(|i| 2 * levels((v >> (8 * i)) as u8) + 1));
        }
        let size = 1usize << (dim * bits);
        let mut map = vec![-1i32; size];
        for (g, p) in grid.chunks_exact(dim).enumerate() {
            let idx: usize = (0..dim)
                .map(|i| (((p[i] - 1) / 2) as usize) << (bits * i))
                .sum();
            map[idx] = g as i32;
        }
        Search {
            dim,
            bits,
            grid,
            map,
            neighbours: (0..size).map(|_| OnceLock::new()).collect(),
            nwant,
        }
    }

    /// Lattice point `u`'s neighbour list (`u` off the grid).
    pub(crate) fn neighbours_of(&self, u: usize) -> &[u16] {
        self.neighbours[u].get_or_init(|| {
            let mask = (1usize << self.bits) - 1;
            let pos: Vec<i32> = (0..self.dim)
                .map(|k| 2 * ((u >> (self.bits * k)) & mask) as i32 + 1)
                .collect();
            let d2: Vec<i32> = self
                .grid
                .chunks_exact(self.dim)
                .map(|p| {
                    p.iter()
                        .zip(&pos)
                        .map(|(&a, &b)| (a as i32 - b) * (a as i32 - b))
                        .sum()
                })
                .collect();
            // The nwant smallest distinct distances, then every point at or
            // below the last of them, ordered by (distance, index).
            let mut limit = i32::MIN;
            for _ in 0..self.nwant {
                match d2.iter().copied().filter(|&d| d > limit).min() {
                    Some(m) => limit = m,
                    None => break,
                }
            }
            let mut near: Vec<(i32, u16)> = d2
                .iter()
                .enumerate()
                .filter(|&(_, &d)| d <= limit)
                .map(|(j, &d)| (d, j as u16))
                .collect();
            near.sort_unstable();
            near.into_iter().map(|(_, j)| j).collect()
        })
    }

    pub(crate) fn point(&self, g: usize) -> &[i8] {
        &self.grid[g * self.dim..(g + 1) * self.dim]
    }

    /// The lattice index of `dim` levels.
    pub(crate) fn lattice(&self, l: &[i8]) -> usize {
        l.iter()
            .enumerate()
            .map(|(i, &v)| (v as usize) << (self.bits * i))
            .sum()
    }

    /// The grid point among lattice point `u`'s neighbours nearest `x` at
    /// `scale` (weighted by `w`); its levels go to `l`. Returns its index.
    fn best_neighbour(&self, u: usize, x: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = 0usize;
        for &j in self.neighbours_of(u) {
            let mut d2 = 0f32;
            for ((&q, &xv), &wv) in self.point(j as usize).iter().zip(x).zip(w) {
                let diff = scale * q as f32 - xv;
                d2 += wv * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = j as usize;
            }
        }
        for (o, &q) in l.iter_mut().zip(self.point(best)) {
            *o = (q - 1) / 2;
        }
        best
    }
}

pub(crate) fn search_for(which: usize) -> &'static Search {
    static S: [OnceLock<Search>; 6] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let iq2 = |v: u8| match v {
        8 => 0,
        25 => 1,
        _ => 2,
    };
    S[which].get_or_init(|| match which {
        IQ3_XXS => {
            let pts: Vec<u64> = IQ3XXS_GRID.iter().map(|&v| v as u64).collect();
            Search::new(4, 3, &pts, |v| (v.saturating_sub(4) / 8) as i8, 2)
        }
        IQ3_S => {
            let pts: Vec<u64> = IQ3S_GRID.iter().map(|&v| v as u64).collect();
            Search::new(4, 3, &pts, |v| (v.saturating_sub(1) / 2) as i8, 3)
        }
        IQ2_XXS => Search::new(8, 2, &IQ2XXS_GRID, iq2, 2),
        IQ2_XS => Search::new(8, 2, &IQ2XS_GRID, iq2, 2),
        IQ2_S => Search::new(8, 2, &IQ2S_GRID, iq2, 1),
        // IQ1S_GRID's bytes are -1, 0, 1 (as i8): l = byte + 1.
        _ => Search::new(8, 2, &IQ1S_GRID, |v| (v as i8) + 1, 3),
    })
}

const IQ3_XXS: usize = 0;
const IQ3_S: usize = 1;
const IQ2_XXS: usize = 2;
const IQ2_XS: usize = 3;
const IQ2_S: usize = 4;
/// The IQ1_S/IQ1_M grid (crate::iq1_quantize).
pub(crate) const IQ1: usize = 5;

/// Which groups the final pass re-snaps.
#[derive(Clone, Copy, PartialEq)]
enum Resnap {
    /// Those off the grid at the best trial (IQ3_XXS, IQ2_XS, IQ2_S).
    OffGrid,
    /// All, if any was off the grid (IQ3_S).
    AllIfAnyOff,
    /// All, always (IQ2_XXS).
    All,
}

/// One sub-block's scale search: `xval` the magnitudes, `weight` their
/// weights; trial scales `(2 kmaxq - 1 + is * step) / top` for `is` in
/// `-ntrial..=ntrial`, starting from `scale`. Returns (scale, grid index
/// per group).
#[allow(clippy::too_many_arguments)]
fn search(
    s: &Search,
    xval: &[f32],
    weight: &[f32],
    kmaxq: i32,
    ntrial: i32,
    step: f32,
    top: f32,
    mut scale: f32,
    resnap: Resnap,
) -> (f32, Vec<usize>) {
    let n = xval.len();
    let d = s.dim;
    let groups = n / d;
    let waux: Vec<f32> = weight.iter().map(|w| w.sqrt()).collect();
    let mut l = vec![0i8; n];
    let mut laux = vec![0i8; n];
    let mut best = 0f32;
    let mut on_grid = vec![resnap != Resnap::AllIfAnyOff; groups];
    let mut on_grid_aux = vec![true; groups];
    let snap = |id: f32, x: f32| nearest_int(0.5 * (id * x - 1.0)).clamp(0, kmaxq - 1) as i8;
    let fit = |lv: &[i8]| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..n {
            let q = (2 * lv[i] + 1) as f32;
            sumqx += weight[i] * xval[i] * q;
            sumq2 += weight[i] * q * q;
        }
        (sumqx, sumq2)
    };
    for is in -ntrial..=ntrial {
        let id = ((2 * kmaxq - 1) as f32 + is as f32 * step) / top;
        let this_scale = 1.0 / id;
        for k in 0..groups {
            let (xs, ws, ls) = (
                &xval[d * k..d * k + d],
                &waux[d * k..d * k + d],
                &mut laux[d * k..d * k + d],
            );
            for (o, &x) in ls.iter_mut().zip(xs) {
                *o = snap(id, x);
            }
            let u = s.lattice(ls);
            on_grid_aux[k] = s.map[u] >= 0;
            if s.map[u] < 0 {
                s.best_neighbour(u, xs, ws, this_scale, ls);
            }
        }
        let (sumqx, sumq2) = fit(&laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l.copy_from_slice(&laux);
            on_grid.copy_from_slice(&on_grid_aux);
        }
    }
    let redo = match resnap {
        Resnap::All => true,
        _ => on_grid.iter().any(|&g| !g),
    };
    if redo && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..groups {
            if resnap == Resnap::OffGrid && on_grid[k] {
                continue;
            }
            let (xs, ws, ls) = (
                &xval[d * k..d * k + d],
                &waux[d * k..d * k + d],
                &mut l[d * k..d * k + d],
            );
            for (o, &x) in ls.iter_mut().zip(xs) {
                *o = snap(id, x);
            }
            let u = s.lattice(ls);
            if s.map[u] < 0 {
                s.best_neighbour(u, xs, ws, scale, ls);
            }
        }
        let (sumqx, sumq2) = fit(&l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    // Every group is on the grid now (ggml aborts otherwise).
    let idx = (0..groups)
        .map(|k| s.map[s.lattice(&l[d * k..d * k + d])].max(0) as usize)
        .collect();
    (scale, idx)
}

/// The weights of one 256-value block: `qw * sqrt(sigma2 + x^2)` with an
/// importance matrix (sigma2 = `sigma_scale` times the block's mean square),
/// `unweighted(sigma2, x)` without.
fn block_weights(
    x: &[f32],
    qw: Option<&[f32]>,
    sigma_scale: f32,
    unweighted: impl Fn(f32, f32) -> f32,
) -> [f32; 256] {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = sigma_scale * sumx2 / 256.0;
    std::array::from_fn(|i| match qw {
        Some(q) => q[i] * (sigma2 + x[i] * x[i]).sqrt(),
        None => unweighted(sigma2, x[i]),
    })
}

/// Magnitudes and sign masks of a sub-block, per 8 values. With `parity`,
/// an odd number of negatives is made even by flipping the value of least
/// `weight * x^2` (its magnitude is then stored negated), and 7 bits kept.
fn fold_signs(xb: &[f32], weight: &[f32], parity: bool, xval: &mut [f32], signs: &mut [u8]) {
    for (k, sg) in signs.iter_mut().enumerate() {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            let v = xb[8 * k + i];
            if v >= 0.0 {
                xval[8 * k + i] = v;
            } else {
                xval[8 * k + i] = -v;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if parity && nflip % 2 == 1 {
            let key = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
            let mut imin = 0;
            let mut min = key(0);
            for i in 1..8 {
                if key(i) < min {
                    min = key(i);
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= 1 << imin;
        }
        *sg = if parity { s & 127 } else { s };
    }
}

fn max_of(v: &[f32]) -> f32 {
    v[1..].iter().fold(v[0], |m, &x| if m > x { m } else { x })
}

/// The 4-bit code of a sub-block scale against `d`.
fn scale4(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

/// ggml's quantize_iq3_xxs: 98-byte blocks (fp16 d, 64 grid indices, eight
/// u32 of four 7-bit sign masks and a 4-bit scale).
pub fn quantize_iq3_xxs(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
    let s = search_for(IQ3_XXS);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(98))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, qw.map(|q| &q[256 * ibl..]), 2.0, |_, v| v * v);
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        let mut sas = [0u32; 8];
        for ib in 0..8 {
            let (xb, weight) = (&x[32 * ib..32 * ib + 32], &w[32 * ib..32 * ib + 32]);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            fold_signs(xb, weight, true, &mut xval, &mut signs);
            let max = max_of(&xval);
            if max < GROUP_MAX_EPS_IQ3_XXS {
                continue;
            }
            let (mut scale, idx) = search(
                s,
                &xval,
                weight,
                8,
                15,
                0.2,
                max,
                max / 15.0,
                Resnap::OffGrid,
            );
            if scale < 0.0 {
                scale = -scale;
                signs.iter_mut().for_each(|v| *v = !*v & 127);
            }
            for (k, &g) in idx.iter().enumerate() {
                blk[2 + 8 * ib + k] = g as u8;
            }
            sas[ib] = signs[0] as u32
                | (signs[1] as u32) << 7
                | (signs[2] as u32) << 14
                | (signs[3] as u32) << 21;
            scales[ib] = scale;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            blk.fill(0);
            continue;
        }
        let d = max_scale / 31.0;
        blk[..2].copy_from_slice(&f32_to_f16(d * 1.0125).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..8 {
            let v = sas[ib] | (scale4(id, scales[ib]) as u32) << 28;
            blk[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// ggml's quantize_iq3_s: 110-byte blocks (fp16 d, 64 low bytes of the
/// grid indices, 8 bytes of their ninth bits, 32 sign bytes, 4 bytes of
/// paired 4-bit scales).
pub fn quantize_iq3_s(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    let s = search_for(IQ3_S);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(110))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, qw.map(|q| &q[256 * ibl..]), 2.0, |_, v| v * v);
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        // ggml advances its index and sign pointers only past the sub-blocks
        // it stores: after an all-zero sub-block the next ones land 8 (and
        // 4) bytes early, and the reader sees them at the wrong place. Kept,
        // for the same bytes as llama-quantize (it only happens to rows with
        // 32 zeros in a row).
        let (mut qs_at, mut signs_at) = (2usize, 74usize);
        for ib in 0..8 {
            let (xb, weight) = (&x[32 * ib..32 * ib + 32], &w[32 * ib..32 * ib + 32]);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            fold_signs(xb, weight, false, &mut xval, &mut signs);
            let max = max_of(&xval);
            if max == 0.0 {
                continue;
            }
            let (mut scale, idx) = search(
                s,
                &xval,
                weight,
                8,
                9,
                0.2,
                max,
                max / 15.0,
                Resnap::AllIfAnyOff,
            );
            if scale < 0.0 {
                scale = -scale;
                signs.iter_mut().for_each(|v| *v = !*v);
            }
            for (k, &g) in idx.iter().enumerate() {
                blk[qs_at + k] = g as u8;
                blk[66 + ib] |= ((g >> 8) as u8) << k;
            }
            blk[signs_at..signs_at + 4].copy_from_slice(&signs);
            qs_at += 8;
            signs_at += 4;
            scales[ib] = scale;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        blk[..2].copy_from_slice(&f32_to_f16(d * 1.033).to_le_bytes());
        let id = 1.0 / d;
        for ib in (0..8).step_by(2) {
            blk[106 + ib / 2] = scale4(id, scales[ib]) | scale4(id, scales[ib + 1]) << 4;
        }
    }
}

/// ggml's quantize_iq2_xxs (an importance matrix is required, as in ggml):
/// 66-byte blocks (fp16 d, per 32 values a u32 of four 8-bit grid indices
/// and a u32 of four 7-bit sign masks and a 4-bit scale).
pub fn quantize_iq2_xxs(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    let s = search_for(IQ2_XXS);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(66))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, Some(&qw[256 * ibl..]), 1.0, |_, v| v * v);
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        let mut q2 = [0u32; 16];
        for ib in 0..8 {
            let (xb, weight) = (&x[32 * ib..32 * ib + 32], &w[32 * ib..32 * ib + 32]);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            fold_signs(xb, weight, true, &mut xval, &mut signs);
            if max_of(&xval) < GROUP_MAX_EPS {
                continue;
            }
            let mut lq = [0u8; 32];
            let scale0 = make_qp_quants(4, &xval, &mut lq, weight);
            let eff_max = scale0 * 3.0;
            if eff_max <= 0.0 {
                continue;
            }
            let (mut scale, idx) =
                search(s, &xval, weight, 3, 6, 0.1, eff_max, scale0, Resnap::All);
            if scale < 0.0 {
                scale = -scale;
                signs.iter_mut().for_each(|v| *v = !*v & 127);
            }
            for (k, &g) in idx.iter().enumerate() {
                q2[2 * ib] |= (g as u32) << (8 * k);
                q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        blk[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..8 {
            q2[2 * ib + 1] |= (scale4(id, scales[ib]) as u32) << 28;
        }
        for (o, v) in blk[2..].chunks_exact_mut(4).zip(&q2) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// The 16-value sub-block search IQ2_XS and IQ2_S share: (scale, the two
/// grid indices).
fn search16(s: &Search, xval: &[f32; 16], weight: &[f32]) -> (f32, Vec<usize>) {
    let max = max_of(xval);
    search(s, xval, weight, 3, 9, 0.1, max, max / 5.0, Resnap::OffGrid)
}

/// ggml's quantize_iq2_xs (an importance matrix is required, as in ggml):
/// 74-byte blocks (fp16 d, 32 u16 of a 9-bit grid index and 7 sign bits,
/// 8 bytes of paired 4-bit scales per 16 values).
pub fn quantize_iq2_xs(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    let s = search_for(IQ2_XS);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(74))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, Some(&qw[256 * ibl..]), 1.0, |_, v| v * v);
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut q2 = [0u16; 32];
        for ib in 0..16 {
            let (xb, weight) = (&x[16 * ib..16 * ib + 16], &w[16 * ib..16 * ib + 16]);
            let mut xval = [0f32; 16];
            let mut signs = [0u8; 2];
            fold_signs(xb, weight, true, &mut xval, &mut signs);
            if max_of(&xval) < GROUP_MAX_EPS {
                continue;
            }
            let (mut scale, idx) = search16(s, &xval, weight);
            if scale < 0.0 {
                scale = -scale;
                signs.iter_mut().for_each(|v| *v = !*v & 127);
            }
            for (k, &g) in idx.iter().enumerate() {
                q2[2 * ib + k] = g as u16 | (signs[k] as u16) << 9;
            }
            scales[ib] = scale;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        blk[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        let id = 1.0 / d;
        for (o, v) in blk[2..66].chunks_exact_mut(2).zip(&q2) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        for ib in (0..16).step_by(2) {
            blk[66 + ib / 2] = scale4(id, scales[ib]) | scale4(id, scales[ib + 1]) << 4;
        }
    }
}

/// ggml's quantize_iq2_s: 82-byte blocks (fp16 d, 32 low bytes of the grid
/// indices, 32 sign bytes, 8 bytes of their two high bits, 8 bytes of
/// paired 4-bit scales per 16 values).
pub fn quantize_iq2_s(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;
    let s = search_for(IQ2_S);
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(82))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, qw.map(|q| &q[256 * ibl..]), 2.0, |sigma2, v| {
            0.25 * sigma2 + v * v
        });
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        for ib in 0..16 {
            let (xb, weight) = (&x[16 * ib..16 * ib + 16], &w[16 * ib..16 * ib + 16]);
            let mut xval = [0f32; 16];
            let mut signs = [0u8; 2];
            fold_signs(xb, weight, false, &mut xval, &mut signs);
            if max_of(&xval) < GROUP_MAX_EPS_IQ2_S {
                continue;
            }
            let (mut scale, idx) = search16(s, &xval, weight);
            if scale < 0.0 {
                scale = -scale;
                signs.iter_mut().for_each(|v| *v = !*v);
            }
            for (k, &g) in idx.iter().enumerate() {
                let i8 = 2 * ib + k;
                blk[2 + i8] = g as u8;
                blk[66 + i8 / 4] |= ((g >> 8) as u8) << (2 * (i8 % 4));
                blk[34 + i8] = signs[k];
            }
            scales[ib] = scale;
            max_scale = max_scale.max(scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        blk[..2].copy_from_slice(&f32_to_f16(d * 0.9875).to_le_bytes());
        let id = 1.0 / d;
        for ib in (0..16).step_by(2) {
            blk[74 + ib / 2] = scale4(id, scales[ib]) | scale4(id, scales[ib + 1]) << 4;
        }
    }
}
