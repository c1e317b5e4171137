//! What every SIMD path shares: the safe wrappers around a path's generic
//! row kernel, the matmul over it, and the count of whole blocks a call may
//! read.

/// Safe `DotFn`/`Dot4Fn` wrappers around a generic `#[target_feature]`
/// kernel `$imp::<R>(n, w, [a; R]) -> [f32; R]` (after `R`, any further
/// const arguments given, as `$imp::<R, G>`).
macro_rules! wrappers {
    ($dot:ident, $dot4:ident, $imp:ident $(, $g:expr)*) => {
        pub(super) fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: handed out by `dispatch` only when the CPU has the
            // kernel's target features (`SimdPath::cpu_has`); the kernel
            // bounds every access by its buffers.
            let [v] = unsafe { $imp::<1 $(, $g)*>(n, w, [a]) };
            v
        }

        pub(super) fn $dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
            // SAFETY: as above.
            *out = unsafe { $imp::<4 $(, $g)*>(n, w, a) };
        }
    };
}
pub(crate) use wrappers;

/// Whole blocks that `w` and every activation row hold, at most `n / qk`.
#[inline]
pub(crate) fn blocks<const R: usize>(
    n: usize,
    qk: usize,
    w: &[u8],
    wbytes: usize,
    a: &[&[u8]; R],
    abytes: usize,
) -> usize {
    let mut nb = (n / qk).min(w.len() / wbytes);
    for s in a {
        nb = nb.min(s.len() / abytes);
    }
    nb
}

/// `GemmFn` over a generic row kernel `$imp::<R>(n, w, [a; R])`: each weight
/// row against eight activation rows at a time (its super-blocks decoded
/// once per eight), the rest in groups of 4, 2 and 1 (a batched decode step
/// has few rows). The kernel does the same per
/// activation for every `R`, so the results are the `R = 1` dot's.
macro_rules! gemm_rows {
    ($gemm:ident, $imp:ident, $wb:expr, $ab:expr, $qk:expr $(, $g:expr)*) => {
        pub(super) fn $gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            let (rb, ab) = ((n / $qk) * $wb, (n / $qk) * $ab);
            if rb == 0 || ab == 0 || rows == 0 {
                return;
            }
            let t = t.min(a.len() / ab).min(out.len() / rows);
            let act = |j: usize| &a[j * ab..(j + 1) * ab];
            let row = |r: usize| &w[r * rb..(r + 1) * rb];
            let held = rows.min(w.len() / rb);
            // Blocks of GEMM_ROW_BLOCK weight rows (L2-resident) against one
            // group of activation rows at a time (L1-resident across the
            // block), rather than every group re-read from L2 per row.
            for r0 in (0..held).step_by($crate::simd_shared::GEMM_ROW_BLOCK) {
                let block = r0..(r0 + $crate::simd_shared::GEMM_ROW_BLOCK).min(held);
                let mut j = 0;
                while j + 8 <= t {
                    let eight: [&[u8]; 8] = std::array::from_fn(|i| act(j + i));
                    for r in block.clone() {
                        // SAFETY: as in `wrappers`.
                        let v = unsafe { $imp::<8 $(, $g)*>(n, row(r), eight) };
                        for (i, vi) in v.into_iter().enumerate() {
                            out[(j + i) * rows + r] = vi;
                        }
                    }
                    j += 8;
                }
                if j + 4 <= t {
                    let four: [&[u8]; 4] = std::array::from_fn(|i| act(j + i));
                    for r in block.clone() {
                        // SAFETY: as above.
                        let v = unsafe { $imp::<4 $(, $g)*>(n, row(r), four) };
                        for (i, vi) in v.into_iter().enumerate() {
                            out[(j + i) * rows + r] = vi;
                        }
                    }
                    j += 4;
                }
                if j + 2 <= t {
                    for r in block.clone() {
                        // SAFETY: as above.
                        let v = unsafe { $imp::<2 $(, $g)*>(n, row(r), [act(j), act(j + 1)]) };
                        out[j * rows + r] = v[0];
                        out[(j + 1) * rows + r] = v[1];
                    }
                    j += 2;
                }
                if j < t {
                    for r in block {
                        // SAFETY: as above.
                        let [v] = unsafe { $imp::<1 $(, $g)*>(n, row(r), [act(j)]) };
                        out[j * rows + r] = v;
                    }
                }
            }
        }
    };
}
pub(crate) use gemm_rows;

/// Weight rows per block in [`gemm_rows`]' loop: 32 rows of a 4096-wide
/// K-quant matrix are 72-84 KB, well inside L2.
pub(crate) const GEMM_ROW_BLOCK: usize = 32;

/// A matmul's sizes as far as the buffers hold them in full.
pub(crate) struct Shape {
    /// Blocks per row.
    pub nb: usize,
    /// Bytes per weight row.
    pub rb: usize,
    /// Bytes per activation row.
    pub ab: usize,
    /// Activation rows held by `a` and `out`.
    pub t: usize,
    /// Weight rows held by `w`.
    pub held: usize,
    /// Rows of the matmul (the stride of `out`).
    pub rows: usize,
}

/// The shape of a matmul of `rows` rows of `n` values (blocks of `qk`
/// values, `wb` bytes) against `t` activation rows (blocks of `abytes`),
/// or `None` when it has nothing to compute.
#[allow(clippy::too_many_arguments)]
pub(crate) fn shape(
    n: usize,
    qk: usize,
    wb: usize,
    abytes: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &[f32],
) -> Option<Shape> {
    let nb = n / qk;
    let (rb, ab) = (nb * wb, nb * abytes);
    if nb == 0 || rows == 0 || t == 0 {
        return None;
    }
    let t = t.min(a.len() / ab).min(out.len() / rows);
    let held = rows.min(w.len() / rb);
    (t > 0 && held > 0).then_some(Shape {
        nb,
        rb,
        ab,
        t,
        held,
        rows,
    })
}

/// Bytes ahead at which a tiled kernel prefetches the tile it will take
/// after this one (of `tile` bytes, contiguous in the matrix): the first
/// whole tile at least 4 KiB ahead. The next tile alone is too close for
/// short rows (a 128-wide dt projection's eight-row tile is 704 bytes of
/// Q5_0) to hide a trip to DRAM.
pub(crate) fn tile_prefetch_distance(tile: usize) -> usize {
    const MIN: usize = 4096;
    let tile = tile.max(1);
    tile * MIN.div_ceil(tile)
}
