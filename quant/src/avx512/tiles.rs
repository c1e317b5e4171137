//! What the sixteen-row prefill tiles (`q4_k_tile`, `iq4_xs_tile`,
//! `tile32`) share: the matmul's shape and the walk over its tiles.

/// Weight rows per tile: one per 32-bit lane of a 512-bit vector.
pub(super) const ROWS: usize = 16;

/// A matmul's sizes as far as the buffers hold them in full.
pub(super) struct Shape {
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
pub(super) fn shape(
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

/// Walks a matmul of shape `s` tile by tile: for each sixteen weight rows
/// of `w` (the last held row repeated past `s.held`), `decode` into `dec`
/// once, then `dot4(dec, j)` for activation rows `j..j + 4` and `dot1(dec,
/// j)` for the rest, row `r`'s result of activation `j` going to `out[j *
/// s.rows + r]`.
pub(super) fn run<D>(
    s: &Shape,
    w: &[u8],
    out: &mut [f32],
    dec: &mut [D],
    decode: impl Fn(&[*const u8; ROWS], &mut [D]),
    dot4: impl Fn(&[D], usize) -> [[f32; ROWS]; 4],
    dot1: impl Fn(&[D], usize) -> [f32; ROWS],
) {
    for r0 in (0..s.held).step_by(ROWS) {
        // Pointers into `w` only (later reads are the kernels' to bound).
        let rp = std::array::from_fn(|i| w.as_ptr().wrapping_add((r0 + i).min(s.held - 1) * s.rb));
        let nr = (s.held - r0).min(ROWS);
        decode(&rp, dec);
        let mut put = |j: usize, v: &[f32; ROWS]| {
            let at = j * s.rows + r0;
            out[at..at + nr].copy_from_slice(&v[..nr]);
        };
        let mut j = 0;
        while j + 4 <= s.t {
            for (i, v) in dot4(dec, j).iter().enumerate() {
                put(j + i, v);
            }
            j += 4;
        }
        while j < s.t {
            put(j, &dot1(dec, j));
            j += 1;
        }
    }
}
