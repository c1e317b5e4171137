//! The matvec and matmul kernels checked on the device that will run them,
//! before it serves: for each quantized weight type of a model, a small
//! matrix (12 rows, so the row guards are crossed, of 256 values (4 rows a
//! warp), of 512 summed in one slice, and of 4096 in 1, 2 and 4: split-K) against 1, 2 and 8
//! activation rows (`matvec_<t>_<c>`) and 9 and 17 (`matmul_<t>`, two column
//! groups), each output against a host reference (f64 over the quant
//! crate's dequantized weights and the dequantized Q8A activations), and
//! every matmul column against the matvec's, bit for bit.
//!
//! The kernels are proven on the CPU emulator by the tests; this is what
//! makes it safe to send them to a GPU they have never run on: a kernel that
//! computes something else there (a misread layout, a driver's JIT) is found
//! at load, named, and the model is refused on that device (`--device auto`
//! then runs on the CPU and says why) instead of answering wrongly.
//! `MAMBA_GGUF_CUDA_SELFTEST=0` skips it.

use crate::device::{Buffer, Device};
use crate::error::{CudaError, Result};
use crate::ops::{self, MvOut, QActs};
use quant::GgmlType;

const ROWS: usize = 12;
/// (row length, slices) of the matrices checked.
/// 256: 8 units a row, 4 rows a warp (dt_proj's rows).
const SHAPES: [(usize, usize); 5] = [(256, 1), (512, 1), (4096, 1), (4096, 2), (4096, 4)];

/// Whether the self-test runs (yes unless `MAMBA_GGUF_CUDA_SELFTEST=0`).
pub fn wanted() -> bool {
    std::env::var("MAMBA_GGUF_CUDA_SELFTEST").map_or(true, |v| v != "0")
}

/// A small deterministic generator (xorshift64*): the same data every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-scale, scale).
    pub(crate) fn f32(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// Q8A of rows of `n` values on the host (the README's definition): q, d, s.
pub(crate) fn q8a(x: &[f32]) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let (mut q, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        let mut sum = 0;
        for &v in blk {
            let qi = (v * id).round().clamp(-127.0, 127.0) as i32;
            q.push(qi as i8);
            sum += qi;
        }
        d.push(db);
        s.push(sum);
    }
    (q, d, s)
}

/// The exact dot of weight row `r` (dequantized, rows of `n` in `wd`) with
/// activation row `c` of a Q8A (`q`, `d`) on the host, in f64, and the sum
/// of its terms' magnitudes (the scale of fp32 rounding in any order).
pub(crate) fn host_dot(
    wd: &[f32],
    (q, d): (&[i8], &[f32]),
    n: usize,
    r: usize,
    c: usize,
) -> (f64, f64) {
    let (mut dot, mut mag) = (0f64, 0f64);
    for k in 0..n {
        let a = f64::from(q[c * n + k]) * f64::from(d[(c * n + k) / 32]);
        let t = f64::from(wd[r * n + k]) * a;
        dot += t;
        mag += t.abs();
    }
    (dot, mag)
}

fn fail(kernel: &str, detail: String) -> CudaError {
    CudaError::SelfTest {
        kernel: kernel.to_string(),
        detail,
    }
}

/// Checks `matvec_<ty>_{1,2,8}` and `matmul_<ty>` on `dev` (see the module
/// docs), then the type's tensor-core matmul against them
/// ([`crate::mma::check`]: one that disagrees is switched off with a
/// warning, and the device still serves on the dp4a path). Float types and
/// types without a quantized kernel pass untested.
pub fn check_matvec(dev: &Device, ty: GgmlType) -> Result<()> {
    check_layout(dev, ty, false)?;
    crate::mma::check(dev, ty)?;
    Ok(())
}

/// [`check_matvec`], or with `as_stored` the weights uploaded as the file
/// has them instead of in the device layout: what a kernel that misreads
/// its layout would see, so the tests can show the check catching it.
#[doc(hidden)]
pub fn check_layout(dev: &Device, ty: GgmlType, as_stored: bool) -> Result<()> {
    for (n, splits) in SHAPES {
        check_shape(dev, ty, n, splits, as_stored)?;
    }
    Ok(())
}

/// `rows` rows of `n` values of `ty` for the checks: the file's bytes and
/// their dequantized values. Quantized from uniform values where the quant
/// crate writes the type; pseudo-random blocks otherwise.
pub(crate) fn weights(
    rng: &mut Rng,
    ty: GgmlType,
    rows: usize,
    n: usize,
    stem: &str,
) -> Result<(Vec<u8>, Vec<f32>)> {
    let rb = ty.row_bytes(n).ok_or(CudaError::Unsupported { ty })?;
    let w: Vec<f32> = (0..rows * n).map(|_| rng.f32(1.0)).collect();
    let mut wq = vec![0u8; rows * rb];
    let mut wd = vec![0f32; rows * n];
    for r in 0..rows {
        let (src, dst) = (&w[r * n..(r + 1) * n], &mut wq[r * rb..(r + 1) * rb]);
        match quant::quantize_row(ty, src, dst) {
            Ok(()) => {}
            // A type read but not written, or written only with an importance
            // matrix (the IQ1 types, IQ2_XXS, IQ2_XS): pseudo-random blocks,
            // each with a small finite fp16 scale first.
            Err(quant::QuantError::NoQuantizer { .. } | quant::QuantError::NeedsImatrix { .. }) => {
                for b in dst.iter_mut() {
                    *b = rng.next() as u8;
                }
                for blk in dst.chunks_mut(ty.type_size()) {
                    if ty == GgmlType::IQ1_M {
                        // Its fp16 scale is the top nibbles of the last four
                        // u16: 0x2000 there.
                        for k in [49, 51, 53] {
                            blk[k] &= 0x0f;
                        }
                        blk[55] = (blk[55] & 0x0f) | 0x20;
                    } else {
                        blk[..2].copy_from_slice(&0x2000u16.to_le_bytes());
                    }
                }
            }
            Err(e) => return Err(fail(stem, format!("quantize: {e}"))),
        }
        quant::dequantize_row(ty, dst, &mut wd[r * n..(r + 1) * n])
            .map_err(|e| fail(stem, format!("dequantize: {e}")))?;
    }
    Ok((wq, wd))
}

fn check_shape(dev: &Device, ty: GgmlType, n: usize, splits: usize, as_stored: bool) -> Result<()> {
    let Some(stem) = ops::matvec_stem(ty) else {
        return Ok(());
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ty as u64 ^ (n * splits) as u64);
    let (wq, wd) = weights(&mut rng, ty, ROWS, n, stem)?;
    let wb = if as_stored {
        // Padded to the device layout's length so the size check passes.
        let dev_rb = ops::device_row_bytes(ty, n).ok_or(CudaError::Unsupported { ty })?;
        let mut raw = wq.clone();
        raw.resize(ROWS * dev_rb, 0);
        dev.upload(&raw)?
    } else {
        ops::upload_weights(dev, ty, n, &wq)?
    };
    let cols = 17;
    let x: Vec<f32> = (0..cols * n).map(|_| rng.f32(2.0)).collect();
    let (q, d, s) = q8a(&x);
    let (qb, db, sb) = (dev.upload(&q)?, dev.upload(&d)?, dev.upload(&s)?);
    let acts = QActs {
        q: &dev.view(&qb, 0, q.len())?,
        d: &dev.view(&db, 0, d.len())?,
        s: &dev.view(&sb, 0, s.len())?,
    };
    let wv = dev.view(&wb, 0, wb.len())?;
    // out[c][r] on the device for the first `nc` columns.
    let run = |nc: usize, matmul: bool| -> Result<Vec<f32>> {
        let out: Buffer<f32> = dev.alloc(nc * ROWS)?;
        let o = dev.view(&out, 0, nc * ROWS)?;
        let (shape, to) = ((&wv, n, ROWS), &MvOut::to(&o));
        if matmul {
            ops::matmul_split(dev, ty, shape, &acts, nc, to, splits)?;
        } else {
            ops::matvec_split(dev, ty, shape, &acts, nc, to, splits)?;
        }
        dev.read(&out)
    };
    let nb = n / 32;
    for (nc, matmul) in [(1, false), (2, false), (8, false), (9, true), (17, true)] {
        let kernel = if matmul {
            format!("matmul_{stem} (n {n}, {splits} slice(s))")
        } else {
            format!("matvec_{stem}_{nc} (n {n}, {splits} slice(s))")
        };
        let got = run(nc, matmul)?;
        for c in 0..nc {
            for r in 0..ROWS {
                let (dot, mag) = host_dot(&wd, (&q, &d), n, r, c);
                let g = f64::from(got[c * ROWS + r]);
                // Within fp32 rounding in another order (NaN fails too).
                let close = (g - dot).abs() <= 1e-5 * mag + 1e-30;
                if !close {
                    return Err(fail(
                        &kernel,
                        format!("row {r}, column {c}: {g} where the host computes {dot}"),
                    ));
                }
            }
        }
        if matmul {
            // Each column as the matvec of 8 or fewer gives it, bit for bit.
            for c0 in (0..nc).step_by(8) {
                let k = (nc - c0).min(8);
                let acts = QActs {
                    q: &dev.view(&qb, c0 * n, k * n)?,
                    d: &dev.view(&db, c0 * nb, k * nb)?,
                    s: &dev.view(&sb, c0 * nb, k * nb)?,
                };
                let out: Buffer<f32> = dev.alloc(k * ROWS)?;
                let o = dev.view(&out, 0, k * ROWS)?;
                let to = &MvOut::to(&o);
                ops::matvec_split(dev, ty, (&wv, n, ROWS), &acts, k, to, splits)?;
                let mv = dev.read(&out)?;
                let mm = &got[c0 * ROWS..(c0 + k) * ROWS];
                if let Some(i) = (0..k * ROWS).find(|&i| mv[i].to_bits() != mm[i].to_bits()) {
                    return Err(fail(
                        &kernel,
                        format!(
                            "column {}, row {}: {} where matvec_{stem}_{k} gives {}",
                            c0 + i / ROWS,
                            i % ROWS,
                            mm[i],
                            mv[i]
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
