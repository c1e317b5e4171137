//! NEON dots of F32/F16/BF16 weight rows with F32 activations. The scalar
//! reference (`crate::float`) keeps 8 partial sums over whole chunks of 64
//! values; here they are the lanes of two vectors (multiply, then add: no
//! fused multiply-add), and the remainder goes through the scalar's own
//! steps, so results are bit-identical.

use crate::float::{finish, CHUNK};
use crate::simd_shared::{blocks, wrappers};
use std::arch::aarch64::*;

/// Four weights at `p` as f32: `WS` = 4 (F32), 2 with `BF` (BF16) or 2
/// (F16, widened by `crate::fp16::f16_to_f32`'s formula, lane by lane).
///
/// # Safety
/// NEON (every aarch64 CPU); `p` points at `4 * WS` readable bytes.
#[inline(always)]
unsafe fn load4<const WS: usize, const BF: bool>(p: *const u8) -> float32x4_t {
    if WS == 4 {
        return vld1q_f32(p as *const f32);
    }
    let h = vmovl_u16(vld1_u16(p as *const u16));
    if BF {
        return vreinterpretq_f32_u32(vshlq_n_u32::<16>(h));
    }
    let magnitude = vandq_u32(h, vdupq_n_u32(0x7fff));
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    let normalized = vmulq_f32(
        vreinterpretq_f32_u32(vaddq_u32(
            vshlq_n_u32::<13>(magnitude),
            vdupq_n_u32(0x7000_0000),
        )),
        vdupq_n_f32(f32::from_bits(0x0780_0000)),
    );
    let denormalized = vsubq_f32(
        vreinterpretq_f32_u32(vorrq_u32(magnitude, vdupq_n_u32(126 << 23))),
        vdupq_n_f32(0.5),
    );
    let is_denormal = vcltq_u32(magnitude, vdupq_n_u32(0x400));
    let bits = vbslq_u32(
        is_denormal,
        vreinterpretq_u32_f32(denormalized),
        vreinterpretq_u32_f32(normalized),
    );
    vreinterpretq_f32_u32(vorrq_u32(sign, bits))
}

/// # Safety
/// NEON (every aarch64 CPU; inlined into the NEON kernels). Lengths are not
/// trusted: `blocks` clamps `n` to the whole blocks that `w` and every `a[j]`
/// hold.
#[inline(always)]
unsafe fn dot<const R: usize, const WS: usize, const BF: bool>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
) -> [f32; R] {
    // Values every buffer holds in full (blocks of one value).
    let n = blocks(n, 1, w, WS, &a, 4);
    let chunks = n / CHUNK;
    // acc[j].0 holds the scalar's partial sums 0..4, acc[j].1 sums 4..8.
    let mut acc = [(vdupq_n_f32(0.0), vdupq_n_f32(0.0)); R];
    let wp = w.as_ptr();
    for e in (0..chunks * CHUNK).step_by(8) {
        let x0 = load4::<WS, BF>(wp.add(e * WS));
        let x1 = load4::<WS, BF>(wp.add((e + 4) * WS));
        for (s, row) in acc.iter_mut().zip(&a) {
            let y = row.as_ptr().add(e * 4) as *const f32;
            s.0 = vaddq_f32(s.0, vmulq_f32(x0, vld1q_f32(y)));
            s.1 = vaddq_f32(s.1, vmulq_f32(x1, vld1q_f32(y.add(4))));
        }
    }
    let mut out = [0f32; R];
    for ((o, s), row) in out.iter_mut().zip(acc).zip(&a) {
        let mut lanes = [0f32; 8];
        vst1q_f32(lanes.as_mut_ptr(), s.0);
        vst1q_f32(lanes.as_mut_ptr().add(4), s.1);
        *o = finish::<WS, BF>(lanes, w, row, chunks * CHUNK, n);
    }
    out
}

/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot`).
#[target_feature(enable = "neon")]
unsafe fn f32k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 4, false>(n, w, a)
}

/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot`).
#[target_feature(enable = "neon")]
unsafe fn f16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, false>(n, w, a)
}

/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot`).
#[target_feature(enable = "neon")]
unsafe fn bf16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, true>(n, w, a)
}

wrappers!(f32_dot, f32_dot4, f32k);
wrappers!(f16_dot, f16_dot4, f16k);
wrappers!(bf16_dot, bf16_dot4, bf16k);
