//! The backend seam: everything a device must implement to run the model.
//!
//! The forward pass is written once, device-independent, in
//! [`crate::model::block`] (one Mamba block) and `model/forward.rs` (embedding,
//! blocks, head). It calls the ops below on a [`Backend`], an enum over the
//! backends that exist (as candle's `QStorage` is), so nothing generic spreads
//! through `Session`, `Generate` or the server. A new device (CUDA, Metal,
//! Vulkan) is a new variant of [`Backend`] and of [`Workspace`] plus one
//! arm in each method here; this file is the whole contract. Two exist: the
//! CPU ([`cpu`]) and CUDA ([`cuda`], on a GPU or on the CPU emulator of the
//! CUDA execution model).
//!
//! What a backend owns:
//! * **the weights**, in its own memory, uploaded once at load (the CPU
//!   backend keeps them quantized in the memory-mapped file);
//! * **the state pool**: per layer one conv pool `[slots][K-1][E]` and one
//!   SSM pool `[slots][E][N]`, fp32, indexed by slot (as ggml's `ssm_scan`
//!   takes `ids`). A [`crate::Session`] holds one slot;
//! * **workspaces** ([`Workspace`]): the activation buffers of one forward
//!   over up to `rows` tokens, in backend memory. Ops read and write them
//!   by name ([`Act`]); nothing comes back to the host between ops. Only
//!   logits, or what decoding needs of them, (and host reads of a state
//!   slot) cross to the host.
//!
//! Decoding on a device keeps the logits there when it can:
//! [`greedy`](Backend::greedy) brings back one id per row instead of V
//! floats (260 KB per sequence and step for the 7B), and
//! [`top_k`](Backend::top_k) k candidates (all a sampler with a top-k cut
//! reads when no bias or penalty touches the other logits);
//! [`read_x`](Backend::read_x) brings the row of X they came from (`d`
//! floats), from which a [`crate::Session`] computes the logits later
//! ([`write_x`](Backend::write_x), then [`head`](Backend::head)) if anyone
//! asks for them. [`greedy_on_device`](Backend::greedy_on_device) says
//! whether a backend gains by it: the CPU's logits are host memory anyway,
//! so its `greedy` and `top_k` are `head` and a host pass.
//!
//! Shapes (row-major; t = rows of this forward, d = embedding, E = d_inner,
//! N = state size, R = dt rank, K = conv kernel, V = vocabulary):
//!
//! | op | reads | writes | what |
//! |---|---|---|---|
//! | [`embed`](Backend::embed) | ids `[t]` | X `[t][d]` | token_embd rows, dequantized |
//! | [`rms_norm`](Backend::rms_norm) | X `[t][d]` | H `[t][d]` | `x / sqrt(mean(x^2) + eps) * norm` of block `l` |
//! | [`matmul`](Backend::matmul) | src `[t][n_in]` | dst `[t][n_out]` | `dst[j] = W src[j]`, W quantized as in the file |
//! | [`silu_gate`](Backend::silu_gate) | Xz `[t][2E]` | Xz | `z <- silu(z)` on the second half of each row |
//! | [`conv`](Backend::conv) | Xz `[t][2E]`, conv slots | Xc `[t][E]`, conv slots | causal depthwise conv over x_in + bias, then SiLU |
//! | [`dt_b_c_rms`](Backend::dt_b_c_rms) | Xdbl `[t][R+2N]` | Xdbl | Falcon: weightless RMS norm of dt, B, C each |
//! | [`split_dt`](Backend::split_dt) | Xdbl `[t][R+2N]` | DtIn `[t][R]` | the dt columns, contiguous for dt_proj |
//! | [`dt_softplus`](Backend::dt_softplus) | Dt `[t][E]` | Dt | `softplus(dt + dt_bias)` of block `l` |
//! | [`scan`](Backend::scan) | Xz, Xc, Xdbl, Dt, ssm slots | Y `[t][E]`, ssm slots | selective scan, `+ x D`, times the gate |
//! | [`residual`](Backend::residual) | Out `[t][d]` | X `[t][d]` | `x += out` |
//! | [`head`](Backend::head) | X rows `a..b` | host logits `[b-a][V]` | final RMS norm, LM head |
//! | [`greedy`](Backend::greedy) | X rows `a..b` | host ids `[b-a]` | final RMS norm, LM head, argmax where the logits are |
//! | [`top_k`](Backend::top_k) | X rows `a..b` | host `[b-a]` lists of k (id, logit) | final RMS norm, LM head, the k largest where the logits are |
//! | [`read_x`](Backend::read_x) | X rows `a..b` | host `[b-a][d]` | the residual stream, to compute logits later |
//! | [`write_x`](Backend::write_x) | host `[t][d]` | X rows `a..a+t` | the residual stream back |
//!
//! Rows of X..Out are either `t` consecutive tokens of one sequence
//! ([`Rows::Chunk`]: conv and scan walk them in order on that sequence's
//! slot) or one token of each of `t` sequences ([`Rows::Seqs`]: row `j`'s
//! conv and scan use slot `slots[j]`). Every other op is row-wise or a
//! matmul, so it does not care which.
//!
//! A backend may fuse an op into the one op that reads its output, as long
//! as what the forward computes is unchanged: the CUDA backend applies
//! `silu_gate` and `dt_softplus` inside its scan kernel (both are no-ops
//! there, so Xz's gate half and Dt hold the values before those steps).
//!
//! State pool ops: [`reserve_slots`](Backend::reserve_slots),
//! [`zero_slot`](Backend::zero_slot), [`copy_slot`](Backend::copy_slot)
//! (fork, device to device), [`read_slot`](Backend::read_slot) and
//! [`write_slot`](Backend::write_slot) (the host form, [`State`], which the
//! state files and the prefix cache use, so a state saved from one backend
//! restores on another).
//!
//! Which slots are free is not the backend's business: [`crate::Model`]
//! hands out [`crate::state::StateSlot`]s and checks them before any op.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use std::str::FromStr;

use crate::error::{ModelError, Result};
use crate::sampler::{by_logit, keep_top};
use crate::state::State;

pub use cpu::profile::OpTime;
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaDevice};

/// The backends `--device` accepts, `auto` first.
#[cfg(feature = "cuda")]
pub const DEVICE_CHOICES: &[&str] = &["auto", "cpu", "cuda", "cuda:N", "cuda-emu"];
/// The backends `--device` accepts, `auto` first.
#[cfg(not(feature = "cuda"))]
pub const DEVICE_CHOICES: &[&str] = &["auto", "cpu"];

/// Whether the NVIDIA driver library can be loaded here (no driver call is
/// made; false in a build without the `cuda` feature).
pub fn cuda_driver_present() -> bool {
    #[cfg(feature = "cuda")]
    {
        mamba_cuda::cuda::driver_present()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Which backend to run on (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The best backend found: the first CUDA GPU when the driver, a device
    /// and the memory for the weights are there, else the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// CUDA GPU `n` (`cuda` is `cuda:0`); an error if unusable.
    #[cfg(feature = "cuda")]
    Cuda(usize),
    /// The CUDA backend on the CPU emulator of the CUDA execution model
    /// (slow; for testing the GPU path without a GPU).
    #[cfg(feature = "cuda")]
    CudaEmu,
}

impl FromStr for DeviceRequest {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let want = s.trim().to_ascii_lowercase();
        match want.as_str() {
            "auto" => return Ok(DeviceRequest::Auto),
            "cpu" => return Ok(DeviceRequest::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => return Ok(DeviceRequest::Cuda(0)),
            #[cfg(feature = "cuda")]
            "cuda-emu" => return Ok(DeviceRequest::CudaEmu),
            _ => {}
        }
        #[cfg(feature = "cuda")]
        if let Some(n) = want.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            return Ok(DeviceRequest::Cuda(n));
        }
        Err(ModelError::Device {
            requested: s.to_string(),
            choices: DEVICE_CHOICES.join(", "),
        })
    }
}

/// An activation buffer of a [`Workspace`] (shapes in the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `[t][d]` the residual stream.
    X,
    /// `[t][d]` RMS-normed input of a block (or of the head).
    H,
    /// `[t][2E]` in_proj output: x_in, then the gate z (silu(z) once gated).
    Xz,
    /// `[t][E]` conv output after SiLU.
    Xc,
    /// `[t][R+2N]` x_proj output: dt_in, B, C.
    Xdbl,
    /// `[t][R]` the dt_in columns of Xdbl, contiguous.
    DtIn,
    /// `[t][E]` dt_proj output, then softplus(dt + bias).
    Dt,
    /// `[t][E]` the gated scan output.
    Y,
    /// `[t][d]` out_proj output.
    Out,
}

impl Act {
    /// Every buffer, in declaration order.
    pub const ALL: [Act; 9] = [
        Act::X,
        Act::H,
        Act::Xz,
        Act::Xc,
        Act::Xdbl,
        Act::DtIn,
        Act::Dt,
        Act::Y,
        Act::Out,
    ];
}

/// A matrix of the model, as a matmul's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Block `l`'s in_proj `{d, 2E}`.
    In(usize),
    /// Block `l`'s x_proj `{E, R+2N}`.
    X(usize),
    /// Block `l`'s dt_proj `{R, E}`.
    Dt(usize),
    /// Block `l`'s out_proj `{E, d}`.
    Out(usize),
    /// The LM head `{d, V}` (the token embedding when tied).
    Head,
}

/// What the rows of a forward are (see the module docs).
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    /// `t` consecutive tokens of the sequence in state slot `slot`.
    Chunk { slot: usize, t: usize },
    /// One token of each sequence: row `j` is the sequence in `slots[j]`
    /// (distinct slots).
    Seqs(&'a [usize]),
}

impl Rows<'_> {
    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Chunk { t, .. } => *t,
            Rows::Seqs(s) => s.len(),
        }
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One position's greedy choice, made where its logits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greedy {
    /// The id of the largest logit, the lowest on ties.
    Id(u32),
    /// The logits hold a NaN; the first one's id.
    Nan(u32),
}

impl Greedy {
    /// The choice of host logits, as [`crate::sampler::argmax`] makes it
    /// (`Id(0)` when empty).
    pub fn of(logits: &[f32]) -> Greedy {
        match logits.iter().position(|l| l.is_nan()) {
            Some(i) => Greedy::Nan(i as u32),
            None => Greedy::Id(crate::sampler::argmax_logits(logits)),
        }
    }

    /// The id, or the error [`crate::sampler::argmax`] gives for NaN logits.
    pub fn id(self) -> Result<u32> {
        match self {
            Greedy::Id(id) => Ok(id),
            Greedy::Nan(id) => Err(ModelError::NanLogits { id }),
        }
    }
}

/// Refuses an empty row range or one past a workspace of `cap` rows.
pub(crate) fn check_range(cap: usize, rows: &std::ops::Range<usize>) -> Result<()> {
    if rows.is_empty() || rows.end > cap {
        return Err(ModelError::TooMany {
            n: rows.end,
            what: "rows",
            chunk: cap,
        });
    }
    Ok(())
}

/// Refuses a top-k cut outside `1..=min(V, TOP_K_MAX)`.
pub(crate) fn check_top_k(k: usize, vocab: usize) -> Result<()> {
    if k == 0 || k > vocab.min(TOP_K_MAX) {
        return Err(ModelError::Backend {
            what: format!(
                "top-k of {k}: the device brings back 1 to {} candidates",
                vocab.min(TOP_K_MAX)
            ),
        });
    }
    Ok(())
}

/// The first `need` items of a caller's output buffer, or the error naming
/// it (checked before anything runs).
pub(crate) fn prefix_mut<'a, T>(
    buf: &'a mut [T],
    need: usize,
    what: &'static str,
) -> Result<&'a mut [T]> {
    let have = buf.len();
    buf.get_mut(..need)
        .ok_or(ModelError::Buffer { what, need, have })
}

/// How many rows of `d` values `x` holds (whole rows, at least one).
pub(crate) fn whole_rows(x: &[f32], d: usize) -> Result<usize> {
    if x.is_empty() || !x.len().is_multiple_of(d) {
        return Err(ModelError::Buffer {
            what: "rows of X (whole rows of n_embd values)",
            need: x.len().div_ceil(d).max(1) * d,
            have: x.len(),
        });
    }
    Ok(x.len() / d)
}

/// The most candidates [`Backend::top_k`] brings back per row.
pub const TOP_K_MAX: usize = 256;

/// One position's k largest logits, chosen where its logits are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopK {
    /// (id, logit) by logit descending, the lowest id first on ties (Rust's
    /// total order of floats: -0 below +0): the order the sampler sorts its
    /// candidates in.
    pub cands: Vec<(u32, f32)>,
    /// The first NaN logit's id, if any (the candidates mean nothing then).
    pub nan: Option<u32>,
}

impl TopK {
    /// The `k` largest of host logits (all of them when `k` >= their count).
    pub fn of(logits: &[f32], k: usize) -> TopK {
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        keep_top(&mut cands, k);
        cands.sort_unstable_by(by_logit);
        TopK {
            cands,
            nan: logits.iter().position(|l| l.is_nan()).map(|i| i as u32),
        }
    }

    /// The first `k` candidates, or the error [`crate::sampler::argmax`]
    /// gives for NaN logits.
    pub fn first(&self, k: usize) -> Result<&[(u32, f32)]> {
        match self.nan {
            Some(id) => Err(ModelError::NanLogits { id }),
            None => Ok(&self.cands[..k.min(self.cands.len())]),
        }
    }

    /// The greedy choice: the first candidate.
    pub fn greedy(&self) -> Greedy {
        match (self.nan, self.cands.first()) {
            (Some(id), _) => Greedy::Nan(id),
            (None, Some(&(id, _))) => Greedy::Id(id),
            (None, None) => Greedy::Id(0),
        }
    }
}

/// A backend: the weights, the state pool, and the ops.
#[derive(Debug)]
pub enum Backend {
    Cpu(CpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(CudaBackend),
}

/// The activation buffers of one forward over up to `rows` tokens, in the
/// memory of the backend that made it ([`Backend::workspace`]).
#[derive(Debug)]
pub enum Workspace {
    Cpu(cpu::Scratch),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaScratch),
}

impl Workspace {
    /// The most rows one forward may have.
    pub fn rows(&self) -> usize {
        match self {
            Workspace::Cpu(s) => s.rows(),
            #[cfg(feature = "cuda")]
            Workspace::Cuda(s) => s.rows(),
        }
    }

    /// Bytes held (device bytes for a device backend).
    pub fn bytes(&self) -> usize {
        match self {
            Workspace::Cpu(s) => s.bytes(),
            #[cfg(feature = "cuda")]
            Workspace::Cuda(s) => s.bytes(),
        }
    }
}

// Each op: one arm per backend; a workspace of another backend is an error
// (`ModelError::Backend`).
macro_rules! dispatch {
    ($self:ident, $ws:ident, |$b:ident, $w:ident| $body:expr) => {
        match ($self, $ws) {
            (Backend::Cpu($b), Workspace::Cpu($w)) => $body,
            #[cfg(feature = "cuda")]
            (Backend::Cuda($b), Workspace::Cuda($w)) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(ModelError::Backend {
                what: "a workspace of another backend".into(),
            }),
        }
    };
    // An op the CPU profile times as `$op` (see `cpu::profile`).
    ($self:ident, $ws:ident, $op:ident, |$b:ident, $w:ident| $body:expr) => {
        match ($self, $ws) {
            (Backend::Cpu($b), Workspace::Cpu($w)) => $b.timed(cpu::profile::Op::$op, || $body),
            #[cfg(feature = "cuda")]
            (Backend::Cuda($b), Workspace::Cuda($w)) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(ModelError::Backend {
                what: "a workspace of another backend".into(),
            }),
        }
    };
}

// State-pool ops: one arm per backend.
macro_rules! each {
    ($self:ident, |$b:ident| $body:expr) => {
        match $self {
            Backend::Cpu($b) => $body,
            #[cfg(feature = "cuda")]
            Backend::Cuda($b) => $body,
        }
    };
}

impl Backend {
    /// The backend `req` asks for, over a validated model's weights.
    pub fn new(req: DeviceRequest, weights: crate::model::Weights) -> Result<Backend> {
        match req {
            DeviceRequest::Cpu => Ok(Backend::Cpu(CpuBackend::new(weights)?)),
            #[cfg(feature = "cuda")]
            DeviceRequest::Auto => {
                // A GPU when one is usable for this model; any reason it is
                // not (no device, a driver that cannot load our kernels, no
                // room) means the CPU, which keeps the reason
                // ([`Backend::gpu_fallback`]). Without a driver there is no
                // GPU to explain.
                if mamba_cuda::cuda::driver_present() {
                    match CudaBackend::new(CudaDevice::Gpu(0), &weights) {
                        Ok(b) => return Ok(Backend::Cuda(b)),
                        Err(e) => {
                            let cpu = CpuBackend::new(weights)?;
                            return Ok(Backend::Cpu(cpu.instead_of_gpu(e.to_string())));
                        }
                    }
                }
                Ok(Backend::Cpu(CpuBackend::new(weights)?))
            }
            #[cfg(not(feature = "cuda"))]
            DeviceRequest::Auto => Ok(Backend::Cpu(CpuBackend::new(weights)?)),
            #[cfg(feature = "cuda")]
            DeviceRequest::Cuda(n) => Ok(Backend::Cuda(CudaBackend::new(
                CudaDevice::Gpu(n),
                &weights,
            )?)),
            #[cfg(feature = "cuda")]
            DeviceRequest::CudaEmu => Ok(Backend::Cuda(CudaBackend::new(
                CudaDevice::Emulator,
                &weights,
            )?)),
        }
    }

    /// Why `--device auto` runs on the CPU although an NVIDIA driver is
    /// present (no device, kernels the driver cannot load, too little
    /// memory), if it does.
    pub fn gpu_fallback(&self) -> Option<&str> {
        match self {
            Backend::Cpu(b) => b.fallback(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => None,
        }
    }

    /// The backend's name as llama-bench writes it ("CPU", "CUDA").
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu(_) => "CPU",
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => "CUDA",
        }
    }

    /// The device it runs on, for logs (e.g. "CPU (AVX2)": the SIMD path of
    /// the CPU kernels; the GPU's name and compute capability).
    pub fn device(&self) -> String {
        each!(self, |b| b.device())
    }

    /// A workspace for forwards of up to `rows` tokens (at least 1).
    pub fn workspace(&self, rows: usize) -> Workspace {
        match self {
            Backend::Cpu(b) => Workspace::Cpu(b.scratch(rows)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(b) => Workspace::Cuda(b.scratch(rows)),
        }
    }

    // ---- the forward's ops (shapes in the module table) ----

    /// X[j] = token_embd row `ids[j]` (ids checked by the caller).
    pub fn embed(&self, ws: &mut Workspace, ids: &[u32]) -> Result<()> {
        dispatch!(self, ws, Embed, |b, w| b.embed(w, ids))
    }

    /// H = rmsnorm(X) * block `l`'s norm weight, first `t` rows.
    pub fn rms_norm(&self, ws: &mut Workspace, l: usize, t: usize) -> Result<()> {
        dispatch!(self, ws, RmsNorm, |b, w| b.rms_norm(w, l, t))
    }

    /// dst[j] = W src[j] for the first `t` rows.
    pub fn matmul(
        &self,
        ws: &mut Workspace,
        wt: Weight,
        src: Act,
        dst: Act,
        t: usize,
    ) -> Result<()> {
        dispatch!(self, ws, |b, w| b.matmul(w, wt, src, dst, t))
    }

    /// The gate half of Xz: z <- silu(z).
    pub fn silu_gate(&self, ws: &mut Workspace, t: usize) -> Result<()> {
        dispatch!(self, ws, SiluGate, |b, w| b.silu_gate(w, t))
    }

    /// Xc = silu(conv1d(x_in) + bias) of block `l`, with the rows' conv states.
    pub fn conv(&self, ws: &mut Workspace, l: usize, rows: Rows) -> Result<()> {
        dispatch!(self, ws, Conv, |b, w| b.conv(w, l, rows))
    }

    /// Falcon Mamba: weightless RMS norm of dt_in, B and C in each Xdbl row.
    pub fn dt_b_c_rms(&self, ws: &mut Workspace, t: usize) -> Result<()> {
        dispatch!(self, ws, DtBcRms, |b, w| b.dt_b_c_rms(w, t))
    }

    /// DtIn = the first R columns of Xdbl.
    pub fn split_dt(&self, ws: &mut Workspace, t: usize) -> Result<()> {
        dispatch!(self, ws, SplitDt, |b, w| b.split_dt(w, t))
    }

    /// Dt = softplus(Dt + block `l`'s dt bias).
    pub fn dt_softplus(&self, ws: &mut Workspace, l: usize, t: usize) -> Result<()> {
        dispatch!(self, ws, DtSoftplus, |b, w| b.dt_softplus(w, l, t))
    }

    /// Y = (selective scan + x D) * silu(z) of block `l`, with the rows' SSM
    /// states.
    pub fn scan(&self, ws: &mut Workspace, l: usize, rows: Rows) -> Result<()> {
        dispatch!(self, ws, Scan, |b, w| b.scan(w, l, rows))
    }

    /// X += Out, first `t` rows.
    pub fn residual(&self, ws: &mut Workspace, t: usize) -> Result<()> {
        dispatch!(self, ws, Residual, |b, w| b.residual(w, t))
    }

    /// Final RMS norm of X rows `rows`, then the LM head: `logits` (host)
    /// gets `[rows.len()][V]`.
    pub fn head(
        &self,
        ws: &mut Workspace,
        rows: std::ops::Range<usize>,
        logits: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, ws, |b, w| b.head(w, rows, logits))
    }

    /// [`head`](Self::head), then each row's greedy choice where the logits
    /// are: `out` (host) gets `[rows.len()]` picks, and only they cross to
    /// the host on a device. The choice is [`Greedy::of`] the row's logits.
    pub fn greedy(
        &self,
        ws: &mut Workspace,
        rows: std::ops::Range<usize>,
        out: &mut [Greedy],
    ) -> Result<()> {
        dispatch!(self, ws, |b, w| b.greedy(w, rows, out))
    }

    /// [`head`](Self::head), then each row's `k` largest logits where the
    /// logits are (`1 <= k <= min(V, TOP_K_MAX)`): `out` (host) gets
    /// `[rows.len()]` lists, [`TopK::of`] the row's logits; on a device only
    /// they cross to the host.
    pub fn top_k(
        &self,
        ws: &mut Workspace,
        rows: std::ops::Range<usize>,
        k: usize,
        out: &mut [TopK],
    ) -> Result<()> {
        dispatch!(self, ws, |b, w| b.top_k(w, rows, k, out))
    }

    /// Runs `f`, the blocks of one decode step, as the device runs a step
    /// best: on the CPU with the threads kept awake between its parallel
    /// ops instead of woken for each (`cpu::team`).
    pub fn step<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Backend::Cpu(b) => b.step(f),
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => f(),
        }
    }

    /// Zeroes and starts the per-op profile (`bench --profile`): `false`,
    /// and nothing timed, on a GPU, whose ops the host only queues.
    pub fn profile_start(&self) -> bool {
        match self {
            Backend::Cpu(b) => {
                b.profile_start();
                true
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => false,
        }
    }

    /// Stops the per-op profile: each op's calls, wall time and weight
    /// bytes since [`profile_start`](Self::profile_start), in forward order
    /// (empty on a GPU).
    pub fn profile_stop(&self) -> Vec<OpTime> {
        match self {
            Backend::Cpu(b) => b.profile_stop(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => Vec::new(),
        }
    }

    /// Whether [`greedy`](Self::greedy) keeps the logits off the host (a
    /// GPU, or its emulator). On the CPU the logits are host memory anyway.
    pub fn greedy_on_device(&self) -> bool {
        !matches!(self, Backend::Cpu(_))
    }

    /// `out` (host, `[rows.len()][d]`) = X rows `rows`.
    pub fn read_x(
        &self,
        ws: &mut Workspace,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        self.read_act(ws, Act::X, rows, out)
    }

    /// Values per row of the activation buffer `act`.
    pub fn act_width(&self, act: Act) -> usize {
        each!(self, |b| b.widths()[act as usize])
    }

    /// `out` (host, `[rows.len()][width of act]`) = rows `rows` of the
    /// activation buffer `act`, as the ops so far left it (the importance
    /// matrix reads each matmul's input this way).
    pub fn read_act(
        &self,
        ws: &mut Workspace,
        act: Act,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, ws, |b, w| b.read_act(w, act, rows, out))
    }

    /// X rows `row..row + x.len() / d` = `x` (host, whole rows).
    pub fn write_x(&self, ws: &mut Workspace, row: usize, x: &[f32]) -> Result<()> {
        dispatch!(self, ws, |b, w| b.write_x(w, row, x))
    }

    // ---- the state pool ----

    /// Makes room for slots `0..n` (allocated once; never shrinks).
    pub fn reserve_slots(&self, n: usize) -> Result<()> {
        each!(self, |b| b.reserve_slots(n))
    }

    /// Slot `slot` back to the start of a sequence (zeros).
    pub fn zero_slot(&self, slot: usize) -> Result<()> {
        each!(self, |b| b.zero_slot(slot))
    }

    /// Slot `to` = slot `from`, on the device (fork).
    pub fn copy_slot(&self, from: usize, to: usize) -> Result<()> {
        each!(self, |b| b.copy_slot(from, to))
    }

    /// The host form of slot `slot`.
    pub fn read_slot(&self, slot: usize) -> Result<State> {
        each!(self, |b| b.read_slot(slot))
    }

    /// Slot `slot` = `state` (shapes checked).
    pub fn write_slot(&self, slot: usize, state: &State) -> Result<()> {
        each!(self, |b| b.write_slot(slot, state))
    }

    /// Bytes of one slot's state.
    pub fn slot_bytes(&self) -> usize {
        each!(self, |b| b.slot_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_of_host_logits_is_the_lowest_id_of_the_max_or_the_first_nan() {
        assert_eq!(Greedy::of(&[1.0, 3.0, 2.0, 3.0]), Greedy::Id(1));
        assert_eq!(Greedy::of(&[f32::NEG_INFINITY; 3]), Greedy::Id(0));
        assert_eq!(Greedy::of(&[0.0, f32::INFINITY, 5.0]), Greedy::Id(1));
        assert_eq!(Greedy::of(&[9.0, f32::NAN, 1.0, f32::NAN]), Greedy::Nan(1));
        assert_eq!(Greedy::of(&[]), Greedy::Id(0));
        assert_eq!(Greedy::Id(4).id().ok(), Some(4));
        assert!(matches!(
            Greedy::Nan(2).id(),
            Err(ModelError::NanLogits { id: 2 })
        ));
    }
}
