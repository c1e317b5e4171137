//! The CUDA backend: the weights uploaded once, quantized as the file holds
//! them; the state pool and the workspaces in device memory; every op one or
//! a few launches of the `mamba-cuda` crate's kernels (`cuda/kernels/`, their
//! contracts in `cuda/README.md`). The same code runs on a GPU
//! ([`mamba_cuda::Device::cuda`]) or on the crate's CPU emulator of the CUDA
//! execution model (`--device cuda-emu`), which is how the whole path is
//! tested on machines without a GPU.
//!
//! Fewer launches per block (a decode step is launch-bound on a fast GPU):
//! some ops of the seam are fused into the launch of the op that reads their
//! result, their only reader, so the seam's buffers then hold other values
//! between those two ops than the CPU's do:
//! - `silu_gate` and `dt_softplus` into the scan kernel (it takes the raw
//!   gate z and applies SiLU, adds the dt bias and applies softplus): both
//!   no-ops here, `Act::Xz`'s gate half and `Act::Dt` hold the values before
//!   those steps;
//! - `split_dt` into the dt matmul, which reads dt_in in place from `Xdbl`'s
//!   rows (`Act::DtIn` is never written);
//! - `residual` into the out-projection matvec, which adds its dots to X
//!   (X += W y in one launch; `Act::Out` is never written, `residual` checks
//!   that the matvec did it);
//! - every matmul's activations are quantized to Q8A by the launch that
//!   makes them: the block's RMS norm for the in-projection
//!   (`rms_norm_q8a`), the conv for the x-projection, the dt/B/C norm for
//!   the dt projection, the scan for the out-projection (a warp holds 32
//!   consecutive channels of a token: one Q8A block), the final norm for the
//!   head; the matmul then skips its own quantization;
//! - the dt/B/C norm is one launch for the three segments (`rms_norm3`);
//! - a batched step uploads its slot ids once, for every layer's conv and
//!   scan (`StateSlots::Resident`).
//!
//! Each fused kernel is tested bit for bit against the launches it replaces
//! (`cuda/tests/emu_kernels.rs`). A decode step is 8 launches per block
//! (was 16), and from its second repetition one CUDA graph launch: the
//! device queues launches and replays a list it has seen as a graph
//! (`mamba_cuda::graph`; [`CudaBackend::set_graphs`] turns it off).
//!
//! Matmuls: quantized weights take activations quantized once per matmul to
//! Q8A (int8 per 32 values with a float scale, dp4a dots); F32/F16/BF16
//! weights take the f32 rows. Up to 8 rows (decode) are one matvec launch;
//! a prefill chunk of quantized weights is one `matmul_<t>` launch: a block
//! of 8 warps takes 8 weight rows against the chunk 16 rows at a time, the
//! activations staged tile by tile in shared memory for all 8 warps, so the
//! weights come from device memory once per chunk and the activations from
//! L2 once per 8 weight rows. Float weights still run 8 rows per launch.
//!
//! Thread safety: the weights and the state pool sit behind one mutex, held
//! for the whole of each op, so launches from several sessions never
//! interleave; a workspace belongs to one session.

use std::sync::{Mutex, MutexGuard};

use mamba_cuda::ops::{self, MixerShape, MvOut, QActs, ScanInputs, StateSlots};
use mamba_cuda::{Buffer, CudaError, Device, View};
use quant::GgmlType;

use super::{
    check_range, check_top_k, prefix_mut, whole_rows, Act, Greedy, Rows, TopK, Weight, TOP_K_MAX,
};
use crate::error::{ModelError, Result};
use crate::model::{Hparams, Mat, Weights};
use crate::state::{LayerState, State};

/// The conv kernel width and state size the kernels are built for (every
/// published Mamba-1 and Falcon Mamba checkpoint).
const CONV_K: usize = 4;
const STATE_N: usize = 16;
/// Activation rows per matvec launch.
const COLS: usize = 8;
/// Rows the LM head takes per launch (one `matmul_<t>` over up to 32 rows:
/// a batched step of up to 32 sequences reads the head's weights, 5% of a
/// 7B file, once rather than once per 8 rows), and rows of the workspace's
/// logits buffer (7B: 8.3 MB).
const HEAD_ROWS: usize = 32;

/// Which device a CUDA backend runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaDevice {
    /// GPU `ordinal`.
    Gpu(usize),
    /// The CPU emulator of the CUDA execution model.
    Emulator,
}

impl From<CudaError> for ModelError {
    fn from(e: CudaError) -> Self {
        ModelError::Cuda(e)
    }
}

/// A weight matrix in device memory, as stored in the file:
/// `n_out` rows of `n_in` values of `ty`.
struct GpuMat {
    name: String,
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    /// The matvec's device layout (`ops::upload_weights`: Q6_K padded), or
    /// for the embedding table the file's own bytes.
    w: Buffer<u8>,
}

/// One block's parameters in device memory.
struct GpuLayer {
    /// [d]
    norm: Buffer<f32>,
    /// {d, 2E}
    ssm_in: GpuMat,
    /// [E][K], channel-major (the CPU keeps [K][E]).
    conv_w: Buffer<f32>,
    /// [E]
    conv_b: Buffer<f32>,
    /// {E, R+2N}
    ssm_x: GpuMat,
    /// {R, E}
    ssm_dt: GpuMat,
    /// [E]
    dt_b: Buffer<f32>,
    /// [E][N], A = -exp(A_log)
    a: Buffer<f32>,
    /// [E]
    d: Buffer<f32>,
    /// {E, d}
    ssm_out: GpuMat,
}

/// Everything in device memory that ops share.
struct Inner {
    tok_embd: GpuMat,
    layers: Vec<GpuLayer>,
    /// [d]
    output_norm: Buffer<f32>,
    /// {d, V}
    output: GpuMat,
    /// Slots in the pool.
    slots: usize,
    /// Per layer `[slot][E][K-1]`, oldest input first.
    conv: Vec<Buffer<f32>>,
    /// Per layer `[slot][E][N]`.
    ssm: Vec<Buffer<f32>>,
}

/// The CUDA backend (see the module docs).
pub struct CudaBackend {
    dev: Device,
    hp: Hparams,
    weight_bytes: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.dev.name())
            .field("weight_bytes", &self.weight_bytes)
            .finish()
    }
}

/// The device buffers of one forward over up to `rows` tokens; allocated on
/// the first op, so that running out of device memory is an error of that op
/// rather than a panic where the workspace is made.
pub struct CudaScratch {
    rows: usize,
    /// [`Act`] widths.
    widths: [usize; 9],
    /// Widest matmul input (for the Q8A buffers).
    max_in: usize,
    vocab: usize,
    /// The x-projection's norm tail to make with the buffers (`Bufs::
    /// norm3_tail`): its matrix rows, B's and C's length, eps, and whether
    /// it also writes dt_in's Q8A.
    norm3: Option<(usize, usize, f32, bool)>,
    bufs: Option<Box<Bufs>>,
}

impl std::fmt::Debug for CudaScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaScratch")
            .field("rows", &self.rows)
            .field("allocated", &self.bufs.is_some())
            .finish()
    }
}

struct Bufs {
    /// Indexed by `Act as usize`, `[rows][width]` each.
    act: Vec<Buffer<f32>>,
    /// Q8A activations of one matmul: q `[rows][max_in]`, d and s
    /// `[rows][max_in / 32]`.
    q: Buffer<i8>,
    qd: Buffer<f32>,
    qs: Buffer<i32>,
    /// Token ids of a forward `[rows]`.
    ids: Buffer<i32>,
    /// State slot of each row of a batch `[rows]`.
    slot_ids: Buffer<i32>,
    /// Logits of up to [`HEAD_ROWS`] rows `[head_rows][V]`.
    logits: Buffer<f32>,
    /// Greedy picks of those rows `[head_rows][2]`: argmax, first NaN or -1.
    picks: Buffer<i32>,
    /// Top-k of `nc` of those rows, packed so that one copy brings it back:
    /// the values' bits `[nc][k]`, their ids `[nc][k]`, then each row's
    /// first NaN or -1 `[nc]` (room for k = TOP_K_MAX).
    top: Buffer<i32>,
    /// What the Q8A buffers hold, when a fused norm wrote them: the
    /// quantization of rows `0..t` of this buffer (taken by the next matmul).
    q8a_of: Option<(Act, usize)>,
    /// The out-projection added its output to X (taken by `residual`).
    out_in_x: bool,
    /// The x-projection's norm tail (made on first use: it points at these
    /// buffers), and the rows `t` whose dt/B/C norm the last x-projection
    /// did in its own launch (taken by `dt_b_c_rms`).
    norm3_tail: Option<ops::Norm3Tail>,
    norm3_done: Option<usize>,
    /// The ids `slot_ids` holds (uploaded by a conv, reused by the scan and
    /// the other layers of the step).
    slot_ids_held: Vec<i32>,
}

impl CudaScratch {
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn bytes(&self) -> usize {
        let acts: usize = self.widths.iter().map(|w| w * self.rows).sum();
        let q = self.rows * self.max_in;
        4 * acts
            + q
            + 8 * (q / 32)
            + 8 * self.rows
            + 4 * self.head_rows() * (self.vocab + 3 + 2 * TOP_K_MAX)
    }

    /// Rows of the logits buffer.
    fn head_rows(&self) -> usize {
        HEAD_ROWS.min(self.rows)
    }

    fn bufs(&mut self, dev: &Device) -> Result<&mut Bufs> {
        if self.bufs.is_none() {
            let r = self.rows;
            let act = self
                .widths
                .iter()
                .map(|w| dev.alloc::<f32>(r * w))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let q = r * self.max_in;
            self.bufs = Some(Box::new(Bufs {
                act,
                q: dev.alloc(q)?,
                qd: dev.alloc(q / 32)?,
                qs: dev.alloc(q / 32)?,
                ids: dev.alloc(r)?,
                slot_ids: dev.alloc(r)?,
                logits: dev.alloc(self.head_rows() * self.vocab)?,
                picks: dev.alloc(2 * self.head_rows())?,
                top: dev.alloc(self.head_rows() * (2 * TOP_K_MAX + 1))?,
                q8a_of: None,
                out_in_x: false,
                norm3_tail: None,
                norm3_done: None,
                slot_ids_held: Vec::new(),
            }));
            if let (Some((rows, nbc, eps, q8a)), Some(b)) = (self.norm3, self.bufs.as_deref_mut()) {
                // It points at the Q8A buffers: made once, with them (one
                // upload per workspace).
                let views = [
                    dev.view(&b.q, 0, b.q.len())?,
                    dev.view(&b.qd, 0, b.qd.len())?,
                    dev.view(&b.qs, 0, b.qs.len())?,
                ];
                let acts = QActs {
                    q: &views[0],
                    d: &views[1],
                    s: &views[2],
                };
                let q = q8a.then_some(&acts);
                b.norm3_tail = Some(ops::norm3_tail(dev, rows, nbc, eps, q, r)?);
            }
        }
        self.bufs.as_deref_mut().ok_or_else(|| ModelError::Backend {
            what: "CUDA workspace not allocated".into(),
        })
    }
}

fn bad_slot(slot: usize, slots: usize) -> ModelError {
    ModelError::Backend {
        what: format!("state slot {slot} outside the pool of {slots}"),
    }
}

fn unsupported(m: &Mat, what: &str) -> ModelError {
    // The loader already named the file; say which tensor and type.
    ModelError::Backend {
        what: format!(
            "tensor '{}' has type {}, which has no CUDA kernel{what} (use --device cpu)",
            m.name, m.ty
        ),
    }
}

/// Whether the CUDA matvec takes `ty` (quantized with a Q8A dot, or float).
fn has_matvec(ty: GgmlType) -> bool {
    ops::matvec_stem(ty).is_some() || ops::matvec_float_stem(ty).is_some()
}

impl CudaBackend {
    /// Opens `which` and uploads the weights (checked against free device
    /// memory first, so a model that does not fit gets the sizes).
    pub(crate) fn new(which: CudaDevice, w: &Weights) -> Result<CudaBackend> {
        let hp = w.hp.clone();
        if hp.d_state != STATE_N || hp.d_conv != CONV_K {
            return Err(ModelError::Backend {
                what: format!(
                    "the CUDA kernels need d_state {STATE_N} and d_conv {CONV_K}; this model has {} and {} (use --device cpu)",
                    hp.d_state, hp.d_conv
                ),
            });
        }
        // The matrices the matvec reads (in its device layout, Q6_K padded:
        // ops::upload_weights), and their weight types; the embedding table
        // goes up as stored.
        let matvec_mats: Vec<&Mat> = std::iter::once(&w.output)
            .chain(
                w.layers
                    .iter()
                    .flat_map(|l| [&l.ssm_in, &l.ssm_x, &l.ssm_dt, &l.ssm_out]),
            )
            .collect();
        let mut tys: Vec<GgmlType> = Vec::new();
        let mut weight_bytes = w.file.tensor_data(&w.tok_embd.info).len();
        for m in std::iter::once(&w.tok_embd).chain(matvec_mats.iter().copied()) {
            if !has_matvec(m.ty) {
                return Err(unsupported(m, ""));
            }
            if ops::matvec_stem(m.ty).is_some() && m.n_in % 32 != 0 {
                return Err(unsupported(m, " for rows not a multiple of 32"));
            }
        }
        for m in &matvec_mats {
            weight_bytes += ops::device_row_bytes(m.ty, m.n_in)
                .map_or(w.file.tensor_data(&m.info).len(), |rb| rb * m.n_out);
            if !tys.contains(&m.ty) {
                tys.push(m.ty);
            }
        }
        let (e, d) = (hp.d_inner, hp.n_embd);
        weight_bytes += 4 * (hp.n_layer * (d + e * (CONV_K + 4 + STATE_N)) + d);
        let dev = match which {
            CudaDevice::Gpu(i) => Device::cuda(i)?,
            CudaDevice::Emulator => Device::emu(),
        };
        // The matvec and matmul kernels of each weight type of the model,
        // checked on this device against the host before anything is
        // uploaded (mamba_cuda::selftest): a kernel that computes something
        // else here refuses the device instead of answering wrongly.
        if mamba_cuda::selftest::wanted() {
            for &ty in &tys {
                mamba_cuda::selftest::check_matvec(&dev, ty)?;
            }
        }
        if let Some(free) = dev.free_memory()? {
            if weight_bytes > free {
                return Err(ModelError::Backend {
                    what: format!(
                        "the weights need {:.2} GiB of device memory, {} has {:.2} GiB free (use a smaller quantization or --device cpu)",
                        gib(weight_bytes),
                        dev.name(),
                        gib(free)
                    ),
                });
            }
        }
        let gpu_mat = |m: &Mat, buf: Buffer<u8>| GpuMat {
            name: m.name.clone(),
            ty: m.ty,
            n_in: m.n_in,
            n_out: m.n_out,
            w: buf,
        };
        // A matrix the matvec reads, in its device layout.
        let mat = |m: &Mat| -> Result<GpuMat> {
            let buf = ops::upload_weights(&dev, m.ty, m.n_in, w.file.tensor_data(&m.info))?;
            Ok(gpu_mat(m, buf))
        };
        let layers = w
            .layers
            .iter()
            .map(|l| {
                // [K][E] -> [E][K]
                let mut conv_w = vec![0.0f32; e * CONV_K];
                for k in 0..CONV_K {
                    for c in 0..e {
                        conv_w[c * CONV_K + k] = l.conv_w[k * e + c];
                    }
                }
                Ok(GpuLayer {
                    norm: dev.upload(&l.norm)?,
                    ssm_in: mat(&l.ssm_in)?,
                    conv_w: dev.upload(&conv_w)?,
                    conv_b: dev.upload(&l.conv_b)?,
                    ssm_x: mat(&l.ssm_x)?,
                    ssm_dt: mat(&l.ssm_dt)?,
                    dt_b: dev.upload(&l.dt_b)?,
                    a: dev.upload(&l.a)?,
                    d: dev.upload(&l.d)?,
                    ssm_out: mat(&l.ssm_out)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let inner = Inner {
            // Rows the embedding kernel dequantizes as the file has them.
            tok_embd: gpu_mat(
                &w.tok_embd,
                dev.upload(w.file.tensor_data(&w.tok_embd.info))?,
            ),
            output_norm: dev.upload(&w.output_norm)?,
            output: mat(&w.output)?,
            slots: 0,
            conv: Vec::new(),
            ssm: Vec::new(),
            layers,
        };
        Ok(CudaBackend {
            dev,
            hp,
            weight_bytes,
            inner: Mutex::new(inner),
        })
    }

    /// The device's name; on a GPU also how its kernels were loaded (the
    /// shipped SASS, or the PTX through the driver's JIT, and how long it
    /// took), and why graphs are off if the driver refused one.
    pub(crate) fn device(&self) -> String {
        let mut s = self.dev.name();
        if !self.dev.is_emu() {
            s += &format!(", kernels: {}", self.dev.code());
        }
        if let Some(e) = self.dev.graph_error() {
            s += &format!(" (CUDA graphs off: {e})");
        }
        s
    }

    /// Whether this runs on the emulator.
    pub fn is_emulator(&self) -> bool {
        self.dev.is_emu()
    }

    /// Kernel launches and host-to-device copies so far (see the module
    /// docs for what one decode step costs).
    pub fn counts(&self) -> mamba_cuda::Counts {
        self.dev.counts()
    }

    /// Replays repeated launch lists as graphs (the default), or launches
    /// each kernel when asked (see `mamba_cuda::graph`).
    pub fn set_graphs(&self, on: bool) -> Result<()> {
        Ok(self.dev.set_graphs(on)?)
    }

    /// Why graphs were turned off on this device, if the driver refused one.
    pub fn graph_error(&self) -> Option<String> {
        self.dev.graph_error()
    }

    /// Bytes of weights in device memory.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Widths of the [`Act`] buffers.
    pub(crate) fn widths(&self) -> [usize; 9] {
        let hp = &self.hp;
        let (d, e, r, n) = (hp.n_embd, hp.d_inner, hp.dt_rank, hp.d_state);
        [d, d, 2 * e, e, r + 2 * n, r, e, e, d]
    }

    pub(crate) fn scratch(&self, rows: usize) -> CudaScratch {
        let hp = &self.hp;
        let max_in = [hp.n_embd, hp.d_inner, hp.dt_rank]
            .into_iter()
            .max()
            .unwrap_or(0)
            .next_multiple_of(32);
        // Falcon's dt/B/C norm in the x-projection's launch (its last
        // block), when every layer's x weight goes through the quantized
        // matvec; dt_in also in Q8A when every dt weight is quantized.
        let norm3 = {
            let inner = self.inner();
            let x_quantized = inner
                .layers
                .iter()
                .all(|l| ops::matvec_stem(l.ssm_x.ty).is_some());
            let (r, n) = (hp.dt_rank, hp.d_state);
            let q8a = dt_quantized(&inner) && r % 32 == 0;
            (hp.dt_b_c_rms && x_quantized).then_some((r + 2 * n, n, hp.dt_b_c_eps, q8a))
        };
        CudaScratch {
            rows: rows.max(1),
            widths: self.widths(),
            max_in,
            vocab: hp.n_vocab,
            norm3,
            bufs: None,
        }
    }

    fn view<T: mamba_cuda::Elem>(&self, b: &Buffer<T>, off: usize) -> Result<View> {
        let len = b.len().checked_sub(off).ok_or(ModelError::Backend {
            what: format!("view from {off} past a buffer of {}", b.len()),
        })?;
        Ok(self.dev.view(b, off, len)?)
    }

    /// The workspace's Q8A buffers (q, d, s) as kernel views.
    fn q8a_views(&self, b: &Bufs) -> Result<Q8aViews> {
        Ok(Q8aViews([
            self.view(&b.q, 0)?,
            self.view(&b.qd, 0)?,
            self.view(&b.qs, 0)?,
        ]))
    }

    fn check_rows(&self, ws: &CudaScratch, t: usize) -> Result<()> {
        check_range(ws.rows, &(0..t))
    }

    /// out rows `0..t` (stride `m.n_out`) = W x rows `0..t` (`x_stride`
    /// apart), up to [`COLS`] rows per launch; with `accumulate`, out +=
    /// instead. `quantized`: the Q8A buffers already hold x's rows (a fused
    /// norm wrote them).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        b: &Bufs,
        m: &GpuMat,
        (x, x_stride): (&Buffer<f32>, usize),
        t: usize,
        out: &Buffer<f32>,
        accumulate: bool,
        quantized: bool,
    ) -> Result<()> {
        self.gemm_tail(b, m, (x, x_stride), t, out, accumulate, quantized, None)
            .map(|_| ())
    }

    /// [`gemm`](Self::gemm); with `tail`, a decode matvec of one or two
    /// rows (quantized weights) also norms its output rows dt/B/C in its
    /// own launch (`ops::matvec_norm3`). Whether the tail ran.
    #[allow(clippy::too_many_arguments)]
    fn gemm_tail(
        &self,
        b: &Bufs,
        m: &GpuMat,
        (x, x_stride): (&Buffer<f32>, usize),
        t: usize,
        out: &Buffer<f32>,
        accumulate: bool,
        quantized: bool,
        tail: Option<&ops::Norm3Tail>,
    ) -> Result<bool> {
        let (n, dev) = (m.n_in, &self.dev);
        let w = self.view(&m.w, 0)?;
        if ops::matvec_stem(m.ty).is_some() {
            let q8 = self.q8a_views(b)?;
            let acts = q8.acts();
            if !quantized {
                ops::quantize_q8a(dev, &self.view(x, 0)?, t, n, x_stride, &acts)?;
            }
            let o = self.view(out, 0)?;
            let dst = MvOut {
                out: &o,
                add: accumulate.then_some(&o),
            };
            if let (true, Some(tail)) = (t <= 2, tail) {
                let shape = (&w, n, m.n_out);
                ops::matvec_norm3(dev, m.ty, shape, &acts, t, &dst, tail)?;
                return Ok(true);
            } else if t <= COLS {
                ops::matvec(dev, m.ty, &w, n, m.n_out, &acts, t, &dst)?;
            } else {
                // A prefill chunk: one launch, the weights read once.
                ops::matmul(dev, m.ty, &w, n, m.n_out, &acts, t, &dst)?;
            }
        } else {
            for c0 in (0..t).step_by(COLS) {
                let nc = COLS.min(t - c0);
                let xs = self.view(x, c0 * x_stride)?;
                let o = self.view(out, c0 * m.n_out)?;
                let dst = MvOut {
                    out: &o,
                    add: accumulate.then_some(&o),
                };
                ops::matvec_float(dev, m.ty, &w, n, m.n_out, &xs, x_stride, nc, &dst)?;
            }
        }
        Ok(false)
    }

    // ---- ops ----

    pub(crate) fn embed(&self, ws: &mut CudaScratch, ids: &[u32]) -> Result<()> {
        let t = ids.len();
        self.check_rows(ws, t)?;
        let inner = self.inner();
        let b = ws.bufs(&self.dev)?;
        let ids32: Vec<i32> = ids
            .iter()
            .map(|&i| i32::try_from(i).unwrap_or(i32::MAX))
            .collect();
        self.dev.write_at(&mut b.ids, 0, &ids32)?;
        let m = &inner.tok_embd;
        ops::embed(
            &self.dev,
            m.ty,
            &self.view(&m.w, 0)?,
            self.hp.n_embd,
            self.hp.n_vocab,
            &self.view(&b.ids, 0)?,
            t,
            &self.view(&b.act[Act::X as usize], 0)?,
        )?;
        Ok(())
    }

    pub(crate) fn rms_norm(&self, ws: &mut CudaScratch, l: usize, t: usize) -> Result<()> {
        self.check_rows(ws, t)?;
        let inner = self.inner();
        let layer = layer(&inner, l)?;
        let b = ws.bufs(&self.dev)?;
        let (x, w) = (
            self.view(&b.act[Act::X as usize], 0)?,
            self.view(&layer.norm, 0)?,
        );
        // The in-projection's activations quantized in the same launch.
        let fuse = ops::matvec_stem(layer.ssm_in.ty).is_some();
        self.norm_into_h(b, &x, &w, t, fuse)?;
        b.q8a_of = fuse.then_some((Act::H, t));
        Ok(())
    }

    /// H rows `0..t` = rmsnorm(x rows) * w; with `quantize`, also H's Q8A
    /// into the workspace's buffers, in the same launch.
    fn norm_into_h(&self, b: &Bufs, x: &View, w: &View, t: usize, quantize: bool) -> Result<()> {
        let (d, eps) = (self.hp.n_embd, self.hp.norm_eps);
        let h = self.view(&b.act[Act::H as usize], 0)?;
        if quantize {
            let q8 = self.q8a_views(b)?;
            let acts = q8.acts();
            ops::rms_norm_q8a(&self.dev, x, Some(w), &h, t, d, d, eps, &acts)?;
        } else {
            ops::rms_norm(&self.dev, x, Some(w), &h, t, d, d, d, eps)?;
        }
        Ok(())
    }

    pub(crate) fn matmul(
        &self,
        ws: &mut CudaScratch,
        wt: Weight,
        src: Act,
        dst: Act,
        t: usize,
    ) -> Result<()> {
        self.check_rows(ws, t)?;
        let inner = self.inner();
        let m = match wt {
            Weight::In(l) => &layer(&inner, l)?.ssm_in,
            Weight::X(l) => &layer(&inner, l)?.ssm_x,
            Weight::Dt(l) => &layer(&inner, l)?.ssm_dt,
            Weight::Out(l) => &layer(&inner, l)?.ssm_out,
            Weight::Head => &inner.output,
        };
        if src == dst {
            return Err(ModelError::Backend {
                what: format!("matmul {} from {src:?} into itself", m.name),
            });
        }
        let widths = ws.widths;
        if widths[src as usize] != m.n_in || widths[dst as usize] != m.n_out {
            return Err(ModelError::Backend {
                what: format!("matmul {} from {src:?} into {dst:?}: widths differ", m.name),
            });
        }
        let b = ws.bufs(&self.dev)?;
        let quantized = b.q8a_of.take() == Some((src, t));
        b.norm3_done = None;
        match (wt, src, dst) {
            // Falcon's dt/B/C norm fused at one or two rows (decode at
            // batch 1-2): done by the matvec's last block.
            (Weight::X(_), _, _) if b.norm3_tail.is_some() && t <= 2 => {
                let x = (&b.act[src as usize], m.n_in);
                let (out, tail) = (&b.act[dst as usize], b.norm3_tail.as_ref());
                if self.gemm_tail(b, m, x, t, out, false, quantized, tail)? {
                    b.norm3_done = Some(t);
                }
                Ok(())
            }
            // split_dt fused: dt_in read in place from x_proj's rows.
            (Weight::Dt(_), Act::DtIn, _) => {
                let stride = self.hp.dt_rank + 2 * self.hp.d_state;
                let x = (&b.act[Act::Xdbl as usize], stride);
                self.gemm(b, m, x, t, &b.act[dst as usize], false, quantized)
            }
            // residual fused: X += W y.
            (Weight::Out(_), _, Act::Out) => {
                let x = (&b.act[src as usize], m.n_in);
                self.gemm(b, m, x, t, &b.act[Act::X as usize], true, quantized)?;
                b.out_in_x = true;
                Ok(())
            }
            _ => {
                let x = (&b.act[src as usize], m.n_in);
                self.gemm(b, m, x, t, &b.act[dst as usize], false, quantized)
            }
        }
    }

    /// Fused into [`scan`](Self::scan) (see the module docs).
    pub(crate) fn silu_gate(&self, ws: &mut CudaScratch, t: usize) -> Result<()> {
        self.check_rows(ws, t)
    }

    pub(crate) fn conv(&self, ws: &mut CudaScratch, l: usize, rows: Rows) -> Result<()> {
        self.check_rows(ws, rows.len())?;
        let inner = self.inner();
        let layer = layer(&inner, l)?;
        let e = self.hp.d_inner;
        let pool = inner.conv.get(l).ok_or_else(|| bad_slot(0, 0))?;
        let b = ws.bufs(&self.dev)?;
        let (x, y) = (
            self.view(&b.act[Act::Xz as usize], 0)?,
            self.view(&b.act[Act::Xc as usize], 0)?,
        );
        let (w, bias) = (self.view(&layer.conv_w, 0)?, self.view(&layer.conv_b, 0)?);
        let (sh, st, ids) = self.mixer_rows(pool, e * (CONV_K - 1), rows, inner.slots)?;
        // The x-projection's activations quantized in the same launch.
        let fuse = ops::matvec_stem(layer.ssm_x.ty).is_some();
        let q8 = self.q8a_views(b)?;
        let acts = q8.acts();
        b.q8a_of = None;
        let slots = state_slots(ids.as_deref(), &mut b.slot_ids, &b.slot_ids_held);
        let out = (&y, e);
        let r = ops::conv1d_silu(
            &self.dev,
            sh,
            &x,
            2 * e,
            &w,
            &bias,
            &st,
            slots,
            out,
            fuse.then_some(&acts),
        );
        held_ids(&mut b.slot_ids_held, ids, r.is_ok());
        r?;
        b.q8a_of = fuse.then_some((Act::Xc, rows.len()));
        Ok(())
    }

    /// A mixer launch's shape and state view for `rows`, each entry `per`
    /// values: one slot's entry for a chunk, the whole pool and the slot ids
    /// for a batch of sequences.
    fn mixer_rows(
        &self,
        pool: &Buffer<f32>,
        per: usize,
        rows: Rows,
        slots: usize,
    ) -> Result<(MixerShape, View, Option<Vec<i32>>)> {
        let e = self.hp.d_inner;
        match rows {
            Rows::Chunk { slot, t } => {
                if slot >= slots {
                    return Err(bad_slot(slot, slots));
                }
                let st = self.dev.view(pool, slot * per, per)?;
                Ok((MixerShape { e, t, seqs: 1 }, st, None))
            }
            Rows::Seqs(ss) => {
                let ids = slot_ids(ss, slots)?;
                let sh = MixerShape {
                    e,
                    t: 1,
                    seqs: ss.len(),
                };
                Ok((sh, self.view(pool, 0)?, Some(ids)))
            }
        }
    }

    pub(crate) fn dt_b_c_rms(&self, ws: &mut CudaScratch, t: usize) -> Result<()> {
        self.check_rows(ws, t)?;
        let inner = self.inner();
        let (r, n) = (self.hp.dt_rank, self.hp.d_state);
        let b = ws.bufs(&self.dev)?;
        // The dt matmul's activations (dt_in) quantized in the same launch
        // (the op has no layer: when every layer's dt weight is quantized; a
        // layer whose weight is not just leaves them unread).
        let fuse = dt_quantized(&inner);
        if b.norm3_done.take() == Some(t) {
            // The x-projection's launch did it (and dt_in's Q8A when fused).
            b.q8a_of = (fuse && r % 32 == 0).then_some((Act::DtIn, t));
            return Ok(());
        }
        let q8 = self.q8a_views(b)?;
        let acts = q8.acts();
        b.q8a_of = None;
        ops::rms_norm3(
            &self.dev,
            &self.view(&b.act[Act::Xdbl as usize], 0)?,
            t,
            r + 2 * n,
            [0, r, r + n],
            [r, n, n],
            self.hp.dt_b_c_eps,
            fuse.then_some(&acts),
        )?;
        b.q8a_of = fuse.then_some((Act::DtIn, t));
        Ok(())
    }

    /// Fused into the dt matmul (see the module docs).
    pub(crate) fn split_dt(&self, ws: &mut CudaScratch, t: usize) -> Result<()> {
        self.check_rows(ws, t)
    }

    /// Fused into [`scan`](Self::scan) (see the module docs).
    pub(crate) fn dt_softplus(&self, ws: &mut CudaScratch, _l: usize, t: usize) -> Result<()> {
        self.check_rows(ws, t)
    }

    pub(crate) fn scan(&self, ws: &mut CudaScratch, l: usize, rows: Rows) -> Result<()> {
        self.check_rows(ws, rows.len())?;
        let inner = self.inner();
        let layer = layer(&inner, l)?;
        let hp = &self.hp;
        let (e, n, r) = (hp.d_inner, hp.d_state, hp.dt_rank);
        let pool = inner.ssm.get(l).ok_or_else(|| bad_slot(0, 0))?;
        let b = ws.bufs(&self.dev)?;
        let (x, dt, z, bc, y) = (
            self.view(&b.act[Act::Xc as usize], 0)?,
            self.view(&b.act[Act::Dt as usize], 0)?,
            self.view(&b.act[Act::Xz as usize], e)?,
            self.view(&b.act[Act::Xdbl as usize], 0)?,
            self.view(&b.act[Act::Y as usize], 0)?,
        );
        let (a, d, dt_bias) = (
            self.view(&layer.a, 0)?,
            self.view(&layer.d, 0)?,
            self.view(&layer.dt_b, 0)?,
        );
        let inp = ScanInputs {
            x: &x,
            dt: &dt,
            z: &z,
            z_stride: 2 * e,
            bc: &bc,
            bc_stride: r + 2 * n,
            b_off: r,
            a: &a,
            d: &d,
            dt_bias: &dt_bias,
        };
        let (sh, st, ids) = self.mixer_rows(pool, e * n, rows, inner.slots)?;
        // The out-projection's activations quantized in the same launch.
        let fuse = ops::matvec_stem(layer.ssm_out.ty).is_some();
        let q8 = self.q8a_views(b)?;
        let acts = q8.acts();
        b.q8a_of = None;
        let slots = state_slots(ids.as_deref(), &mut b.slot_ids, &b.slot_ids_held);
        let r = ops::selective_scan(&self.dev, sh, &inp, &st, slots, &y, fuse.then_some(&acts));
        held_ids(&mut b.slot_ids_held, ids, r.is_ok());
        r?;
        b.q8a_of = fuse.then_some((Act::Y, rows.len()));
        Ok(())
    }

    /// Fused into the out-projection (see the module docs); a plain add
    /// when that did not run.
    pub(crate) fn residual(&self, ws: &mut CudaScratch, t: usize) -> Result<()> {
        self.check_rows(ws, t)?;
        let _inner = self.inner();
        let d = self.hp.n_embd;
        let b = ws.bufs(&self.dev)?;
        if std::mem::take(&mut b.out_in_x) {
            return Ok(());
        }
        let (x, out) = (
            self.view(&b.act[Act::X as usize], 0)?,
            self.view(&b.act[Act::Out as usize], 0)?,
        );
        ops::add(&self.dev, &x, &out, &x, t * d)?;
        Ok(())
    }

    /// The final norm and the LM head over X rows `rows`, [`HEAD_ROWS`] at
    /// a time: once a group of `nc` rows is in the logits buffer,
    /// `then(bufs, group's first row - rows.start, nc)`.
    fn head_groups(
        &self,
        ws: &mut CudaScratch,
        rows: std::ops::Range<usize>,
        mut then: impl FnMut(&Bufs, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let d = self.hp.n_embd;
        check_range(ws.rows, &rows)?;
        let inner = self.inner();
        let per = ws.head_rows();
        let b = ws.bufs(&self.dev)?;
        b.q8a_of = None;
        let fuse = ops::matvec_stem(inner.output.ty).is_some();
        for r0 in rows.clone().step_by(per) {
            let nc = per.min(rows.end - r0);
            let (x, w) = (
                self.view(&b.act[Act::X as usize], r0 * d)?,
                self.view(&inner.output_norm, 0)?,
            );
            // The head's activations quantized in the norm's launch.
            self.norm_into_h(b, &x, &w, nc, fuse)?;
            let hb = (&b.act[Act::H as usize], d);
            self.gemm(b, &inner.output, hb, nc, &b.logits, false, fuse)?;
            then(b, r0 - rows.start, nc)?;
        }
        Ok(())
    }

    pub(crate) fn head(
        &self,
        ws: &mut CudaScratch,
        rows: std::ops::Range<usize>,
        logits: &mut [f32],
    ) -> Result<()> {
        let v = self.hp.n_vocab;
        let logits = prefix_mut(logits, rows.len() * v, "logits")?;
        self.head_groups(ws, rows, |b, at, nc| {
            let dst = &mut logits[at * v..(at + nc) * v];
            Ok(self.dev.read_at(&b.logits, 0, dst)?)
        })
    }

    /// The head, then `argmax_f32` over each group's logits on the device:
    /// two ints per row cross to the host, not V floats.
    pub(crate) fn greedy(
        &self,
        ws: &mut CudaScratch,
        rows: std::ops::Range<usize>,
        out: &mut [Greedy],
    ) -> Result<()> {
        let v = self.hp.n_vocab;
        let out = prefix_mut(out, rows.len(), "greedy ids")?;
        let mut picks = vec![0i32; 2 * ws.head_rows()];
        self.head_groups(ws, rows, |b, at, nc| {
            let (logits, dst) = (self.view(&b.logits, 0)?, self.view(&b.picks, 0)?);
            ops::argmax(&self.dev, &logits, nc, v, &dst)?;
            let picks = &mut picks[..2 * nc];
            self.dev.read_at(&b.picks, 0, picks)?;
            // Per row: the index of the max, the first NaN's or -1.
            for (o, p) in out[at..at + nc].iter_mut().zip(picks.chunks_exact(2)) {
                *o = match u32::try_from(p[1]) {
                    Ok(nan) => Greedy::Nan(nan),
                    Err(_) => Greedy::Id(u32::try_from(p[0]).unwrap_or(0)),
                };
            }
            Ok(())
        })
    }

    /// The head, then `topk_f32` over each group's logits on the device:
    /// k (value, index) pairs per row cross to the host, not V floats.
    pub(crate) fn top_k(
        &self,
        ws: &mut CudaScratch,
        rows: std::ops::Range<usize>,
        k: usize,
        out: &mut [TopK],
    ) -> Result<()> {
        let v = self.hp.n_vocab;
        check_top_k(k, v)?;
        let out = prefix_mut(out, rows.len(), "top-k lists")?;
        let mut got = vec![0i32; ws.head_rows() * (2 * k + 1)];
        self.head_groups(ws, rows, |b, at, nc| {
            let (logits, vals, ids, nans) = (
                self.view(&b.logits, 0)?,
                self.view(&b.top, 0)?,
                self.view(&b.top, nc * k)?,
                self.view(&b.top, 2 * nc * k)?,
            );
            ops::top_k(&self.dev, &logits, nc, v, k, &vals, &ids, &nans)?;
            // One copy back (each is a wait on the device).
            let got = &mut got[..nc * (2 * k + 1)];
            self.dev.read_at(&b.top, 0, got)?;
            let (vals, rest) = got.split_at(nc * k);
            let (ids, nan) = rest.split_at(nc * k);
            for (j, o) in out[at..at + nc].iter_mut().enumerate() {
                let row = j * k..(j + 1) * k;
                o.cands.clear();
                o.cands
                    .extend(ids[row.clone()].iter().zip(&vals[row]).map(|(&i, &bits)| {
                        (u32::try_from(i).unwrap_or(0), f32::from_bits(bits as u32))
                    }));
                // The kernel writes them in no order.
                o.cands.sort_unstable_by(crate::sampler::by_logit);
                o.nan = u32::try_from(nan[j]).ok();
            }
            Ok(())
        })
    }

    pub(crate) fn read_act(
        &self,
        ws: &mut CudaScratch,
        act: Act,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let w = self.widths()[act as usize];
        check_range(ws.rows, &rows)?;
        let out = prefix_mut(out, rows.len() * w, "rows of an activation")?;
        let _inner = self.inner();
        let b = ws.bufs(&self.dev)?;
        self.dev
            .read_at(&b.act[act as usize], rows.start * w, out)?;
        Ok(())
    }

    pub(crate) fn write_x(&self, ws: &mut CudaScratch, row: usize, x: &[f32]) -> Result<()> {
        let d = self.hp.n_embd;
        let rows = row..row + whole_rows(x, d)?;
        check_range(ws.rows, &rows)?;
        let _inner = self.inner();
        let b = ws.bufs(&self.dev)?;
        b.q8a_of = None;
        self.dev.write_at(&mut b.act[Act::X as usize], row * d, x)?;
        Ok(())
    }

    // ---- the state pool ----

    fn state_widths(&self) -> (usize, usize) {
        let hp = &self.hp;
        ((hp.d_conv - 1) * hp.d_inner, hp.d_inner * hp.d_state)
    }

    pub(crate) fn reserve_slots(&self, n: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut inner = self.inner();
        if n <= inner.slots {
            return Ok(());
        }
        let old = inner.slots;
        let mut conv = Vec::with_capacity(self.hp.n_layer);
        let mut ssm = Vec::with_capacity(self.hp.n_layer);
        for l in 0..self.hp.n_layer {
            let mut c = self.dev.alloc::<f32>(n * cw)?;
            let mut s = self.dev.alloc::<f32>(n * sw)?;
            if old > 0 {
                // Growing is rare (a new slot past --parallel): through the host.
                let (oc, os) = (&inner.conv[l], &inner.ssm[l]);
                self.dev.write_at(&mut c, 0, &self.dev.read(oc)?)?;
                self.dev.write_at(&mut s, 0, &self.dev.read(os)?)?;
            }
            conv.push(c);
            ssm.push(s);
        }
        inner.conv = conv;
        inner.ssm = ssm;
        inner.slots = n;
        Ok(())
    }

    pub(crate) fn zero_slot(&self, slot: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut inner = self.inner();
        if slot >= inner.slots {
            return Err(bad_slot(slot, inner.slots));
        }
        let Inner { conv, ssm, .. } = &mut *inner;
        for c in conv.iter_mut() {
            self.dev.zero_at(c, slot * cw, cw)?;
        }
        for s in ssm.iter_mut() {
            self.dev.zero_at(s, slot * sw, sw)?;
        }
        Ok(())
    }

    pub(crate) fn copy_slot(&self, from: usize, to: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut inner = self.inner();
        for i in [from, to] {
            if i >= inner.slots {
                return Err(bad_slot(i, inner.slots));
            }
        }
        let Inner { conv, ssm, .. } = &mut *inner;
        for c in conv.iter_mut() {
            self.dev.copy_within(c, from * cw, to * cw, cw)?;
        }
        for s in ssm.iter_mut() {
            self.dev.copy_within(s, from * sw, to * sw, sw)?;
        }
        Ok(())
    }

    /// The host form: conv `[K-1][E]` (the device keeps `[E][K-1]`), SSM
    /// `[E][N]` as on the device.
    pub(crate) fn read_slot(&self, slot: usize) -> Result<State> {
        let (cw, sw) = self.state_widths();
        let (e, k1) = (self.hp.d_inner, self.hp.d_conv - 1);
        let inner = self.inner();
        if slot >= inner.slots {
            return Err(bad_slot(slot, inner.slots));
        }
        let mut layers = Vec::with_capacity(self.hp.n_layer);
        let mut dc = vec![0.0f32; cw];
        for (c, s) in inner.conv.iter().zip(&inner.ssm) {
            self.dev.read_at(c, slot * cw, &mut dc)?;
            let mut conv = vec![0.0f32; cw];
            for ch in 0..e {
                for k in 0..k1 {
                    conv[k * e + ch] = dc[ch * k1 + k];
                }
            }
            let mut ssm = vec![0.0f32; sw];
            self.dev.read_at(s, slot * sw, &mut ssm)?;
            layers.push(LayerState { conv, ssm });
        }
        Ok(State { layers })
    }

    pub(crate) fn write_slot(&self, slot: usize, st: &State) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let (e, k1) = (self.hp.d_inner, self.hp.d_conv - 1);
        if !st.fits(&self.hp) {
            return Err(ModelError::ForeignState {
                what: "the state".into(),
            });
        }
        let mut inner = self.inner();
        if slot >= inner.slots {
            return Err(bad_slot(slot, inner.slots));
        }
        let Inner { conv, ssm, .. } = &mut *inner;
        let mut dc = vec![0.0f32; cw];
        for ((c, s), ls) in conv.iter_mut().zip(ssm.iter_mut()).zip(&st.layers) {
            for ch in 0..e {
                for k in 0..k1 {
                    dc[ch * k1 + k] = ls.conv[k * e + ch];
                }
            }
            self.dev.write_at(c, slot * cw, &dc)?;
            self.dev.write_at(s, slot * sw, &ls.ssm)?;
        }
        Ok(())
    }

    pub(crate) fn slot_bytes(&self) -> usize {
        let (cw, sw) = self.state_widths();
        4 * self.hp.n_layer * (cw + sw)
    }
}

/// Views of a workspace's Q8A buffers (q, d, s).
struct Q8aViews([View; 3]);

impl Q8aViews {
    fn acts(&self) -> QActs<'_> {
        let [q, d, s] = &self.0;
        QActs { q, d, s }
    }
}

/// Every layer's dt weight is quantized: the dt/B/C norm also writes dt_in's
/// Q8A for the dt matmul (a layer whose weight is not just leaves it unread).
fn dt_quantized(inner: &Inner) -> bool {
    inner
        .layers
        .iter()
        .all(|l| ops::matvec_stem(l.ssm_dt.ty).is_some())
}

fn layer(inner: &Inner, l: usize) -> Result<&GpuLayer> {
    inner.layers.get(l).ok_or_else(|| ModelError::Backend {
        what: format!("no block {l} (the model has {})", inner.layers.len()),
    })
}

/// The kernels' state-slot argument: consecutive (one chunk's slot view), or
/// the batch's ids, uploaded through `buf` unless it already holds them
/// (`held`: an earlier launch of the step uploaded the same ids).
fn state_slots<'a>(
    ids: Option<&'a [i32]>,
    buf: &'a mut Buffer<i32>,
    held: &[i32],
) -> StateSlots<'a> {
    match ids {
        Some(ids) if held == ids => StateSlots::Resident { ids, buf },
        Some(ids) => StateSlots::Indexed { ids, buf },
        None => StateSlots::Consecutive,
    }
}

/// What the slot-id buffer holds after a launch with `ids`: them when it
/// ran, nothing known when it failed (it may have failed before the upload).
fn held_ids(held: &mut Vec<i32>, ids: Option<Vec<i32>>, ok: bool) {
    match (ids, ok) {
        (Some(ids), true) => *held = ids,
        (Some(_), false) => held.clear(),
        (None, _) => {}
    }
}

/// A batch's slots as the kernels' ids, each checked against the pool.
fn slot_ids(ss: &[usize], slots: usize) -> Result<Vec<i32>> {
    ss.iter()
        .map(|&s| {
            if s < slots {
                i32::try_from(s).map_err(|_| bad_slot(s, slots))
            } else {
                Err(bad_slot(s, slots))
            }
        })
        .collect()
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}
