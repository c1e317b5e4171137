//! ggml block formats: bit-exact reference quantizers, dequantizers and the
//! dot-product kernels the runtime's matmuls are built from. Pure compute: no
//! I/O and no model knowledge.
//!
//! Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S, IQ2_S, IQ1_M,
//! TQ1_0, TQ2_0; IQ2_XXS, IQ2_XS and IQ1_S with an importance matrix only,
//! as in ggml ([`QuantError::NeedsImatrix`]).
//! Quantizers reproduce byte for byte what ggml's `ggml_quantize_chunk`
//! writes, llama-quantize's path, without an importance matrix
//! ([`quantize_row`]) and with one ([`quantize_row_weighted`]). Activation pairing (see [`vec_dot_type`]):
//! - F32/F16/BF16 weights dot with plain F32 activations;
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights with Q8_0 activations. ggml pairs
//!   Q4_1/Q5_1 with Q8_1; we use Q8_0 and apply the weight min through the
//!   integer sum of each activation block, which needs no extra format and is
//!   exact where Q8_1's fp16 sum is rounded;
//! - IQ4_NL (a 32-value type) with Q8_0 activations, as ggml;
//! - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, the IQ1, IQ2, IQ3 and TQ types, IQ4_XS (and
//!   Q8_K) with Q8_K activations.
//!
//! Typical use (the runtime quantizes each activation row once per matmul):
//! ```
//! use quant::{kernel, quantize_row, matvec, GgmlType};
//! let (n, rows) = (256, 2);
//! let weights: Vec<f32> = (0..n * rows).map(|i| (i as f32 * 0.37).sin()).collect();
//! let k = kernel(GgmlType::Q4_K).expect("supported");
//! let rb = GgmlType::Q4_K.row_bytes(n).expect("whole blocks");
//! let mut w = vec![0u8; rb * rows];
//! for (src, dst) in weights.chunks(n).zip(w.chunks_mut(rb)) {
//!     quantize_row(GgmlType::Q4_K, src, dst)?;
//! }
//! let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
//! let mut a = vec![0u8; k.act.row_bytes(n).expect("whole blocks")]; // Q8_K
//! quantize_row(k.act, &x, &mut a)?;
//! let mut out = vec![0f32; rows];
//! matvec(&k, n, &w, &a, &mut out)?; // an error, not a partial result, on a short buffer
//! let exact: f32 = weights[..n].iter().zip(&x).map(|(p, q)| p * q).sum();
//! assert!((out[0] - exact).abs() < 0.05 * exact.abs().max(1.0));
//! # Ok::<(), quant::QuantError>(())
//! ```

// The workspace denies unsafe operations outside `unsafe` blocks inside an
// `unsafe fn`; the SIMD kernels here predate that rule (each `unsafe fn`
// body is one unsafe region behind its `# Safety` contract), and wrapping
// their ~300 intrinsic calls is its own change. Every other crate follows it.
#![allow(unsafe_op_in_unsafe_fn)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512;
pub mod dispatch;
pub mod error;
pub mod float;
mod formats;
pub mod fp16;
pub mod iq1;
pub mod iq1_grid;
pub mod iq1_quantize;
pub mod iq2;
pub mod iq2_grids;
pub mod iq3;
pub mod iq3_grids;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod iq_quantize;
mod kquant_scale_min;
mod kquant_search;
pub mod math;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;
pub mod read_loop;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod simd_shared;
pub mod tq;
pub mod types;

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
pub use avx512::VNNI_ENV;
pub use dispatch::{forced_path, kernel, kernel_for_path, kernel_with, self_check, SIMD_ENV};
pub use error::QuantError;
pub use types::GgmlType;

use formats::format;

/// Dot kernel: `n` values, `w` = one weight row of type `weight`, `a` =
/// activations of type `act`, both already validated by the caller (a
/// short buffer yields a partial sum, never a panic).
pub type DotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Prefill micro-kernel: one weight row (`n` values of the weight type)
/// against four activation rows at once, `out[j] = dot(w, a[j])`, each
/// weight block decoded once for all four. Same buffer rules as [`DotFn`];
/// its results equal the path's [`DotFn`] on each pair.
pub type Dot4Fn = fn(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]);

/// Whole-matrix kernel with [`matmul`]'s arguments and buffer rules, for
/// types whose SIMD path works on tiles of several weight rows at once. Its
/// results equal the path's [`DotFn`] on each (row, activation) pair.
pub type GemmFn = fn(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]);

/// A dot kernel together with the types it reads and the path it uses.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub weight: GgmlType,
    pub act: GgmlType,
    pub dot: DotFn,
    /// The four-activation form [`matmul`] uses when present (SIMD paths).
    pub dot4: Option<Dot4Fn>,
    /// The multi-row form [`matvec`] and [`matmul`] use when present.
    pub gemm: Option<GemmFn>,
    pub path: SimdPath,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("weight", &self.weight)
            .field("act", &self.act)
            .field("path", &self.path)
            .finish()
    }
}

/// Instruction-set path of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdPath {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

/// Bytes of a row of `n` values of `ty`, checking support and block size.
pub fn row_size(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported { ty });
    }
    if !n.is_multiple_of(ty.block_size()) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            n,
            block: ty.block_size(),
        });
    }
    ty.row_bytes(n)
        .ok_or(QuantError::Overflow { ty, count: 1, n })
}

fn check_len(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), QuantError> {
    if expected != got {
        return Err(QuantError::BufferSize {
            ty,
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// Quantize one row. `src.len() % ty.block_size() == 0`,
/// `dst.len() == ty.row_bytes(src.len())`.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let f = format(ty).ok_or(QuantError::Unsupported { ty })?;
    let quantize = match (f.quantize, formats::quantize_weighted(ty)) {
        (Some(q), _) => q,
        (None, Some(_)) => return Err(QuantError::NeedsImatrix { ty }),
        (None, None) => return Err(QuantError::NoQuantizer { ty }),
    };
    let bytes = row_size(ty, src.len())?;
    check_len(ty, "quantized output", bytes, dst.len())?;
    quantize(src, dst);
    Ok(())
}

/// Quantize one row with an importance matrix, as `ggml_quantize_chunk`
/// does when llama-quantize is given one: `importance` holds one weight per
/// column of the row (`importance.len() == src.len()`; llama-quantize's
/// per-column mean of the squared activations). Types whose bytes do not
/// depend on it (F32, F16, BF16, Q8_0, TQ1_0, TQ2_0) quantize as
/// [`quantize_row`] does; `None` is [`quantize_row`].
pub fn quantize_row_weighted(
    ty: GgmlType,
    src: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let (Some(qw), Some(weighted)) = (importance, formats::quantize_weighted(ty)) else {
        return quantize_row(ty, src, dst);
    };
    check_len(ty, "importance matrix row", src.len(), qw.len())?;
    let bytes = row_size(ty, src.len())?;
    check_len(ty, "quantized output", bytes, dst.len())?;
    weighted(src, qw, dst);
    Ok(())
}

/// Dequantize `dst.len()` values from `src` (`src.len() == ty.row_bytes(dst.len())`).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let f = format(ty).ok_or(QuantError::Unsupported { ty })?;
    let bytes = row_size(ty, dst.len())?;
    check_len(ty, "quantized input", bytes, src.len())?;
    (f.dequantize)(src, dst);
    Ok(())
}

/// The activation type paired with weight type `ty` (Q8_0, Q8_K, or F32).
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    format(ty).map(|f| f.act)
}

/// `out[r] = dot(row r of w, a)` for `rows = out.len()`; `w` holds
/// `out.len()` rows of `n` values of `k.weight`, contiguous; `a` holds `n`
/// values of `k.act`. Every buffer is validated first ([`check_matmul`] with
/// `t == 1`): a short or long one is an error naming it, never a partial
/// result.
pub fn matvec(k: &Kernel, n: usize, w: &[u8], a: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_matmul(k, n, out.len(), w, 1, a, out)?;
    matvec_unchecked(k, n, w, a, out);
    Ok(())
}

/// Prefill form: `t` activation rows (each `n` values of `k.act`, contiguous
/// in `a`); `out` is `[t][rows]` row-major, `out[j*rows + r] = dot(row r,
/// activation j)`. Validated first like [`matvec`] ([`check_matmul`]).
pub fn matmul(
    k: &Kernel,
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    check_matmul(k, n, rows, w, t, a, out)?;
    matmul_unchecked(k, n, rows, w, t, a, out);
    Ok(())
}

/// [`matvec`] without the checks, for hot loops whose caller has validated
/// the sizes once with [`check_matmul`] (the CPU backend, per matmul, before
/// splitting it across threads): rows missing from a short `w` are left
/// untouched. Use [`matvec`] anywhere else.
pub fn matvec_unchecked(k: &Kernel, n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    if let Some(gemm) = k.gemm {
        let rows = out.len();
        return gemm(n, rows, w, 1, a, out);
    }
    let Some(rb) = k.weight.row_bytes(n).filter(|&b| b > 0) else {
        return;
    };
    for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
        *o = (k.dot)(n, row, a);
    }
}

/// [`matmul`] without the checks (as [`matvec_unchecked`]). Each weight row
/// is read from memory once for all `t` activations; with a
/// [`Kernel::dot4`] its blocks are also decoded once per four activations.
/// Use [`matmul`] unless the sizes were validated with [`check_matmul`].
pub fn matmul_unchecked(
    k: &Kernel,
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) {
    if let Some(gemm) = k.gemm {
        return gemm(n, rows, w, t, a, out);
    }
    let (Some(rb), Some(ab)) = (k.weight.row_bytes(n), k.act.row_bytes(n)) else {
        return;
    };
    if rb == 0 || ab == 0 {
        return;
    }
    let t = t.min(a.len() / ab);
    let act = |j: usize| &a[j * ab..(j + 1) * ab];
    let mut put = |j: usize, r: usize, v: f32| {
        if let Some(o) = j
            .checked_mul(rows)
            .and_then(|i| i.checked_add(r))
            .and_then(|i| out.get_mut(i))
        {
            *o = v;
        }
    };
    for (r, row) in w.chunks_exact(rb).take(rows).enumerate() {
        let mut j = 0;
        if let Some(dot4) = k.dot4 {
            while j + 4 <= t {
                let mut o = [0f32; 4];
                dot4(n, row, [act(j), act(j + 1), act(j + 2), act(j + 3)], &mut o);
                for (i, v) in o.into_iter().enumerate() {
                    put(j + i, r, v);
                }
                j += 4;
            }
        }
        for i in j..t {
            put(i, r, (k.dot)(n, row, act(i)));
        }
    }
}

/// Validate the buffers of a [`matmul`] (or, with `t == 1`, a [`matvec`])
/// call: `n` fills whole blocks of both types, `w` holds `rows` rows, `a`
/// holds `t` activation rows and `out` holds `t * rows` values.
pub fn check_matmul(
    k: &Kernel,
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &[f32],
) -> Result<(), QuantError> {
    let rb = row_size(k.weight, n)?;
    let ab = row_size(k.act, n)?;
    let wbytes = rb.checked_mul(rows).ok_or(QuantError::Overflow {
        ty: k.weight,
        count: rows,
        n,
    })?;
    let abytes = ab.checked_mul(t).ok_or(QuantError::Overflow {
        ty: k.act,
        count: t,
        n,
    })?;
    let outs = t.checked_mul(rows).ok_or(QuantError::Overflow {
        ty: GgmlType::F32,
        count: t,
        n: rows,
    })?;
    check_len(k.weight, "weight", wbytes, w.len())?;
    check_len(k.act, "activation", abytes, a.len())?;
    check_len(GgmlType::F32, "output", outs, out.len())
}
