//! Typed kernel launches: shapes checked against the views, then the same
//! launch configuration for the emulator and the GPU.

use crate::device::{Buffer, Device, Params, View};
use crate::error::{CudaError, Result};
use quant::GgmlType;

fn i32_of(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::Shape {
        what,
        value: v,
        why: "exceeds i32",
    })
}

fn need(what: &'static str, v: &View, n: usize) -> Result<()> {
    if v.len < n {
        return Err(CudaError::Size {
            what,
            expected: n,
            got: v.len,
        });
    }
    Ok(())
}

fn mul(what: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(CudaError::Shape {
        what,
        value: a,
        why: "size overflows",
    })
}

fn blocks(n: usize, per: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(per)).map_err(|_| CudaError::Shape {
        what: "grid",
        value: n,
        why: "too many blocks",
    })
}

/// Row stride and length of a strided row set: `rows` rows of `n` values, `stride` apart.
fn span(rows: usize, n: usize, stride: usize) -> Result<usize> {
    if rows == 0 {
        return Ok(0);
    }
    Ok(mul("rows", rows - 1, stride)? + n)
}

/// A view a kernel reads or writes 16 bytes at a time (a GPU faults on a
/// misaligned vector access).
pub(crate) fn aligned16(dev: &Device, what: &'static str, v: &View) -> Result<()> {
    let a = dev.check_view(v)?;
    if a % 16 != 0 {
        return Err(CudaError::Shape {
            what,
            value: (a % 16) as usize,
            why: "must be 16-byte aligned",
        });
    }
    Ok(())
}

/// Types whose weight units matvec.cu's `load_unit` reads with 16-byte
/// loads (the K-quants and IQ4_XS, in their device layouts): their weight
/// buffers must be 16-byte aligned.
pub(crate) fn units_load_16(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS
    )
}

/// One block per row: `rows` as a grid dimension.
fn rows_u32(rows: usize) -> Result<u32> {
    u32::try_from(rows).map_err(|_| CudaError::Shape {
        what: "rows",
        value: rows,
        why: "too many",
    })
}

/// Threads per block of the norms for rows of `n` values: about four values
/// a thread (all of a thread's loads in flight at once), a multiple of 32
/// from 32 to 1024. norm.cu's `norm_threads` is the same function: a row's
/// sum order depends on `n` alone.
pub fn norm_threads(n: usize) -> u32 {
    (n.div_ceil(4 * 32) * 32).clamp(32, 1024) as u32
}

/// The parameters `rms_norm` and `rms_norm_q8a` share (x, w, y, n, strides,
/// eps), each view checked against the rows it covers.
#[allow(clippy::too_many_arguments)]
fn norm_params(
    dev: &Device,
    x: &View,
    w: Option<&View>,
    y: &View,
    rows: usize,
    n: usize,
    (stride_x, stride_y): (usize, usize),
    eps: f32,
) -> Result<Params> {
    need("rms_norm x", x, span(rows, n, stride_x)?)?;
    need("rms_norm y", y, span(rows, n, stride_y)?)?;
    let wa = match w {
        Some(w) => {
            need("rms_norm w", w, n)?;
            dev.check_view(w)?
        }
        None => 0,
    };
    Ok(Params::default()
        .ptr(dev.check_view(x)?)
        .ptr(wa)
        .ptr(dev.check_view(y)?)
        .i32(i32_of("n", n)?)
        .i32(i32_of("stride_x", stride_x)?)
        .i32(i32_of("stride_y", stride_y)?)
        .f32(eps))
}

/// RMS norm of `rows` rows of `n` values: y = x / sqrt(mean(x^2) + eps) * w
/// (no `w`: Falcon's weightless dt/B/C norm). `x` may be `y`'s memory.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    dev: &Device,
    x: &View,
    w: Option<&View>,
    y: &View,
    rows: usize,
    n: usize,
    stride_x: usize,
    stride_y: usize,
    eps: f32,
) -> Result<()> {
    if n == 0 || rows == 0 {
        return Err(CudaError::Shape {
            what: "rms_norm rows/n",
            value: 0,
            why: "must be positive",
        });
    }
    let p = norm_params(dev, x, w, y, rows, n, (stride_x, stride_y), eps)?.done();
    let grid = (rows_u32(rows)?, 1, 1);
    // SAFETY: every view was checked to cover what the kernel touches.
    unsafe { dev.launch("rms_norm", grid, (norm_threads(n), 1, 1), p) }
}

/// [`rms_norm`] whose output `y` (rows of `n`, stride `n`, not overlapping
/// `x`) is also quantized to Q8A into `out`, byte for byte what
/// [`quantize_q8a`] of `y` gives: one launch for the norm and the next
/// matmul's activation quantization.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_q8a(
    dev: &Device,
    x: &View,
    w: Option<&View>,
    y: &View,
    rows: usize,
    n: usize,
    stride_x: usize,
    eps: f32,
    out: &QActs,
) -> Result<()> {
    if n == 0 || !n.is_multiple_of(32) || rows == 0 {
        return Err(CudaError::Shape {
            what: "rms_norm_q8a n",
            value: n,
            why: "must be a positive multiple of 32",
        });
    }
    let nb = n / 32;
    need("quantize q", out.q, mul("q", rows, n)?)?;
    need("quantize d", out.d, mul("d", rows, nb)?)?;
    need("quantize s", out.s, mul("s", rows, nb)?)?;
    let p = norm_params(dev, x, w, y, rows, n, (stride_x, n), eps)?
        .ptr(dev.check_view(out.q)?)
        .ptr(dev.check_view(out.d)?)
        .ptr(dev.check_view(out.s)?)
        .done();
    let grid = (rows_u32(rows)?, 1, 1);
    // SAFETY: the views cover the rows, their norms and their Q8A blocks.
    unsafe { dev.launch("rms_norm_q8a", grid, (norm_threads(n), 1, 1), p) }
}

/// Weightless RMS norm, in place, of three segments of each of `rows`
/// rows (`stride` apart): segment k is `n[k]` values from `off[k]` (Falcon
/// Mamba's dt/B/C norm, one launch). With `q8a`, the normed first segment
/// (dt_in) is also quantized to Q8A (rows of `n[0]`), bit for bit what
/// [`quantize_q8a`] of it gives.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm3(
    dev: &Device,
    x: &View,
    rows: usize,
    stride: usize,
    off: [usize; 3],
    n: [usize; 3],
    eps: f32,
    q8a: Option<&QActs>,
) -> Result<()> {
    if rows == 0 || n.contains(&0) {
        return Err(CudaError::Shape {
            what: "rms_norm3 rows/n",
            value: 0,
            why: "must be positive",
        });
    }
    for k in 0..3 {
        if off[k] + n[k] > stride {
            return Err(CudaError::Shape {
                what: "rms_norm3 segment",
                value: off[k] + n[k],
                why: "past the row stride",
            });
        }
    }
    need("rms_norm3 x", x, span(rows, stride, stride)?)?;
    let mut p = Params::default()
        .ptr(dev.check_view(x)?)
        .i32(i32_of("stride", stride)?);
    for o in off {
        p = p.i32(i32_of("off", o)?);
    }
    for k in n {
        p = p.i32(i32_of("n", k)?);
    }
    let [q, qd, qs] = q8a_out(dev, q8a, rows, n[0])?;
    let p = p.f32(eps).ptr(q).ptr(qd).ptr(qs).done();
    let grid = (rows_u32(rows)?, 3, 1);
    let threads = norm_threads(n.into_iter().max().unwrap_or(1));
    // SAFETY: every segment lies within its row and the view covers the rows.
    unsafe { dev.launch("rms_norm3", grid, (threads, 1, 1), p) }
}

/// Activations quantized to Q8A (see README): views for q (i8), d (f32), s (i32).
pub struct QActs<'a> {
    pub q: &'a View,
    pub d: &'a View,
    pub s: &'a View,
}

/// The addresses of an optional Q8A output of `rows` rows of `n` values
/// (row stride `n`), checked; zeros for none.
fn q8a_out(dev: &Device, q8a: Option<&QActs>, rows: usize, n: usize) -> Result<[u64; 3]> {
    let Some(o) = q8a else {
        return Ok([0; 3]);
    };
    if n == 0 || !n.is_multiple_of(32) {
        return Err(CudaError::Shape {
            what: "Q8A output width",
            value: n,
            why: "must be a positive multiple of 32",
        });
    }
    need("Q8A q", o.q, mul("q", rows, n)?)?;
    need("Q8A d", o.d, mul("d", rows, n / 32)?)?;
    need("Q8A s", o.s, mul("s", rows, n / 32)?)?;
    Ok([
        dev.check_view(o.q)?,
        dev.check_view(o.d)?,
        dev.check_view(o.s)?,
    ])
}

/// Quantizes `rows` rows of `n` values (row stride `stride`) to Q8A.
pub fn quantize_q8a(
    dev: &Device,
    x: &View,
    rows: usize,
    n: usize,
    stride: usize,
    out: &QActs,
) -> Result<()> {
    if n == 0 || !n.is_multiple_of(32) || rows == 0 {
        return Err(CudaError::Shape {
            what: "quantize n",
            value: n,
            why: "must be a positive multiple of 32",
        });
    }
    let nb = n / 32;
    need("quantize x", x, span(rows, n, stride)?)?;
    need("quantize q", out.q, mul("q", rows, n)?)?;
    need("quantize d", out.d, mul("d", rows, nb)?)?;
    need("quantize s", out.s, mul("s", rows, nb)?)?;
    let p = Params::default()
        .ptr(dev.check_view(x)?)
        .ptr(dev.check_view(out.q)?)
        .ptr(dev.check_view(out.d)?)
        .ptr(dev.check_view(out.s)?)
        .i32(i32_of("n", n)?)
        .i32(i32_of("stride", stride)?)
        .done();
    let grid = (blocks(nb, 8)?, rows_u32(rows)?, 1);
    // SAFETY: the views cover rows x n inputs and the Q8A outputs.
    unsafe { dev.launch("quantize_q8a", grid, (256, 1, 1), p) }
}

/// The kernel-name stem of a quantized weight type.
pub fn matvec_stem(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        GgmlType::Q2_K => "q2_k",
        GgmlType::Q3_K => "q3_k",
        GgmlType::IQ2_XXS => "iq2_xxs",
        GgmlType::IQ2_XS => "iq2_xs",
        GgmlType::IQ2_S => "iq2_s",
        GgmlType::TQ2_0 => "tq2_0",
        GgmlType::TQ1_0 => "tq1_0",
        GgmlType::IQ1_S => "iq1_s",
        GgmlType::IQ1_M => "iq1_m",
        GgmlType::IQ3_XXS => "iq3_xxs",
        GgmlType::IQ3_S => "iq3_s",
        GgmlType::IQ4_NL => "iq4_nl",
        GgmlType::IQ4_XS => "iq4_xs",
        _ => return None,
    })
}

/// Kernel names as statics (a decode step queues hundreds of launches; no
/// name is formatted or allocated for them): for each stem of
/// [`matvec_stem`] and [`matvec_float_stem`], `matvec_<stem>_1` ..
/// `matvec_<stem>_8`, then `matmul_<stem>` (quantized stems only).
macro_rules! kernel_names {
    ($($stem:literal),*) => {
        [$((
            $stem,
            [
                concat!("matvec_", $stem, "_1"),
                concat!("matvec_", $stem, "_2"),
                concat!("matvec_", $stem, "_3"),
                concat!("matvec_", $stem, "_4"),
                concat!("matvec_", $stem, "_5"),
                concat!("matvec_", $stem, "_6"),
                concat!("matvec_", $stem, "_7"),
                concat!("matvec_", $stem, "_8"),
            ],
            concat!("matmul_", $stem),
            [
                concat!("matvec_", $stem, "_n3_1"),
                concat!("matvec_", $stem, "_n3_2"),
            ],
        )),*]
    };
}

type Names = (
    &'static str,
    [&'static str; 8],
    &'static str,
    [&'static str; 2],
);
static KERNEL_NAMES: [Names; 24] = kernel_names!(
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq1_s",
    "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "tq1_0", "tq2_0", "iq3_xxs", "iq3_s", "iq4_nl",
    "iq4_xs", "f32", "f16", "bf16"
);

fn names_of(stem: &str) -> Result<&'static Names> {
    KERNEL_NAMES
        .iter()
        .find(|n| n.0 == stem)
        .ok_or_else(|| CudaError::MissingModule {
            kernel: format!("matvec_{stem}"),
        })
}

/// `matvec_<stem>_<ncols>` (ncols 1..=8).
fn matvec_name(stem: &str, ncols: usize) -> Result<&'static str> {
    let names = names_of(stem)?;
    ncols
        .checked_sub(1)
        .and_then(|i| names.1.get(i))
        .copied()
        .ok_or(CudaError::Shape {
            what: "ncols",
            value: ncols,
            why: "1 to 8 activation rows",
        })
}

/// Bytes of a Q6_K superblock in device memory (matvec.cu's Q6K_DEV_BYTES):
/// the GGUF's 210, zero-padded to 224 so that every field of a block lies at
/// a 16-byte aligned offset and the matvec reads it with 16-byte loads.
pub const Q6K_DEV_BYTES: usize = 224;

/// Bytes of an IQ4_XS superblock in device memory (matvec.cu's
/// IQ4XS_DEV_BYTES): the 128 index bytes first, then the GGUF's 8 header
/// bytes (d, scales_h, scales_l) and 8 zero bytes, so that each unit's
/// indices and the header are single 16-byte loads.
pub const IQ4XS_DEV_BYTES: usize = 144;

/// Bytes of Q2_K and Q3_K superblocks in device memory (matvec.cu's
/// Q2K_DEV_BYTES, Q3K_DEV_BYTES): the GGUF's 84 and 110 zero-padded to 96
/// and 112, so that every field starts 16-byte aligned.
pub const Q2K_DEV_BYTES: usize = 96;
pub const Q3K_DEV_BYTES: usize = 112;

/// (file bytes, device bytes) of the superblock types padded at upload.
fn padded_block(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q2_K => Some((84, Q2K_DEV_BYTES)),
        GgmlType::Q3_K => Some((110, Q3K_DEV_BYTES)),
        GgmlType::Q6_K => Some((210, Q6K_DEV_BYTES)),
        _ => None,
    }
}

/// Bytes of one row of `n` values of `ty` as the matvec and matmul kernels
/// read it ([`upload_weights`]): the GGUF's layout, except the padded
/// Q2_K, Q3_K and Q6_K and the reordered IQ4_XS superblocks.
pub fn device_row_bytes(ty: GgmlType, n: usize) -> Option<usize> {
    let dev_block = match (ty, padded_block(ty)) {
        (_, Some((_, dev))) => dev,
        (GgmlType::IQ4_XS, _) => IQ4XS_DEV_BYTES,
        _ => return ty.row_bytes(n),
    };
    n.is_multiple_of(256).then(|| n / 256 * dev_block)
}

/// A weight matrix (rows of `n` values of `ty`, as stored in the GGUF) in
/// the layout the matvec and matmul kernels read: the file's bytes, or for
/// Q2_K, Q3_K and Q6_K each superblock followed by zero bytes up to 96, 112
/// and 224 (a multiple of 16), for IQ4_XS each
/// 136-byte superblock as its 128 index bytes, its 8 header bytes and 8
/// zero bytes. The copy on the device is ours to lay out; the file is
/// unchanged.
pub fn upload_weights(dev: &Device, ty: GgmlType, n: usize, bytes: &[u8]) -> Result<Buffer<u8>> {
    let rb = ty.row_bytes(n).ok_or(CudaError::Unsupported { ty })?;
    if rb == 0 || !bytes.len().is_multiple_of(rb) {
        return Err(CudaError::Size {
            what: "weight bytes (whole rows)",
            expected: bytes.len().div_ceil(rb.max(1)) * rb,
            got: bytes.len(),
        });
    }
    if let Some((file, dev_bytes)) = padded_block(ty) {
        let blocks = bytes.len() / file;
        let mut padded = vec![0u8; mul("superblocks", blocks, dev_bytes)?];
        for (src, dst) in bytes
            .chunks_exact(file)
            .zip(padded.chunks_exact_mut(dev_bytes))
        {
            dst[..file].copy_from_slice(src);
        }
        return dev.upload(&padded);
    }
    match ty {
        GgmlType::IQ4_XS => {
            let blocks = bytes.len() / 136;
            let mut laid = vec![0u8; mul("IQ4_XS blocks", blocks, IQ4XS_DEV_BYTES)?];
            for (src, dst) in bytes
                .chunks_exact(136)
                .zip(laid.chunks_exact_mut(IQ4XS_DEV_BYTES))
            {
                dst[..128].copy_from_slice(&src[8..]);
                dst[128..136].copy_from_slice(&src[..8]);
            }
            dev.upload(&laid)
        }
        _ => dev.upload(bytes),
    }
}

/// Weight rows (one per warp) per block of `matvec_<t>_<c>` and of
/// `matmul_<t>`, whose 8 warps share each staged activation tile: the
/// kernels' MATVEC_WARPS and MM_WARPS.
const MATVEC_WARPS: usize = 4;
const MATMUL_WARPS: usize = 8;

/// Where a matvec writes: `out[c][r]` = the dot, or with `add`,
/// `add[c][r]` + the dot (`add` may be `out` itself: X += W y).
pub struct MvOut<'a> {
    pub out: &'a View,
    pub add: Option<&'a View>,
}

impl<'a> MvOut<'a> {
    /// Plain output.
    pub fn to(out: &'a View) -> MvOut<'a> {
        MvOut { out, add: None }
    }

    fn check(&self, dev: &Device, ncols: usize, rows: usize) -> Result<(u64, u64)> {
        let n = mul("out", ncols, rows)?;
        need("matvec out", self.out, n)?;
        let add = match self.add {
            Some(a) => {
                need("matvec add", a, n)?;
                dev.check_view(a)?
            }
            None => 0,
        };
        Ok((dev.check_view(self.out)?, add))
    }
}

/// The slices a row of `n` values is summed in for a matrix of `rows` rows
/// on `dev` (split-K, see matvec.cu): 1, or 2 or 4 when the rows alone
/// would give the card fewer than 8 warps per SM (x_proj's 288 rows; not
/// the projections of thousands) and the row's units divide into slices of
/// whole 32-unit tiles. A function of the shape and the card only, so the
/// matvec and the matmul of one matrix sum in the same order.
pub fn splits_for(dev: &Device, rows: usize, n: usize) -> usize {
    let (nb, want) = (n / 32, 8 * dev.sm_count());
    let mut s = 1;
    while s < 4 && rows.saturating_mul(s) < want && nb % (32 * 2 * s) == 0 {
        s *= 2;
    }
    s
}

/// out[c][r] = dot(weight row r, activation row c) for c < ncols (1..=8)
/// (plus `add[c][r]`, see [`MvOut`]): `w` holds `rows` rows of `n` values
/// of `ty` in the device layout ([`upload_weights`]: the GGUF's, Q6_K padded,
/// IQ4_XS reordered).
/// Rows are summed in [`splits_for`] slices.
#[allow(clippy::too_many_arguments)]
pub fn matvec(
    dev: &Device,
    ty: GgmlType,
    w: &View,
    n: usize,
    rows: usize,
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
) -> Result<()> {
    let splits = splits_for(dev, rows, n);
    matvec_split(dev, ty, (w, n, rows), acts, ncols, out, splits)
}

/// [`matvec`] with each row summed in `splits` slices (1, 2 or 4; n / 32
/// a multiple of 32 * splits), each slice a warp of its own.
#[allow(clippy::too_many_arguments)]
pub fn matvec_split(
    dev: &Device,
    ty: GgmlType,
    (w, n, rows): (&View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
    splits: usize,
) -> Result<()> {
    let stem = matvec_stem(ty).ok_or(CudaError::Unsupported { ty })?;
    // Refuses ncols outside 1..=8.
    let name = matvec_name(stem, ncols)?;
    launch_quantized(
        dev,
        name,
        ty,
        (w, n, rows),
        acts,
        ncols,
        out,
        (None, splits, 0),
    )
}

/// The x-projection's norm tail (matvec.cu, `MvTail`): Falcon's weightless
/// dt/B/C norm of a [`matvec_norm3`]'s output rows, run by the launch's
/// last block to finish, bit for bit the [`rms_norm3`] launch it replaces
/// (one launch per layer fewer). Its fields live in device memory, written
/// once here: the matvec's parameters grow by one pointer, and its block
/// counter (the one field a launch changes: the last block puts it back to
/// 0) sits beside them.
pub struct Norm3Tail {
    buf: Buffer<u8>,
    /// Output rows of the matrix it follows: dt (`rows - 2 nbc`), B, C.
    rows: usize,
    /// Activation rows its Q8A output (if any) was checked for.
    max_cols: usize,
}

/// A [`Norm3Tail`] for a matrix of `rows` output rows laid out as dt
/// (`rows - 2 nbc`), B (`nbc`), C (`nbc`), each normed with `eps`; with
/// `q8a`, the normed dt of up to `max_cols` activation rows also in Q8A
/// (rows of `rows - 2 nbc`, a multiple of 32), as [`rms_norm3`]'s.
pub fn norm3_tail(
    dev: &Device,
    rows: usize,
    nbc: usize,
    eps: f32,
    q8a: Option<&QActs>,
    max_cols: usize,
) -> Result<Norm3Tail> {
    let n0 = rows.saturating_sub(mul("B and C", nbc, 2)?);
    if nbc == 0 || n0 == 0 || max_cols == 0 {
        return Err(CudaError::Shape {
            what: "norm3 tail dt/B/C",
            value: rows,
            why: "each segment and the rows must be positive",
        });
    }
    // The warp sums it keeps per row (matvec.cu's TAIL_PARTS).
    let parts = (norm_threads(n0) + 2 * norm_threads(nbc)) as usize / 32;
    if parts > 16 {
        return Err(CudaError::Shape {
            what: "norm3 tail warp sums per row",
            value: parts,
            why: "more than 16",
        });
    }
    let [q, qd, qs] = q8a_out(dev, q8a, max_cols, n0)?;
    let bytes = Params::default()
        .i32(0)
        .i32(i32_of("nbc", nbc)?)
        .f32(eps)
        .i32(0)
        .ptr(q)
        .ptr(qd)
        .ptr(qs)
        .done()
        .into_bytes();
    Ok(Norm3Tail {
        buf: dev.upload(&bytes)?,
        rows,
        max_cols,
    })
}

/// [`matvec`] whose output rows are then normed in place by `tail` (see
/// [`Norm3Tail`]) in the same launch: bit for bit [`matvec`] then
/// [`rms_norm3`] over the segments dt, B, C (with its Q8A of dt when the
/// tail has one). One or two activation rows (`ncols`): the tail's work is
/// one block's, and past two rows [`rms_norm3`]'s own launch is faster.
#[allow(clippy::too_many_arguments)]
pub fn matvec_norm3(
    dev: &Device,
    ty: GgmlType,
    (w, n, rows): (&View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
    tail: &Norm3Tail,
) -> Result<()> {
    if rows != tail.rows || ncols > tail.max_cols.min(2) {
        return Err(CudaError::Shape {
            what: "norm3 tail rows / activation rows",
            value: if rows != tail.rows { rows } else { ncols },
            why: "not what the tail was made for",
        });
    }
    let stem = matvec_stem(ty).ok_or(CudaError::Unsupported { ty })?;
    let name = ncols
        .checked_sub(1)
        .and_then(|i| names_of(stem).ok()?.3.get(i).copied())
        .ok_or(CudaError::Shape {
            what: "ncols",
            value: ncols,
            why: "1 or 2 activation rows with the norm tail",
        })?;
    let t = dev.check_view(&dev.view(&tail.buf, 0, tail.buf.len())?)?;
    let splits = splits_for(dev, rows, n);
    launch_quantized(
        dev,
        name,
        ty,
        (w, n, rows),
        acts,
        ncols,
        out,
        (None, splits, t),
    )
}

/// [`matvec`] for any number of activation rows (a prefill chunk) in one
/// launch: a block of 8 warps takes 8 weight rows against all `ncols` rows,
/// 16 at a time, each tile of those activations staged once in shared
/// memory for the 8 warps; the weights are read from device memory once per
/// chunk. Each output equals [`matvec`]'s bit for bit (the same
/// [`splits_for`] slices).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dev: &Device,
    ty: GgmlType,
    w: &View,
    n: usize,
    rows: usize,
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
) -> Result<()> {
    // The tensor-core kernel where this process's self-test passed it
    // (mma.rs) and the rows fill its tiles; the dp4a tiles otherwise.
    let mma = crate::mma::serving(dev, ty).filter(|_| ncols >= crate::mma::MIN_COLS);
    if let Some(kernel) = mma {
        return crate::mma::launch(dev, kernel, ty, (w, n, rows), acts, ncols, out);
    }
    let splits = splits_for(dev, rows, n);
    matmul_split(dev, ty, (w, n, rows), acts, ncols, out, splits)
}

/// [`matmul`] with each row summed in `splits` slices, in turn (as
/// [`matvec_split`] with the same `splits`, bit for bit).
#[allow(clippy::too_many_arguments)]
pub fn matmul_split(
    dev: &Device,
    ty: GgmlType,
    (w, n, rows): (&View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
    splits: usize,
) -> Result<()> {
    let stem = matvec_stem(ty).ok_or(CudaError::Unsupported { ty })?;
    if ncols == 0 {
        return Err(CudaError::Shape {
            what: "ncols",
            value: 0,
            why: "must be positive",
        });
    }
    let name = names_of(stem)?.2;
    let nc = i32_of("ncols", ncols)?;
    launch_quantized(
        dev,
        name,
        ty,
        (w, n, rows),
        acts,
        ncols,
        out,
        (Some(nc), splits, 0),
    )
}

/// The checks and the launch shared by [`matvec`] and [`matmul`]; `ncols`
/// goes into the parameters for the matmul (whose struct has it after the
/// matvec's fields); `tail`: a [`Norm3Tail`]'s device address for a
/// `matvec_<t>_n3_<c>` kernel, or 0.
#[allow(clippy::too_many_arguments)]
fn launch_quantized(
    dev: &Device,
    name: &'static str,
    ty: GgmlType,
    (w, n, rows): (&View, usize, usize),
    acts: &QActs,
    ncols: usize,
    out: &MvOut,
    (ncols_param, splits, tail): (Option<i32>, usize, u64),
) -> Result<()> {
    if rows == 0 || n == 0 || n % ty.block_size() != 0 {
        return Err(CudaError::Shape {
            what: "matvec n",
            value: n,
            why: "whole blocks, positive",
        });
    }
    if !matches!(splits, 1 | 2 | 4) || (splits > 1 && (n / 32) % (32 * splits) != 0) {
        return Err(CudaError::Shape {
            what: "matvec splits",
            value: splits,
            why: "1, 2 or 4, each slice whole 32-unit tiles",
        });
    }
    let rb = device_row_bytes(ty, n).ok_or(CudaError::Unsupported { ty })?;
    let nb = n / 32;
    // A Q6_K matrix uploaded as the file has it (not by upload_weights) is
    // too short for its rows here.
    need(
        "matvec weights (device layout)",
        w,
        mul("weights", rows, rb)?,
    )?;
    need("matvec q", acts.q, mul("q", ncols, n)?)?;
    need("matvec d", acts.d, mul("d", ncols, nb)?)?;
    need("matvec s", acts.s, mul("s", ncols, nb)?)?;
    let (out, add) = out.check(dev, ncols, rows)?;
    // 16-byte loads (a GPU faults on a misaligned one): the K-quant weight
    // blocks, and the matvec's activation blocks.
    if units_load_16(ty) {
        aligned16(dev, "matvec weights address mod 16", w)?;
    }
    if ncols_param.is_none() {
        aligned16(dev, "matvec q address mod 16", acts.q)?;
    }
    let mut p = Params::default()
        .ptr(dev.check_view(w)?)
        .ptr(dev.check_view(acts.q)?)
        .ptr(dev.check_view(acts.d)?)
        .ptr(dev.check_view(acts.s)?)
        .ptr(out)
        .i32(i32_of("n", n)?)
        .i32(i32_of("rows", rows)?)
        .i32(i32_of("row bytes", rb)?)
        .ptr(add)
        .i32(splits as i32)
        // MatvecArgs ends padded to 8; the matmul's ncols or the n3
        // matvec's tail (MatvecTArgs) follows it.
        .done();
    // Threads per block, and weight rows per block.
    let (warps, per_block) = match ncols_param {
        Some(nc) => {
            p = p.i32(nc);
            (MATMUL_WARPS, MATMUL_WARPS)
        }
        None => {
            if tail != 0 {
                p = p.ptr(tail);
            }
            // Short rows (n / 32 units dividing 32, fewer than 32) against
            // one or two activation rows: 32 / units rows a warp (matvec.cu,
            // matvec_short_rows).
            if ncols <= 2 && nb < 32 && 32 % nb == 0 {
                (MATVEC_WARPS, MATVEC_WARPS * 32 / nb)
            } else {
                (MATVEC_WARPS, MATVEC_WARPS / splits)
            }
        }
    };
    let p = p.done();
    // SAFETY: weights, activations and outputs were checked against the shapes.
    unsafe {
        dev.launch(
            name,
            (blocks(rows, per_block)?, 1, 1),
            (32 * warps as u32, 1, 1),
            p,
        )
    }
}

/// out = a + b over `n` values (out may alias a or b).
pub fn add(dev: &Device, a: &View, b: &View, out: &View, n: usize) -> Result<()> {
    need("add a", a, n)?;
    need("add b", b, n)?;
    need("add out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    let p = Params::default()
        .ptr(dev.check_view(a)?)
        .ptr(dev.check_view(b)?)
        .ptr(dev.check_view(out)?)
        .i32(i32_of("n", n)?)
        .done();
    // SAFETY: all three views hold n values.
    unsafe { dev.launch("add_f32", (blocks(n, 256)?, 1, 1), (256, 1, 1), p) }
}

/// dst row r = src row r (`n` values) for `rows` rows, each with its own
/// stride; the two row sets must not overlap.
pub fn copy_rows(
    dev: &Device,
    src: &View,
    src_stride: usize,
    dst: &View,
    dst_stride: usize,
    rows: usize,
    n: usize,
) -> Result<()> {
    if n == 0 || rows == 0 {
        return Ok(());
    }
    need("copy src", src, span(rows, n, src_stride)?)?;
    need("copy dst", dst, span(rows, n, dst_stride)?)?;
    let p = Params::default()
        .ptr(dev.check_view(src)?)
        .ptr(dev.check_view(dst)?)
        .i32(i32_of("n", n)?)
        .i32(i32_of("src_stride", src_stride)?)
        .i32(i32_of("dst_stride", dst_stride)?)
        .done();
    let grid = (blocks(n, 256)?, rows_u32(rows)?, 1);
    // SAFETY: both views cover their rows.
    unsafe { dev.launch("copy_rows_f32", grid, (256, 1, 1), p) }
}

/// elementwise.cu's ARGMAX_THREADS.
const ARGMAX_THREADS: u32 = 1024;

/// Greedy argmax of `rows` rows of `n` logits into `out` (2 ints per row:
/// index, first NaN index or -1). See [`argmax_result`].
pub fn argmax(dev: &Device, x: &View, rows: usize, n: usize, out: &View) -> Result<()> {
    if n == 0 || rows == 0 {
        return Err(CudaError::Shape {
            what: "argmax n",
            value: n,
            why: "must be positive",
        });
    }
    need("argmax x", x, mul("x", rows, n)?)?;
    need("argmax out", out, mul("out", rows, 2)?)?;
    let p = Params::default()
        .ptr(dev.check_view(x)?)
        .ptr(dev.check_view(out)?)
        .i32(i32_of("n", n)?)
        .done();
    let grid = (rows_u32(rows)?, 1, 1);
    // SAFETY: the views hold the rows and their results.
    unsafe { dev.launch("argmax_f32", grid, (ARGMAX_THREADS, 1, 1), p) }
}

/// The `k` largest of each of `rows` rows of `n` logits: `val` and `idx`
/// get `[rows][k]` values and their indices, in no order within a row (ties
/// at the k-th value: the lowest indices), `nan` `[rows]` the first NaN's
/// index or -1. `1 <= k <= n < 2^24`.
#[allow(clippy::too_many_arguments)]
pub fn top_k(
    dev: &Device,
    x: &View,
    rows: usize,
    n: usize,
    k: usize,
    val: &View,
    idx: &View,
    nan: &View,
) -> Result<()> {
    if n == 0 || n >= 1 << 24 {
        return Err(CudaError::Shape {
            what: "top_k n",
            value: n,
            why: "must be 1..2^24",
        });
    }
    if k == 0 || k > n {
        return Err(CudaError::Shape {
            what: "top_k k",
            value: k,
            why: "must be 1..=n",
        });
    }
    need("top_k x", x, mul("x", rows, n)?)?;
    need("top_k val", val, mul("val", rows, k)?)?;
    need("top_k idx", idx, mul("idx", rows, k)?)?;
    need("top_k nan", nan, rows)?;
    let p = Params::default()
        .ptr(dev.check_view(x)?)
        .ptr(dev.check_view(val)?)
        .ptr(dev.check_view(idx)?)
        .ptr(dev.check_view(nan)?)
        .i32(i32_of("n", n)?)
        .i32(i32_of("k", k)?)
        .done();
    let grid = (rows_u32(rows)?, 1, 1);
    // SAFETY: the views hold the rows, their k results and a NaN slot each.
    unsafe { dev.launch("topk_f32", grid, (256, 1, 1), p) }
}

/// Token ids from [`argmax`]'s output, an error naming the first NaN.
pub fn argmax_result(out: &[i32]) -> Result<Vec<usize>> {
    out.chunks_exact(2)
        .enumerate()
        .map(|(row, p)| {
            if p[1] >= 0 {
                Err(CudaError::NanLogits {
                    row,
                    index: p[1] as usize,
                })
            } else {
                Ok(p[0].max(0) as usize)
            }
        })
        .collect()
}

/// Shapes of the mixer kernels: `e` channels, `t` tokens per sequence, `seqs` sequences.
#[derive(Clone, Copy, Debug)]
pub struct MixerShape {
    pub e: usize,
    pub t: usize,
    pub seqs: usize,
}

impl MixerShape {
    fn rows(&self) -> Result<usize> {
        mul("tokens", self.t, self.seqs)
    }
    fn grid(&self) -> Result<(u32, u32, u32)> {
        let s = u32::try_from(self.seqs).map_err(|_| CudaError::Shape {
            what: "seqs",
            value: self.seqs,
            why: "too many",
        })?;
        Ok((blocks(self.e, 128)?, s, 1))
    }
    fn check(&self) -> Result<()> {
        if self.e == 0 || self.t == 0 || self.seqs == 0 {
            return Err(CudaError::Shape {
                what: "mixer shape",
                value: 0,
                why: "must be positive",
            });
        }
        Ok(())
    }
}

/// Which entry of a state pool each sequence of a mixer launch uses.
pub enum StateSlots<'a> {
    /// Sequence `j` uses entry `j` of the state view.
    Consecutive,
    /// Sequence `j` uses entry `ids[j]`. The ids are checked against the
    /// pool's size and written into `buf` (the kernel's device copy, at least
    /// `ids.len()` long) before the launch.
    Indexed {
        ids: &'a [i32],
        buf: &'a mut Buffer<i32>,
    },
    /// As `Indexed`, but `buf` already holds `ids` (written by an earlier
    /// launch's `Indexed`): checked against the pool, not written again, so
    /// the layers of one batched step upload their slot ids once.
    Resident {
        ids: &'a [i32],
        buf: &'a Buffer<i32>,
    },
}

/// Checks the state view and the slot ids of a mixer launch whose state
/// entries are `per` values each, and gives the device address of the ids
/// (0 for consecutive entries).
fn state_slots(
    dev: &Device,
    sh: &MixerShape,
    what: &'static str,
    state: &View,
    per: usize,
    slots: StateSlots,
) -> Result<u64> {
    let entry = mul(what, sh.e, per)?;
    let check_ids = |ids: &[i32]| {
        if ids.len() != sh.seqs {
            return Err(CudaError::Size {
                what: "state slot ids",
                expected: sh.seqs,
                got: ids.len(),
            });
        }
        let pool = state.len / entry;
        if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= pool) {
            return Err(CudaError::Shape {
                what: "state slot",
                value: bad.max(0) as usize,
                why: "outside the state pool",
            });
        }
        // Two sequences of one launch on one slot would race on its conv and
        // scan state from different blocks.
        let mut seen = ids.to_vec();
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(CudaError::Shape {
                what: "state slot",
                value: w[0] as usize,
                why: "given to two sequences of one launch",
            });
        }
        Ok(())
    };
    match slots {
        StateSlots::Consecutive => {
            need(what, state, mul(what, sh.seqs, entry)?)?;
            Ok(0)
        }
        StateSlots::Indexed { ids, buf } => {
            check_ids(ids)?;
            dev.write_at(buf, 0, ids)?;
            dev.check_view(&dev.view(buf, 0, ids.len())?)
        }
        StateSlots::Resident { ids, buf } => {
            check_ids(ids)?;
            dev.check_view(&dev.view(buf, 0, ids.len())?)
        }
    }
}

/// Causal depthwise conv (kernel 4) + SiLU over `t` tokens per sequence,
/// updating each sequence's entry of `state` ([slot][e][3]). With `q8a`
/// (e % 32 == 0), the output rows are also quantized to Q8A (row stride e),
/// bit for bit what [`quantize_q8a`] of `y` gives.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_silu(
    dev: &Device,
    sh: MixerShape,
    x: &View,
    x_stride: usize,
    w: &View,
    b: &View,
    state: &View,
    slots: StateSlots,
    (y, y_stride): (&View, usize),
    q8a: Option<&QActs>,
) -> Result<()> {
    sh.check()?;
    let rows = sh.rows()?;
    need("conv x", x, span(rows, sh.e, x_stride)?)?;
    need("conv y", y, span(rows, sh.e, y_stride)?)?;
    need("conv w", w, mul("w", sh.e, 4)?)?;
    need("conv b", b, sh.e)?;
    let slots = state_slots(dev, &sh, "conv state", state, 3, slots)?;
    let [q, qd, qs] = q8a_out(dev, q8a, rows, sh.e)?;
    let p = Params::default()
        .ptr(dev.check_view(x)?)
        .ptr(dev.check_view(w)?)
        .ptr(dev.check_view(b)?)
        .ptr(dev.check_view(state)?)
        .ptr(slots)
        .ptr(dev.check_view(y)?)
        .i32(i32_of("e", sh.e)?)
        .i32(i32_of("t", sh.t)?)
        .i32(i32_of("x_stride", x_stride)?)
        .i32(i32_of("y_stride", y_stride)?)
        .ptr(q)
        .ptr(qd)
        .ptr(qs)
        .done();
    // SAFETY: views checked against the shape.
    unsafe { dev.launch("conv1d_silu_k4", sh.grid()?, (128, 1, 1), p) }
}

/// Inputs of the selective scan (d_state 16), rows per token.
pub struct ScanInputs<'a> {
    /// conv output, stride e
    pub x: &'a View,
    /// dt_proj output before the bias, stride e
    pub dt: &'a View,
    /// gate, stride `z_stride`
    pub z: &'a View,
    pub z_stride: usize,
    /// x_proj output rows (stride `bc_stride`), B at `b_off`, C at `b_off + 16`
    pub bc: &'a View,
    pub bc_stride: usize,
    pub b_off: usize,
    /// [e][16], -exp(A_log)
    pub a: &'a View,
    pub d: &'a View,
    pub dt_bias: &'a View,
}

/// The selective scan with softplus, D and the SiLU(z) gate fused; `state`
/// is [slot][e][16], `y` rows of stride e. `q8a` as for [`conv1d_silu`].
pub fn selective_scan(
    dev: &Device,
    sh: MixerShape,
    i: &ScanInputs,
    state: &View,
    slots: StateSlots,
    y: &View,
    q8a: Option<&QActs>,
) -> Result<()> {
    sh.check()?;
    let rows = sh.rows()?;
    let re = mul("rows", rows, sh.e)?;
    need("scan x", i.x, re)?;
    need("scan dt", i.dt, re)?;
    need("scan y", y, re)?;
    need("scan z", i.z, span(rows, sh.e, i.z_stride)?)?;
    let bc_end = i.b_off.checked_add(32).ok_or(CudaError::Shape {
        what: "b_off",
        value: i.b_off,
        why: "overflows",
    })?;
    if bc_end > i.bc_stride {
        return Err(CudaError::Shape {
            what: "b_off",
            value: i.b_off,
            why: "B and C must fit in a row",
        });
    }
    need("scan bc", i.bc, span(rows, bc_end, i.bc_stride)?)?;
    need("scan A", i.a, mul("A", sh.e, 16)?)?;
    aligned16(dev, "scan A address mod 16", i.a)?;
    aligned16(dev, "scan state address mod 16", state)?;
    need("scan D", i.d, sh.e)?;
    need("scan dt_bias", i.dt_bias, sh.e)?;
    let slots = state_slots(dev, &sh, "scan state", state, 16, slots)?;
    let [q, qd, qs] = q8a_out(dev, q8a, rows, sh.e)?;
    let p = Params::default()
        .ptr(dev.check_view(i.x)?)
        .ptr(dev.check_view(i.dt)?)
        .ptr(dev.check_view(i.z)?)
        .ptr(dev.check_view(i.bc)?)
        .ptr(dev.check_view(i.a)?)
        .ptr(dev.check_view(i.d)?)
        .ptr(dev.check_view(i.dt_bias)?)
        .ptr(dev.check_view(state)?)
        .ptr(slots)
        .ptr(dev.check_view(y)?)
        .i32(i32_of("e", sh.e)?)
        .i32(i32_of("t", sh.t)?)
        .i32(i32_of("z_stride", i.z_stride)?)
        .i32(i32_of("bc_stride", i.bc_stride)?)
        .i32(i32_of("b_off", i.b_off)?)
        .ptr(q)
        .ptr(qd)
        .ptr(qs)
        .done();
    // SAFETY: views checked against the shape.
    unsafe { dev.launch("selective_scan_n16", sh.grid()?, (128, 1, 1), p) }
}

/// Launches one of the emulator's deliberately faulty self-test kernels
/// (`emu_selftest_divergent_sync`, `emu_selftest_shuffle_exited_lane`) on
/// one block of 64 threads writing to `out` (64 ints); emulator only.
#[doc(hidden)]
pub fn emu_selftest(dev: &Device, kernel: &'static str, out: &View) -> Result<()> {
    if !dev.is_emu() || !kernel.starts_with("emu_selftest_") {
        return Err(CudaError::Emu(format!(
            "{kernel}: emulator self-tests only"
        )));
    }
    need("selftest out", out, 64)?;
    let p = Params::default().ptr(dev.check_view(out)?).done();
    // SAFETY: the view holds the 64 ints the one block writes.
    unsafe { dev.launch(kernel, (1, 1, 1), (64, 1, 1), p) }?;
    // Run it now: the self-tests are about the launch's own failure.
    dev.flush()
}

/// The kernel-name stem of a float weight type (paired with f32 activations).
pub fn matvec_float_stem(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::BF16 => "bf16",
        _ => return None,
    })
}

/// Float weights (F32/F16/BF16, any n) against `ncols` (1..=8) f32
/// activation rows `x` (rows of `n` values, `x_stride` apart):
/// out[c][r] = dot(w row r, x row c) (plus `add[c][r]`, see [`MvOut`]).
#[allow(clippy::too_many_arguments)]
pub fn matvec_float(
    dev: &Device,
    ty: GgmlType,
    w: &View,
    n: usize,
    rows: usize,
    x: &View,
    x_stride: usize,
    ncols: usize,
    out: &MvOut,
) -> Result<()> {
    let stem = matvec_float_stem(ty).ok_or(CudaError::Unsupported { ty })?;
    if !(1..=8).contains(&ncols) {
        return Err(CudaError::Shape {
            what: "ncols",
            value: ncols,
            why: "1 to 8 activation rows",
        });
    }
    if rows == 0 || n == 0 {
        return Err(CudaError::Shape {
            what: "matvec n/rows",
            value: 0,
            why: "must be positive",
        });
    }
    need(
        "matvec weights",
        w,
        mul("weights", mul("weights", rows, n)?, ty.type_size())?,
    )?;
    if x_stride < n {
        return Err(CudaError::Shape {
            what: "matvec x_stride",
            value: x_stride,
            why: "shorter than a row",
        });
    }
    need("matvec x", x, span(ncols, n, x_stride)?)?;
    let (out, add) = out.check(dev, ncols, rows)?;
    let p = Params::default()
        .ptr(dev.check_view(w)?)
        .ptr(dev.check_view(x)?)
        .ptr(out)
        .i32(i32_of("n", n)?)
        .i32(i32_of("rows", rows)?)
        .i32(i32_of("x_stride", x_stride)?)
        .ptr(add)
        .done();
    let name = matvec_name(stem, ncols)?;
    // SAFETY: weights, activations and outputs were checked against the shapes.
    unsafe {
        dev.launch(
            name,
            (blocks(rows, MATVEC_WARPS)?, 1, 1),
            (32 * MATVEC_WARPS as u32, 1, 1),
            p,
        )
    }
}

/// Embedding lookup: `out[t]` = row `ids[t]` of `table` (`vocab` rows of `n`
/// values of `ty`, as stored), dequantized. `ids` must be read back by the
/// caller to be trusted; an id outside 0..vocab yields a NaN row, never an
/// out-of-bounds read.
#[allow(clippy::too_many_arguments)]
pub fn embed(
    dev: &Device,
    ty: GgmlType,
    table: &View,
    n: usize,
    vocab: usize,
    ids: &View,
    tokens: usize,
    out: &View,
) -> Result<()> {
    if matvec_stem(ty).is_none() && matvec_float_stem(ty).is_none() {
        return Err(CudaError::Unsupported { ty });
    }
    if n == 0 || !n.is_multiple_of(ty.block_size()) || tokens == 0 {
        return Err(CudaError::Shape {
            what: "embed n",
            value: n,
            why: "whole blocks, positive",
        });
    }
    let rb = ty.row_bytes(n).ok_or(CudaError::Unsupported { ty })?;
    need("embed table", table, mul("table", vocab, rb)?)?;
    need("embed ids", ids, tokens)?;
    need("embed out", out, mul("out", tokens, n)?)?;
    let p = Params::default()
        .ptr(dev.check_view(table)?)
        .ptr(dev.check_view(ids)?)
        .ptr(dev.check_view(out)?)
        .i32(i32_of("n", n)?)
        .i32(i32_of("row bytes", rb)?)
        .i32(i32_of("vocab", vocab)?)
        .i32(ty as i32)
        .done();
    let grid = (
        u32::try_from(tokens).map_err(|_| CudaError::Shape {
            what: "tokens",
            value: tokens,
            why: "too many",
        })?,
        1,
        1,
    );
    // SAFETY: table, ids and output checked; ids are bounds-checked in the kernel.
    unsafe { dev.launch("embed_rows", grid, (128, 1, 1), p) }
}
