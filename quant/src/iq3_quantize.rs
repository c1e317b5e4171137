//! The IQ3_XXS and IQ3_S quantizers (ggml-quants.c: iq3xs_init_impl,
//! iq3_find_best_neighbour, quantize_row_iq3_xxs_impl,
//! quantize_row_iq3_s_impl), byte for byte.
//!
//! Both code each 32 values as eight groups of four 3-bit magnitudes that
//! must form a point of a grid (256 points for XXS, 512 for S) and signs.
//! The search, per 32 values: fold the signs out (XXS keeps an even number
//! of negatives per 8, flipping the least important value), try 31 (XXS) or
//! 19 (S) scales; at each, round every group to the 3-bit lattice and, if
//! that point is off the grid, take the best of its precomputed nearest grid
//! points (weighted distance); keep the scale of the best weighted fit; then
//! re-snap the groups that were off the grid at the final scale. Sub-block
//! scales are stored in 4 bits against the block's largest.
//!
//! The grids: group point (l0, l1, l2, l3), l in 0..8, stands for values
//! `2 l + 1`; its index is `l0 | l1 << 3 | l2 << 6 | l3 << 9` (0..4096).
//! Which points are on each grid comes from the dequantization tables
//! ([`crate::iq3_grids`]): IQ3S_GRID's bytes are the `2 l + 1` themselves,
//! IQ3XXS_GRID's the levels 4, 12, ..., 52, 62 of l = 0..7.

use std::sync::OnceLock;

use crate::fp16::f32_to_f16;
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use crate::kquant_search::nearest_int;

/// A grid and, for every lattice point off it, its nearest grid points.
struct Search {
    /// Per grid index: the four values `2 l + 1`.
    grid: Vec<[i8; 4]>,
    /// Per lattice index (0..4096): the grid index, or -1 when off the grid.
    map: Vec<i32>,
    /// Per lattice index off the grid: the grid indices at the `nwant`
    /// smallest distinct squared distances, nearest first (ties by index).
    neighbours: Vec<Vec<u16>>,
}

const KMAP: usize = 4096;

impl Search {
    fn new(levels: impl Fn(u8) -> i8, table: &[u32], nwant: usize) -> Search {
        let grid: Vec<[i8; 4]> = table
            .iter()
            .map(|&v| std::array::from_fn(|i| 2 * levels((v >> (8 * i)) as u8) + 1))
            .collect();
        let mut map = vec![-1i32; KMAP];
        for (g, p) in grid.iter().enumerate() {
            let idx: usize = (0..4).map(|i| (((p[i] - 1) / 2) as usize) << (3 * i)).sum();
            map[idx] = g as i32;
        }
        let mut neighbours = vec![Vec::new(); KMAP];
        let mut dist: Vec<(i32, usize)> = Vec::with_capacity(grid.len());
        for (i, nb) in neighbours.iter_mut().enumerate() {
            if map[i] >= 0 {
                continue;
            }
            let pos: [i32; 4] = std::array::from_fn(|k| 2 * ((i >> (3 * k)) & 7) as i32 + 1);
            dist.clear();
            dist.extend(grid.iter().enumerate().map(|(j, p)| {
                let d2 = (0..4)
                    .map(|k| (p[k] as i32 - pos[k]) * (p[k] as i32 - pos[k]))
                    .sum();
                (d2, j)
            }));
            dist.sort_unstable();
            let mut d2 = dist[0].0;
            let mut nhave = 1;
            for &(d, j) in dist.iter() {
                if d > d2 {
                    if nhave == nwant {
                        break;
                    }
                    d2 = d;
                    nhave += 1;
                }
                nb.push(j as u16);
            }
        }
        Search {
            grid,
            map,
            neighbours,
        }
    }

    /// The grid point among `u`'s neighbours nearest `x` at `scale`
    /// (weighted by `w`); its levels go to `l`. Returns its index.
    fn best_neighbour(&self, u: usize, x: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = 0usize;
        for &j in &self.neighbours[u] {
            let pg = &self.grid[j as usize];
            let mut d2 = 0f32;
            for i in 0..4 {
                let diff = scale * pg[i] as f32 - x[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = j as usize;
            }
        }
        let pg = &self.grid[best];
        for i in 0..4 {
            l[i] = (pg[i] - 1) / 2;
        }
        best
    }
}

fn xxs_search() -> &'static Search {
    static S: OnceLock<Search> = OnceLock::new();
    S.get_or_init(|| Search::new(|v| (v.saturating_sub(4) / 8) as i8, &IQ3XXS_GRID, 2))
}

fn s_search() -> &'static Search {
    static S: OnceLock<Search> = OnceLock::new();
    S.get_or_init(|| Search::new(|v| (v.saturating_sub(1) / 2) as i8, &IQ3S_GRID, 3))
}

/// The lattice index of four levels.
fn lattice(l: &[i8]) -> usize {
    (0..4).map(|i| (l[i] as usize) << (3 * i)).sum()
}

/// One 32-value sub-block's search (both types): `xval` the magnitudes,
/// `weight` their weights. Returns (scale, grid index per group).
fn search32(
    s: &Search,
    xval: &[f32; 32],
    weight: &[f32; 32],
    ntrial: i32,
    recheck_all: bool,
) -> (f32, [usize; 8]) {
    const KMAXQ: i32 = 8;
    let waux: [f32; 32] = std::array::from_fn(|i| weight[i].sqrt());
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = max.max(v);
    }
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    let mut on_grid = [!recheck_all; 8];
    let mut on_grid_aux = [true; 8];
    let snap = |id: f32, x: f32| nearest_int(0.5 * (id * x - 1.0)).clamp(0, KMAXQ - 1) as i8;
    for is in -ntrial..=ntrial {
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.2) / max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            for i in 0..4 {
                laux[4 * k + i] = snap(id, xval[4 * k + i]);
            }
            let u = lattice(&laux[4 * k..4 * k + 4]);
            on_grid_aux[k] = s.map[u] >= 0;
            if s.map[u] < 0 {
                s.best_neighbour(
                    u,
                    &xval[4 * k..4 * k + 4],
                    &waux[4 * k..4 * k + 4],
                    this_scale,
                    &mut laux[4 * k..4 * k + 4],
                );
            }
        }
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..32 {
            let q = (2 * laux[i] + 1) as f32;
            sumqx += weight[i] * xval[i] * q;
            sumq2 += weight[i] * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            if on_grid[k] && !recheck_all {
                continue;
            }
            let mut p = [0i8; 4];
            for i in 0..4 {
                p[i] = snap(id, xval[4 * k + i]);
            }
            let u = lattice(&p);
            let g = if s.map[u] < 0 {
                s.best_neighbour(
                    u,
                    &xval[4 * k..4 * k + 4],
                    &waux[4 * k..4 * k + 4],
                    scale,
                    &mut l[4 * k..4 * k + 4],
                )
            } else {
                s.map[u] as usize
            };
            for i in 0..4 {
                l[4 * k + i] = (s.grid[g][i] - 1) / 2;
            }
        }
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..32 {
            let q = (2 * l[i] + 1) as f32;
            sumqx += weight[i] * xval[i] * q;
            sumq2 += weight[i] * q * q;
        }
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    let mut idx = [0usize; 8];
    for (k, g) in idx.iter_mut().enumerate() {
        // Every group is on the grid now (ggml aborts otherwise).
        *g = s.map[lattice(&l[4 * k..4 * k + 4])].max(0) as usize;
    }
    (scale, idx)
}

/// The weights of one 256-value block: `qw * sqrt(sigma2 + x^2)` with an
/// importance matrix, `x^2` without.
fn block_weights(x: &[f32], qw: Option<&[f32]>) -> [f32; 256] {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / 256.0;
    std::array::from_fn(|i| match qw {
        Some(q) => q[i] * (sigma2 + x[i] * x[i]).sqrt(),
        None => x[i] * x[i],
    })
}

/// ggml's quantize_iq3_xxs: 98-byte blocks (fp16 d, 64 grid indices, eight
/// u32 of four 7-bit sign masks and a 4-bit scale).
pub fn quantize_xxs(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
    let s = xxs_search();
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(98))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, qw.map(|q| &q[256 * ibl..256 * ibl + 256]));
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        let mut sas = [0u32; 8];
        for ib in 0..8 {
            let xb = &x[32 * ib..32 * ib + 32];
            let weight: [f32; 32] = std::array::from_fn(|i| w[32 * ib + i]);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            for k in 0..4 {
                let mut nflip = 0;
                let mut sg = 0u8;
                for i in 0..8 {
                    let v = xb[8 * k + i];
                    if v >= 0.0 {
                        xval[8 * k + i] = v;
                    } else {
                        xval[8 * k + i] = -v;
                        nflip += 1;
                        sg |= 1 << i;
                    }
                }
                if nflip % 2 == 1 {
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
                    sg ^= 1 << imin;
                }
                signs[k] = sg & 127;
            }
            let max = xval.iter().copied().fold(xval[0], f32::max);
            if max < GROUP_MAX_EPS_IQ3_XXS {
                continue;
            }
            let (mut scale, idx) = search32(s, &xval, &weight, 15, false);
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
            let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
            let v = sas[ib] | (l as u32) << 28;
            blk[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// ggml's quantize_iq3_s: 110-byte blocks (fp16 d, 64 low bytes of the
/// grid indices, 8 bytes of their ninth bits, 32 sign bytes, 4 bytes of
/// paired 4-bit scales).
pub fn quantize_s(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    let s = s_search();
    for (ibl, (x, blk)) in src
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(110))
        .enumerate()
    {
        blk.fill(0);
        let w = block_weights(x, qw.map(|q| &q[256 * ibl..256 * ibl + 256]));
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        // ggml advances its index and sign pointers only past the sub-blocks
        // it stores: after an all-zero sub-block the next ones land 8 (and
        // 4) bytes early, and the reader sees them at the wrong place. Kept,
        // for the same bytes as llama-quantize (it only happens to rows with
        // 32 zeros in a row).
        let (mut qs_at, mut signs_at) = (2usize, 74usize);
        for ib in 0..8 {
            let xb = &x[32 * ib..32 * ib + 32];
            let weight: [f32; 32] = std::array::from_fn(|i| w[32 * ib + i]);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            for k in 0..4 {
                for i in 0..8 {
                    let v = xb[8 * k + i];
                    if v >= 0.0 {
                        xval[8 * k + i] = v;
                    } else {
                        xval[8 * k + i] = -v;
                        signs[k] |= 1 << i;
                    }
                }
            }
            let max = xval.iter().copied().fold(xval[0], f32::max);
            if max == 0.0 {
                continue;
            }
            let (mut scale, idx) = search32(s, &xval, &weight, 9, true);
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
            let l1 = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
            let l2 = nearest_int(0.5 * (id * scales[ib + 1] - 1.0)).clamp(0, 15);
            blk[106 + ib / 2] = (l1 | l2 << 4) as u8;
        }
    }
}
