//! The streaming engine shared by `convert` and `quantize`: one tensor at a
//! time, in batches of rows; each batch is decoded to f32, transformed,
//! quantized in parallel (rayon) and written before the next is read.
//!
//! Memory: a batch holds at most `BATCH_VALUES` f32 values (64 MiB) plus its
//! encoded bytes (at most as many again), and the source pages of a batch are
//! dropped from the resident set once encoded. A bitsandbytes weight is
//! dequantized whole first (its blocks run across rows): at most the largest
//! quantized Linear in f32 (in_proj of the 7B: 256 MiB). So peak RSS is about
//! 130 MiB + the metadata (tokenizer: ~30 MiB for Falcon's 65k vocabulary),
//! + 256 MiB for a bnb checkpoint, independent of the checkpoint's size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gguf::{GgmlType, GgufWriter};
use rayon::prelude::*;

use crate::checkpoint::{to_f32, Checkpoint, TensorEntry};
use crate::error::{ConvertError, Result};
use crate::layout::Transform;

/// Values per batch.
pub const BATCH_VALUES: usize = 16 << 20;

/// Progress reports, passed to the caller's callback.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Conversion starts: `tensors` to write, `total_bytes` of input to read.
    Start { tensors: usize, total_bytes: u64 },
    /// Tensor `index` (0-based) begins.
    Tensor {
        index: usize,
        name: &'a str,
        ty: GgmlType,
        dims: &'a [u64],
    },
    /// Input bytes done so far (cumulative).
    Bytes { done: u64 },
    /// Something worth telling the user that does not stop the conversion.
    Warning(String),
}

/// Where a tensor's values come from.
pub enum Source<'a> {
    /// A safetensors tensor of F32/F16/BF16.
    Hf {
        ck: &'a Checkpoint,
        entry: &'a TensorEntry,
        transform: Transform,
    },
    /// Values already decoded (a dequantized bitsandbytes weight).
    Dense(Vec<f32>),
    /// A GGUF tensor: raw bytes of `ty`.
    Gguf { ty: GgmlType, bytes: &'a [u8] },
}

impl Source<'_> {
    /// Input bytes this source accounts for in progress reports.
    pub fn input_bytes(&self) -> u64 {
        match self {
            Source::Hf { entry, .. } => (entry.end - entry.start) as u64,
            Source::Dense(v) => (v.len() / 2) as u64,
            Source::Gguf { bytes, .. } => bytes.len() as u64,
        }
    }
}

/// `A = -exp(A_log)` in f32 from the source value, as transformers computes
/// it (`-torch.exp(A_log.float())`) for every source dtype. The exponential
/// is taken in f64 and rounded once, so it is the correctly rounded f32.
///
/// This is the one tensor where our file may differ from llama.cpp's: its
/// converter takes torch's `exp` in the source dtype, so for an F16 source
/// (and TII's bitsandbytes uploads, whose unquantized parts are F16) its A
/// carries f16 rounding (up to 2^-11 relative), and for other sources it may
/// differ in the last bit where torch's f32 `exp` is not correctly rounded.
fn neg_exp(a: f32) -> f32 {
    -((f64::from(a)).exp() as f32)
}

fn decode_rows(
    src: &Source<'_>,
    row0: usize,
    rows: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    match src {
        Source::Hf {
            entry,
            ck,
            transform,
        } => {
            let es = entry.dtype.size();
            let bytes = ck.bytes(entry);
            let b = bytes
                .get(row0 * n * es..(row0 + rows) * n * es)
                .ok_or_else(|| ConvertError::Tensor {
                    file: ck.file_of(entry).to_path_buf(),
                    tensor: entry.name.clone(),
                    what: "shorter than its shape".into(),
                })?;
            out.par_chunks_mut(n.max(1))
                .zip(b.par_chunks(n.max(1) * es))
                .for_each(|(o, s)| {
                    to_f32(entry.dtype, s, o);
                    if *transform == Transform::NegExp {
                        for v in o.iter_mut() {
                            *v = neg_exp(*v);
                        }
                    }
                });
        }
        Source::Dense(v) => {
            let s = v
                .get(row0 * n..(row0 + rows) * n)
                .ok_or_else(|| ConvertError::Other("dense source shorter than its shape".into()))?;
            out.copy_from_slice(s);
        }
        Source::Gguf { ty, bytes } => {
            let rb = ty.row_bytes(n).ok_or_else(|| {
                ConvertError::Other(format!(
                    "row of {n} is not a whole number of {} blocks",
                    ty.name()
                ))
            })?;
            let b = bytes
                .get(row0 * rb..(row0 + rows) * rb)
                .ok_or_else(|| ConvertError::Other("tensor data shorter than its shape".into()))?;
            let ty = *ty;
            out.par_chunks_mut(n.max(1))
                .zip(b.par_chunks(rb.max(1)))
                .try_for_each(|(o, s)| quant::dequantize_row(ty, s, o))
                .map_err(|e| ConvertError::Other(e.to_string()))?;
        }
    }
    Ok(())
}

/// Encode and write one tensor of `n_rows` rows of `n` values as `ty`,
/// with `importance` (one weight per column: an importance matrix's entry
/// for this tensor) when given.
#[allow(clippy::too_many_arguments)]
pub fn write_tensor(
    w: &mut GgufWriter,
    name: &str,
    src: &Source<'_>,
    n: usize,
    n_rows: usize,
    ty: GgmlType,
    importance: Option<&[f32]>,
    pool: Option<&rayon::ThreadPool>,
    cancel: &AtomicBool,
    done: &mut u64,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<()> {
    let out_path = w.path().to_path_buf();
    let rb = ty.row_bytes(n).ok_or_else(|| ConvertError::Tensor {
        file: out_path.clone(),
        tensor: name.to_string(),
        what: format!("rows of {n} values do not fill {} blocks", ty.name()),
    })?;
    // A raw copy when the GGUF source already has the wanted type.
    if let Source::Gguf { ty: sty, bytes } = src {
        if *sty == ty {
            w.write_tensor_data(bytes)
                .map_err(|source| ConvertError::Write {
                    path: out_path.clone(),
                    source,
                })?;
            *done += bytes.len() as u64;
            progress(Progress::Bytes { done: *done });
            return Ok(());
        }
    }
    let in_per_row = if n_rows == 0 {
        0
    } else {
        src.input_bytes() / n_rows as u64
    };
    let batch_rows = (BATCH_VALUES / n.max(1)).max(1);
    let mut vals: Vec<f32> = Vec::new();
    let mut enc: Vec<u8> = Vec::new();
    let mut row0 = 0;
    while row0 < n_rows {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Interrupted {
                path: out_path,
                tensor: name.to_string(),
            });
        }
        let rows = batch_rows.min(n_rows - row0);
        vals.resize(rows * n, 0.0);
        enc.resize(rows * rb, 0);
        let (vals_ref, enc_ref) = (&mut vals, &mut enc);
        par(pool, move || -> Result<()> {
            decode_rows(src, row0, rows, n, vals_ref)?;
            enc_ref
                .par_chunks_mut(rb.max(1))
                .zip(vals_ref.par_chunks(n.max(1)))
                .try_for_each(|(d, s)| quant::quantize_row_weighted(ty, s, importance, d))
                .map_err(|source| ConvertError::Quant {
                    tensor: name.to_string(),
                    source,
                })
        })?;
        w.write_tensor_data(&enc)
            .map_err(|source| ConvertError::Write {
                path: out_path.clone(),
                source,
            })?;
        if let Source::Hf { ck, entry, .. } = src {
            let es = entry.dtype.size();
            ck.release(entry, row0 * n * es, (row0 + rows) * n * es);
        }
        *done += in_per_row * rows as u64;
        progress(Progress::Bytes { done: *done });
        row0 += rows;
    }
    Ok(())
}

/// What a finished conversion wrote.
#[derive(Clone, Debug)]
pub struct Summary {
    pub path: std::path::PathBuf,
    pub tensors: usize,
    /// Total file size in bytes.
    pub file_bytes: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Number of weights (elements) written.
    pub n_params: u64,
    pub seconds: f64,
    /// Warnings raised on the way (also reported through the callback).
    pub warnings: Vec<String>,
}

impl Summary {
    pub fn bits_per_weight(&self) -> f64 {
        if self.n_params == 0 {
            0.0
        } else {
            self.tensor_bytes as f64 * 8.0 / self.n_params as f64
        }
    }
}

/// A wall clock for summaries.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A pool of `threads` workers (None: use rayon's global pool).
pub fn thread_pool(threads: Option<usize>) -> Result<Option<rayon::ThreadPool>> {
    match threads {
        None => Ok(None),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map(Some)
            .map_err(|e| ConvertError::Other(format!("cannot start {n} threads: {e}"))),
    }
}

/// Run `f` (which uses rayon) on `pool`, or on the global pool.
fn par<T: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}
