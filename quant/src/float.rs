//! Plain float rows: F32 (4 bytes LE), F16 (IEEE half, 2 bytes LE) and BF16
//! (2 bytes LE). Their activation type is F32 (4 bytes LE per value).

use crate::fp16::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

/// Number of independent partial sums in the scalar dots (keeps the loop
/// free of a single serial dependency; a SIMD path uses the same split).
const LANES: usize = 8;

#[inline]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *o = f32_at(b);
    }
}

pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Values decoded per step of the dots (into stack buffers, so the
/// multiply-add loop is a plain f32 loop the compiler can vectorize).
pub(crate) const CHUNK: usize = 64;

/// Dot of `n` weights (each `WSIZE` bytes, decoded by `dec`) with `n` f32
/// activations, accumulated in LANES f32 partial sums. Short buffers
/// shorten the sum instead of panicking.
#[inline]
fn dot_with<const WSIZE: usize>(n: usize, w: &[u8], a: &[u8], dec: impl Fn(&[u8]) -> f32) -> f32 {
    let n = n.min(w.len() / WSIZE).min(a.len() / 4);
    let (w, a) = (&w[..n * WSIZE], &a[..n * 4]);
    let mut acc = [0f32; LANES];
    let mut wv = [0f32; CHUNK];
    let mut av = [0f32; CHUNK];
    let mut wc = w.chunks_exact(WSIZE * CHUNK);
    let mut ac = a.chunks_exact(4 * CHUNK);
    for (wb, ab) in (&mut wc).zip(&mut ac) {
        for (o, b) in wv.iter_mut().zip(wb.chunks_exact(WSIZE)) {
            *o = dec(b);
        }
        for (o, b) in av.iter_mut().zip(ab.chunks_exact(4)) {
            *o = f32_at(b);
        }
        for (wl, al) in wv.chunks_exact(LANES).zip(av.chunks_exact(LANES)) {
            for ((s, x), y) in acc.iter_mut().zip(wl).zip(al) {
                *s += x * y;
            }
        }
    }
    let mut tail = 0f32;
    for (wb, ab) in wc
        .remainder()
        .chunks_exact(WSIZE)
        .zip(ac.remainder().chunks_exact(4))
    {
        tail += dec(wb) * f32_at(ab);
    }
    let mut sum = 0f32;
    for s in acc {
        sum += s;
    }
    sum + tail
}

/// One weight of `WS` bytes (4: F32; 2: BF16 if `BF`, else F16) as f32.
#[inline]
pub(crate) fn decode<const WS: usize, const BF: bool>(b: &[u8]) -> f32 {
    if WS == 4 {
        f32_at(b)
    } else if BF {
        bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
    } else {
        f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// The scalar dots' last steps for a SIMD path that kept their eight
/// partial sums in `lanes` over the whole chunks before `start`: the lanes
/// added in order, then the sum of values `start..n`.
#[inline]
pub(crate) fn finish<const WS: usize, const BF: bool>(
    lanes: [f32; LANES],
    w: &[u8],
    a: &[u8],
    start: usize,
    n: usize,
) -> f32 {
    let mut sum = 0f32;
    for s in lanes {
        sum += s;
    }
    let mut tail = 0f32;
    for (wb, ab) in w[start * WS..n * WS]
        .chunks_exact(WS)
        .zip(a[start * 4..n * 4].chunks_exact(4))
    {
        tail += decode::<WS, BF>(wb) * f32_at(ab);
    }
    sum + tail
}

/// Scalar dot of an F32 weight row with F32 activations.
pub fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_with::<4>(n, w, a, f32_at)
}

/// Scalar dot of an F16 weight row with F32 activations.
pub fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_with::<2>(n, w, a, decode::<2, false>)
}

/// Scalar dot of a BF16 weight row with F32 activations.
pub fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_with::<2>(n, w, a, decode::<2, true>)
}
