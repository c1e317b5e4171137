//! The int8 tensor-core matmul (`kernels/mma.cu`, `mma_matmul_<t>`:
//! `mma.sync.m16n8k32.s8`, sm_80 and newer) for prefill chunks and batched
//! decode, and the self-test that lets it serve.
//!
//! A tensor-core kernel serves only after it agreed with the dp4a matmul
//! (itself checked against an f64 host reference by [`crate::selftest`]) on
//! this device, in this process: [`check`] runs at model load, from
//! [`crate::selftest::check_matvec`], for each weight type the model has.
//! It first runs one bare MMA on given matrices (`mma_probe_s8`) against a
//! plain integer product, then the type's kernel on small matrices that
//! cross its 64-row and 32-column tiles, against the dp4a matmul and the
//! host reference. A kernel that disagrees is switched off for the process
//! with a warning naming it, and [`crate::ops::matmul`] keeps the dp4a
//! tiles for that type: a misread fragment layout can cost speed, never a
//! wrong answer. A card below sm_80 has no `mma` module: the kernels are
//! missing there, which is no warning, and the dp4a path serves.
//!
//! `MAMBA_GGUF_CUDA_MMA=0` keeps the dp4a path everywhere. On the emulator
//! the tensor-core path is checked at load like on a GPU but serves only
//! with `MAMBA_GGUF_CUDA_MMA=1` (its sums are in another order than the
//! dp4a tiles', and the emulated backend tests compare paths bit for bit).

use crate::device::{Device, Params};
use crate::error::{CudaError, Result};
use crate::ops::{self, MvOut, QActs};
use crate::selftest::{self, Rng};
use quant::GgmlType;
use std::sync::Mutex;

/// The tensor-core kernel of each quantized weight type.
const KERNELS: [(GgmlType, &str); 21] = [
    (GgmlType::Q4_0, "mma_matmul_q4_0"),
    (GgmlType::Q4_1, "mma_matmul_q4_1"),
    (GgmlType::Q5_0, "mma_matmul_q5_0"),
    (GgmlType::Q5_1, "mma_matmul_q5_1"),
    (GgmlType::Q8_0, "mma_matmul_q8_0"),
    (GgmlType::Q2_K, "mma_matmul_q2_k"),
    (GgmlType::Q3_K, "mma_matmul_q3_k"),
    (GgmlType::Q4_K, "mma_matmul_q4_k"),
    (GgmlType::Q5_K, "mma_matmul_q5_k"),
    (GgmlType::Q6_K, "mma_matmul_q6_k"),
    (GgmlType::IQ1_S, "mma_matmul_iq1_s"),
    (GgmlType::IQ1_M, "mma_matmul_iq1_m"),
    (GgmlType::IQ2_XXS, "mma_matmul_iq2_xxs"),
    (GgmlType::IQ2_XS, "mma_matmul_iq2_xs"),
    (GgmlType::IQ2_S, "mma_matmul_iq2_s"),
    (GgmlType::TQ1_0, "mma_matmul_tq1_0"),
    (GgmlType::TQ2_0, "mma_matmul_tq2_0"),
    (GgmlType::IQ3_XXS, "mma_matmul_iq3_xxs"),
    (GgmlType::IQ3_S, "mma_matmul_iq3_s"),
    (GgmlType::IQ4_NL, "mma_matmul_iq4_nl"),
    (GgmlType::IQ4_XS, "mma_matmul_iq4_xs"),
];

/// `mma_matmul_<t>` of a quantized weight type.
pub fn kernel_of(ty: GgmlType) -> Option<&'static str> {
    KERNELS.iter().find(|k| k.0 == ty).map(|k| k.1)
}

/// What the self-test decided for a kernel on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Agreed with the dp4a path: it serves.
    Serving,
    /// Not on this card (below sm_80: no `mma` module); the dp4a path serves.
    Unavailable,
    /// Disagreed (the detail says where): switched off for this process,
    /// the dp4a path serves.
    SwitchedOff(String),
}

/// (device name, kernel) -> verdict, for this process.
static VERDICTS: Mutex<Vec<(String, &'static str, Verdict)>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<(String, &'static str, Verdict)>> {
    // A panic elsewhere while it was held leaves a list that is still whole.
    VERDICTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The self-test's verdict on `kernel` for `dev` in this process, if it ran.
pub fn verdict(dev: &Device, kernel: &str) -> Option<Verdict> {
    let name = dev.name();
    table()
        .iter()
        .find(|v| v.0 == name && v.1 == kernel)
        .map(|v| v.2.clone())
}

/// Every verdict of this process: (device name, kernel, verdict), in the
/// order the self-tests ran (`bench --verify` prints them).
pub fn verdicts() -> Vec<(String, &'static str, Verdict)> {
    table().clone()
}

fn record(dev: &Device, kernel: &'static str, v: Verdict) {
    let name = dev.name();
    let mut all = table();
    all.retain(|x| !(x.0 == name && x.1 == kernel));
    all.push((name, kernel, v));
}

/// `MAMBA_GGUF_CUDA_MMA`: `0` never, `1` also on the emulator.
fn env_choice() -> Option<bool> {
    match std::env::var("MAMBA_GGUF_CUDA_MMA").ok().as_deref() {
        Some("0") => Some(false),
        Some("1") => Some(true),
        _ => None,
    }
}

/// Activation rows from which [`ops::matmul`] takes the tensor-core kernel:
/// below, its 32-column tiles run too empty and the dp4a tiles win
/// (`scripts/cuda/cost_model.py`: behind at 16 rows on every card modelled,
/// ahead at 24, 1.1-1.4x at 32, 2-3x at 64 and a 128-token prefill chunk).
pub const MIN_COLS: usize = 24;

/// The tensor-core kernel [`ops::matmul`] uses for `ty` on `dev` (from
/// [`MIN_COLS`] activation rows): one whose
/// self-test passed in this process (on the emulator only with
/// `MAMBA_GGUF_CUDA_MMA=1`; never with `=0`).
pub fn serving(dev: &Device, ty: GgmlType) -> Option<&'static str> {
    let kernel = kernel_of(ty)?;
    match env_choice() {
        Some(false) => return None,
        None if dev.is_emu() => return None,
        _ => {}
    }
    (verdict(dev, kernel) == Some(Verdict::Serving)).then_some(kernel)
}

fn shape_err(what: &'static str, value: usize, why: &'static str) -> CudaError {
    CudaError::Shape { what, value, why }
}

fn i32_of(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| shape_err(what, v, "exceeds i32"))
}

fn need(what: &'static str, len: usize, n: usize) -> Result<()> {
    if len < n {
        return Err(CudaError::Size {
            what,
            expected: n,
            got: len,
        });
    }
    Ok(())
}

/// Launches `kernel` (an `mma_matmul_<t>` of `ty`, whatever its verdict):
/// out[c][r] = dot(weight row r, activation row c) (+ add) for c < ncols,
/// as [`ops::matmul`]. The same checks as the dp4a matmul's.
pub fn launch(
    dev: &Device,
    kernel: &'static str,
    ty: GgmlType,
    (w, n, rows): (&crate::View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
) -> Result<()> {
    if rows == 0 || n == 0 || n % 32 != 0 || n % ty.block_size() != 0 {
        return Err(shape_err("mma n", n, "whole blocks, positive"));
    }
    if ncols == 0 {
        return Err(shape_err("ncols", 0, "must be positive"));
    }
    let rb = ops::device_row_bytes(ty, n).ok_or(CudaError::Unsupported { ty })?;
    let nb = n / 32;
    let mul =
        |what, a: usize, b: usize| a.checked_mul(b).ok_or(shape_err(what, a, "size overflows"));
    need(
        "mma weights (device layout)",
        w.len,
        mul("weights", rows, rb)?,
    )?;
    need("mma q", acts.q.len, mul("q", ncols, n)?)?;
    need("mma d", acts.d.len, mul("d", ncols, nb)?)?;
    need("mma s", acts.s.len, mul("s", ncols, nb)?)?;
    let outs = mul("out", ncols, rows)?;
    need("mma out", out.out.len, outs)?;
    let add = match out.add {
        Some(a) => {
            need("mma add", a.len, outs)?;
            dev.check_view(a)?
        }
        None => 0,
    };
    // The K-quant and IQ4_XS units are read with 16-byte loads (matvec.cu's
    // load_unit): a GPU faults on a misaligned one.
    if ops::units_load_16(ty) {
        ops::aligned16(dev, "mma weights address mod 16", w)?;
    }
    let wa = dev.check_view(w)?;
    let p = Params::default()
        .ptr(wa)
        .ptr(dev.check_view(acts.q)?)
        .ptr(dev.check_view(acts.d)?)
        .ptr(dev.check_view(acts.s)?)
        .ptr(dev.check_view(out.out)?)
        .ptr(add)
        .i32(i32_of("n", n)?)
        .i32(i32_of("rows", rows)?)
        .i32(i32_of("row bytes", rb)?)
        .i32(i32_of("ncols", ncols)?)
        .done();
    let blocks = |n: usize, per: usize| {
        u32::try_from(n.div_ceil(per)).map_err(|_| shape_err("grid", n, "too many blocks"))
    };
    // mma.cu: a block of 4 warps takes 64 weight rows x 32 activation rows;
    // the column tiles along x (at most 65,535 row tiles along y: 4M rows).
    let grid = (blocks(ncols, 32)?, blocks(rows, 64)?, 1);
    // SAFETY: the weights, activations and outputs were checked against the
    // shape above, which is all the kernel touches.
    unsafe { dev.launch(kernel, grid, (128, 1, 1), p) }
}

/// [`launch`] of `kernel` if its self-test passed on `dev` in this process,
/// else the dp4a matmul ([`ops::matmul_split`]): what [`ops::matmul`] does
/// for the type's own kernel, for any kernel (the tests' deliberately
/// broken one).
#[doc(hidden)]
pub fn matmul_with(
    dev: &Device,
    kernel: &'static str,
    ty: GgmlType,
    (w, n, rows): (&crate::View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
) -> Result<()> {
    if verdict(dev, kernel) == Some(Verdict::Serving) {
        return launch(dev, kernel, ty, (w, n, rows), acts, ncols, out);
    }
    let splits = ops::splits_for(dev, rows, n);
    ops::matmul_split(dev, ty, (w, n, rows), acts, ncols, out, splits)
}

/// One `mma.sync.m16n8k32.s8` on the device through `mma_probe_s8`:
/// D = A B + C for A 16 x 32 row-major, B given as its 8 columns of 32
/// (`b[32 n + k]` = B[k][n]), C and the returned D 16 x 8 row-major.
pub fn mma_on_device(dev: &Device, a: &[i8], b: &[i8], c: &[i32]) -> Result<Vec<i32>> {
    if a.len() != 16 * 32 || b.len() != 8 * 32 || c.len() != 16 * 8 {
        return Err(shape_err(
            "mma probe",
            a.len(),
            "A 16 x 32, B 32 x 8, C 16 x 8",
        ));
    }
    let (ab, bb, cb) = (dev.upload(a)?, dev.upload(b)?, dev.upload(c)?);
    let db: crate::Buffer<i32> = dev.alloc(16 * 8)?;
    let p = Params::default()
        .ptr(dev.check_view(&dev.view(&ab, 0, a.len())?)?)
        .ptr(dev.check_view(&dev.view(&bb, 0, b.len())?)?)
        .ptr(dev.check_view(&dev.view(&cb, 0, c.len())?)?)
        .ptr(dev.check_view(&dev.view(&db, 0, 16 * 8)?)?)
        .done();
    // SAFETY: one warp reads 16 x 32 + 8 x 32 bytes and 16 x 8 ints, and
    // writes 16 x 8 ints, the sizes of the four buffers.
    unsafe { dev.launch("mma_probe_s8", (1, 1, 1), (32, 1, 1), p)? };
    dev.read(&db)
}

/// Runs one MMA ([`mma_on_device`]) on fixed pseudo-random matrices (both
/// signs, -128 included) against a plain integer product. Ok(None): it
/// agrees; Ok(Some(detail)): it does not.
pub fn probe(dev: &Device) -> Result<Option<String>> {
    let mut rng = Rng(0x005e_ed0f_11a7);
    let a: Vec<i8> = (0..16 * 32).map(|_| rng.next() as i8).collect();
    let b: Vec<i8> = (0..8 * 32).map(|_| rng.next() as i8).collect();
    let c: Vec<i32> = (0..16 * 8)
        .map(|_| (rng.next() >> 40) as i32 - (1 << 23))
        .collect();
    let d = mma_on_device(dev, &a, &b, &c)?;
    for r in 0..16 {
        for col in 0..8 {
            let want = (0..32).fold(c[r * 8 + col], |acc, k| {
                acc.wrapping_add(i32::from(a[r * 32 + k]) * i32::from(b[col * 32 + k]))
            });
            if d[r * 8 + col] != want {
                return Ok(Some(format!(
                    "mma_probe_s8: D[{r}][{col}] = {} where the integer product gives {want}",
                    d[r * 8 + col]
                )));
            }
        }
    }
    Ok(None)
}

/// Whether an error means "this kernel is not on this card" (no `mma`
/// module below sm_80) rather than a failure.
fn missing(e: &CudaError) -> bool {
    match e {
        CudaError::MissingModule { .. } => true,
        CudaError::Emu(m) => m.contains("no kernel named"),
        _ => false,
    }
}

/// (row length, weight rows, activation rows) of the self-test's matrices:
/// two row tiles (64) and two column tiles (32), the second of each partial.
const SHAPES: [(usize, usize, usize); 2] = [(256, 70, 40), (512, 70, 9)];

/// The self-test of `ty`'s tensor-core kernel on `dev` (see the module
/// docs): records and returns the verdict, and prints a warning naming the
/// kernel when it is switched off. `None` for a type without one. An error
/// only when the device fails outright (the dp4a path's own checks, a
/// failing copy).
pub fn check(dev: &Device, ty: GgmlType) -> Result<Option<Verdict>> {
    let Some(kernel) = kernel_of(ty) else {
        return Ok(None);
    };
    check_kernel(dev, ty, kernel).map(Some)
}

/// [`check`] of any kernel computing `ty`'s matmul (the tests' deliberately
/// broken one too).
#[doc(hidden)]
pub fn check_kernel(dev: &Device, ty: GgmlType, kernel: &'static str) -> Result<Verdict> {
    let v = match compare(dev, ty, kernel) {
        Ok(None) => Verdict::Serving,
        Ok(Some(detail)) => Verdict::SwitchedOff(detail),
        Err(e) if missing(&e) => Verdict::Unavailable,
        Err(e @ CudaError::Emu(_)) => Verdict::SwitchedOff(e.to_string()),
        Err(e) => return Err(e),
    };
    if let Verdict::SwitchedOff(detail) = &v {
        eprintln!(
            "warning: {kernel} disagrees with the dp4a matmul on {}: {detail}; \
             switched off, {ty:?} prefill and batches run on the dp4a path",
            dev.name()
        );
    }
    record(dev, kernel, v.clone());
    Ok(v)
}

/// Ok(None) when `kernel` agrees with the dp4a matmul and the host
/// reference on every shape; Ok(Some(where)) when it does not.
fn compare(dev: &Device, ty: GgmlType, kernel: &'static str) -> Result<Option<String>> {
    if let Some(bad) = probe(dev)? {
        return Ok(Some(bad));
    }
    let stem = ops::matvec_stem(ty).ok_or(CudaError::Unsupported { ty })?;
    for (n, rows, cols) in SHAPES {
        let mut rng = Rng(0x7e45_0c0e ^ ty as u64 ^ n as u64);
        let (wq, wd) = selftest::weights(&mut rng, ty, rows, n, stem)?;
        let wb = ops::upload_weights(dev, ty, n, &wq)?;
        let x: Vec<f32> = (0..cols * n).map(|_| rng.f32(2.0)).collect();
        let (q, d, s) = selftest::q8a(&x);
        let (qb, db, sb) = (dev.upload(&q)?, dev.upload(&d)?, dev.upload(&s)?);
        let acts = QActs {
            q: &dev.view(&qb, 0, q.len())?,
            d: &dev.view(&db, 0, d.len())?,
            s: &dev.view(&sb, 0, s.len())?,
        };
        let wv = dev.view(&wb, 0, wb.len())?;
        let run = |mma: bool| -> Result<Vec<f32>> {
            let out: crate::Buffer<f32> = dev.alloc(cols * rows)?;
            let o = dev.view(&out, 0, cols * rows)?;
            if mma {
                launch(dev, kernel, ty, (&wv, n, rows), &acts, cols, &MvOut::to(&o))?;
            } else {
                ops::matmul_split(dev, ty, (&wv, n, rows), &acts, cols, &MvOut::to(&o), 1)?;
            }
            dev.read(&out)
        };
        let (tc, dp) = (run(true)?, run(false)?);
        for c in 0..cols {
            for r in 0..rows {
                let (dot, mag) = selftest::host_dot(&wd, (&q, &d), n, r, c);
                let (g, h) = (f64::from(tc[c * rows + r]), f64::from(dp[c * rows + r]));
                // Each within fp32 rounding of the exact sum, so within
                // twice that of each other (a NaN fails).
                let tol = 1e-5 * mag + 1e-30;
                if !((g - dot).abs() <= tol && (g - h).abs() <= 2.0 * tol) {
                    return Ok(Some(format!(
                        "n {n}, row {r}, column {c}: {g} where the dp4a matmul gives {h} \
                         and the host {dot}"
                    )));
                }
            }
        }
    }
    Ok(None)
}
