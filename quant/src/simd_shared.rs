//! What every SIMD path shares: the safe wrappers around a path's generic
//! row kernel and the count of whole blocks a call may read.

/// Safe `DotFn`/`Dot4Fn` wrappers around a generic `#[target_feature]`
/// kernel `$imp::<R>(n, w, [a; R]) -> [f32; R]`.
macro_rules! wrappers {
    ($dot:ident, $dot4:ident, $imp:ident) => {
        pub(super) fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: handed out by `dispatch` only when the CPU has the
            // kernel's target features (`SimdPath::cpu_has`); the kernel
            // bounds every access by its buffers.
            let [v] = unsafe { $imp::<1>(n, w, [a]) };
            v
        }

        pub(super) fn $dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
            // SAFETY: as above.
            *out = unsafe { $imp::<4>(n, w, a) };
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
