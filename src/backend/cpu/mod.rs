//! The CPU backend: weights stay quantized in the memory-mapped GGUF, each
//! matmul quantizes its activations once and runs the quant crate's SIMD
//! kernels over row ranges on rayon's current pool ([`matmul`]); the conv and
//! the norms are row-parallel over a chunk ([`ops`]); the selective scan has
//! its AVX2 fast paths ([`scan`]). Activations live in a [`Scratch`] of host
//! `Vec`s, states in a slot-indexed pool of host `Vec`s.

mod matmul;
mod ops;
pub(crate) mod profile;
mod scan;
pub(crate) mod team;

use std::sync::{Arc, Mutex, MutexGuard};

use gguf::{GgufFile, TensorInfo};
use quant::Kernel;

use super::{check_range, check_top_k, prefix_mut, whole_rows, Act, Greedy, Rows, TopK, Weight};
use crate::error::{ModelError, Result};
use crate::model::{Hparams, Mat, Weights};
use crate::state::{LayerState, State};

use matmul::{act_bytes, matmul};
use ops::{conv, each_col_part, each_row, rms_norm, rms_norm_inplace};
use profile::{Op, OpTime, Profile};

/// A weight matrix with its CPU kernel: `n_out` rows of `n_in` values of the
/// kernel's weight type, contiguous in the mapped file.
#[derive(Clone, Debug)]
pub(crate) struct CpuMat {
    pub(crate) name: String,
    pub(crate) kernel: Kernel,
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
    /// Bytes of one row.
    pub(crate) row_bytes: usize,
    info: TensorInfo,
}

impl CpuMat {
    fn new(m: Mat) -> Result<CpuMat> {
        let kernel = quant::kernel(m.ty).ok_or_else(|| ModelError::TensorType {
            file: String::new(),
            name: m.name.clone(),
            ty: m.ty,
            what: "has no matmul kernel".into(),
        })?;
        Ok(CpuMat {
            name: m.name,
            kernel,
            n_in: m.n_in,
            n_out: m.n_out,
            row_bytes: m.row_bytes,
            info: m.info,
        })
    }
}

/// One block's parameters (shapes as in [`crate::model::Layer`]).
#[derive(Debug)]
struct CpuLayer {
    norm: Vec<f32>,
    ssm_in: CpuMat,
    /// [K][E], tap-major.
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    ssm_x: CpuMat,
    ssm_dt: CpuMat,
    dt_b: Vec<f32>,
    /// [E][N] A = -exp(A_log)
    a: Vec<f32>,
    d: Vec<f32>,
    ssm_out: CpuMat,
}

/// The state pool: per layer, slot `s`'s conv state is
/// `conv[l][s*cw..(s+1)*cw]` (`[K-1][E]`) and its SSM state
/// `ssm[l][s*sw..(s+1)*sw]` (`[E][N]`).
#[derive(Debug, Default)]
struct Pool {
    slots: usize,
    conv: Vec<Vec<f32>>,
    ssm: Vec<Vec<f32>>,
}

/// The CPU backend (see the module docs).
#[derive(Debug)]
pub struct CpuBackend {
    file: Arc<GgufFile>,
    hp: Hparams,
    tok_embd: CpuMat,
    layers: Vec<CpuLayer>,
    output_norm: Vec<f32>,
    output: CpuMat,
    pool: Mutex<Pool>,
    /// Why `--device auto` did not take the GPU it found, if it did not.
    fallback: Option<String>,
    /// Per-op wall time, summed while `bench --profile` has it on.
    profile: Box<Profile>,
}

/// The activation buffers of one forward over up to `rows` tokens: the
/// [`Act`] buffers (`[rows][width]` each) plus the matmuls' scratch.
/// Sized once, so prefill and decode allocate nothing per token.
#[derive(Debug)]
pub struct Scratch {
    rows: usize,
    /// Indexed by `Act as usize`.
    bufs: [Vec<f32>; 9],
    /// Quantized activations of one matmul.
    act: Vec<u8>,
    /// Per-task matmul output blocks.
    tmp: Vec<f32>,
}

impl Scratch {
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn bytes(&self) -> usize {
        4 * (self.bufs.iter().map(Vec::capacity).sum::<usize>() + self.tmp.capacity())
            + self.act.capacity()
    }
}

fn bad_slot(slot: usize, slots: usize) -> ModelError {
    ModelError::Backend {
        what: format!("state slot {slot} outside the pool of {slots}"),
    }
}

/// A slot's part of a per-layer pool.
fn slot_of(pool: &mut [f32], slot: usize, w: usize) -> &mut [f32] {
    &mut pool[slot * w..(slot + 1) * w]
}

impl CpuBackend {
    pub(crate) fn new(w: Weights) -> Result<CpuBackend> {
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(CpuLayer {
                    norm: l.norm,
                    ssm_in: CpuMat::new(l.ssm_in)?,
                    conv_w: l.conv_w,
                    conv_b: l.conv_b,
                    ssm_x: CpuMat::new(l.ssm_x)?,
                    ssm_dt: CpuMat::new(l.ssm_dt)?,
                    dt_b: l.dt_b,
                    a: l.a,
                    d: l.d,
                    ssm_out: CpuMat::new(l.ssm_out)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n = layers.len();
        Ok(CpuBackend {
            file: w.file,
            hp: w.hp,
            tok_embd: CpuMat::new(w.tok_embd)?,
            layers,
            output_norm: w.output_norm,
            output: CpuMat::new(w.output)?,
            pool: Mutex::new(Pool {
                slots: 0,
                conv: vec![Vec::new(); n],
                ssm: vec![Vec::new(); n],
            }),
            fallback: None,
            profile: Box::default(),
        })
    }

    /// This backend, chosen by `--device auto` because the GPU it found was
    /// not usable for `why`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn instead_of_gpu(mut self, why: String) -> Self {
        self.fallback = Some(why);
        self
    }

    /// `f()`, timed as `op` while the profile is on (the ops the backend
    /// dispatcher times; matmuls and the head time themselves).
    pub(crate) fn timed<T>(&self, op: Op, f: impl FnOnce() -> T) -> T {
        self.profile.time(op, 0, f)
    }

    /// `f` (a forward's blocks) with the pool's threads kept awake between
    /// its parallel ops (see [`team`]).
    pub(crate) fn step<R>(&self, f: impl FnOnce() -> R) -> R {
        team::with_team(f)
    }

    /// Zeroes and starts the per-op profile.
    pub(crate) fn profile_start(&self) {
        self.profile.start()
    }

    /// Stops the per-op profile: each op's totals since the start.
    pub(crate) fn profile_stop(&self) -> Vec<OpTime> {
        self.profile.stop()
    }

    /// Why `--device auto` chose the CPU over a GPU it found, if it did.
    pub(crate) fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    pub(crate) fn device(&self) -> String {
        let path = format!("{:?}", self.output.kernel.path).to_ascii_uppercase();
        match &self.fallback {
            Some(why) => format!("CPU ({path}; the GPU was not used: {why})"),
            None => format!("CPU ({path})"),
        }
    }

    /// A weight's bytes in the mapped file (length checked at load).
    fn data(&self, m: &CpuMat) -> &[u8] {
        self.file.tensor_data(&m.info)
    }

    fn layer(&self, l: usize) -> Result<&CpuLayer> {
        self.layers.get(l).ok_or_else(|| ModelError::Backend {
            what: format!("no block {l} (the model has {})", self.layers.len()),
        })
    }

    fn mat(&self, w: Weight) -> Result<&CpuMat> {
        Ok(match w {
            Weight::In(l) => &self.layer(l)?.ssm_in,
            Weight::X(l) => &self.layer(l)?.ssm_x,
            Weight::Dt(l) => &self.layer(l)?.ssm_dt,
            Weight::Out(l) => &self.layer(l)?.ssm_out,
            Weight::Head => &self.output,
        })
    }

    /// Widths of the [`Act`] buffers.
    pub(crate) fn widths(&self) -> [usize; 9] {
        let hp = &self.hp;
        let (d, e, r, n) = (hp.n_embd, hp.d_inner, hp.dt_rank, hp.d_state);
        [d, d, 2 * e, e, r + 2 * n, r, e, e, d]
    }

    pub(crate) fn scratch(&self, rows: usize) -> Scratch {
        let c = rows.max(1);
        let mut act = 0;
        let mut out_rows = 0;
        for l in &self.layers {
            for m in [&l.ssm_in, &l.ssm_x, &l.ssm_dt, &l.ssm_out] {
                act = act.max(act_bytes(m, c));
                out_rows = out_rows.max(m.n_out);
            }
        }
        act = act.max(act_bytes(&self.output, 1));
        let w = self.widths();
        Scratch {
            rows: c,
            bufs: std::array::from_fn(|i| vec![0.0; c * w[i]]),
            act: Vec::with_capacity(act),
            tmp: Vec::with_capacity(c * out_rows),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_widths(&self) -> (usize, usize) {
        let hp = &self.hp;
        (
            hp.d_conv.saturating_sub(1) * hp.d_inner,
            hp.d_inner * hp.d_state,
        )
    }

    // ---- ops ----

    pub(crate) fn embed(&self, s: &mut Scratch, ids: &[u32]) -> Result<()> {
        let (d, v) = (self.hp.n_embd, self.hp.n_vocab);
        let emb = self.data(&self.tok_embd);
        let rb = self.tok_embd.row_bytes;
        let x = &mut s.bufs[Act::X as usize];
        for (&id, xr) in ids.iter().zip(x.chunks_exact_mut(d)) {
            let i = id as usize;
            let row = emb
                .get(i * rb..(i + 1) * rb)
                .filter(|_| i < v)
                .ok_or(ModelError::Token { id, vocab: v })?;
            quant::dequantize_row(self.tok_embd.kernel.weight, row, xr).map_err(|source| {
                ModelError::Quant {
                    name: self.tok_embd.name.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    pub(crate) fn rms_norm(&self, s: &mut Scratch, l: usize, t: usize) -> Result<()> {
        let layer = self.layer(l)?;
        let (d, eps) = (self.hp.n_embd, self.hp.norm_eps);
        let [x, h, ..] = &mut s.bufs;
        let x = &x[..];
        each_row(h, d, t, |j, hr| {
            rms_norm(&x[j * d..(j + 1) * d], Some(&layer.norm), eps, hr)
        });
        Ok(())
    }

    pub(crate) fn matmul(
        &self,
        s: &mut Scratch,
        w: Weight,
        src: Act,
        dst: Act,
        t: usize,
    ) -> Result<()> {
        let m = self.mat(w)?;
        let (a, b) = (src as usize, dst as usize);
        if a == b {
            return Err(ModelError::Backend {
                what: format!("matmul {} from {src:?} into itself", m.name),
            });
        }
        // Two distinct buffers of the array: split between them.
        let (x, out) = if a < b {
            let (lo, hi) = s.bufs.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = s.bufs.split_at_mut(a);
            (&hi[0], &mut lo[b])
        };
        let bytes = m.n_out * m.row_bytes;
        self.profile.time(Op::of(w), bytes, || {
            matmul(m, self.data(m), x, t, out, &mut s.act, &mut s.tmp)
        })
    }

    pub(crate) fn silu_gate(&self, s: &mut Scratch, t: usize) -> Result<()> {
        let e = self.hp.d_inner;
        // The gate silu(z) only ever enters as a factor: apply it to the z
        // half of each row here, eight lanes at a time, instead of per
        // channel in the scan.
        let xz = &mut s.bufs[Act::Xz as usize];
        if t == 1 {
            each_col_part(&mut xz[e..2 * e], |_, c| quant::math::silu_slice(c));
        } else {
            each_row(xz, 2 * e, t, |_, row| {
                quant::math::silu_slice(&mut row[e..])
            });
        }
        Ok(())
    }

    pub(crate) fn conv(&self, s: &mut Scratch, l: usize, rows: Rows) -> Result<()> {
        let layer = self.layer(l)?;
        let (e, k) = (self.hp.d_inner, self.hp.d_conv);
        let (cw, _) = self.state_widths();
        let wb = (&layer.conv_w[..], &layer.conv_b[..]);
        let [_, _, xz, xc, ..] = &mut s.bufs;
        let mut pool = self.pool();
        let slots = pool.slots;
        let cp = pool.conv.get_mut(l).ok_or_else(|| bad_slot(0, 0))?;
        match rows {
            Rows::Chunk { slot, t } => {
                if slot >= slots {
                    return Err(bad_slot(slot, slots));
                }
                conv((e, k), wb, slot_of(cp, slot, cw), xz, xc, t);
            }
            Rows::Seqs(ss) => {
                for (j, &slot) in ss.iter().enumerate() {
                    if slot >= slots {
                        return Err(bad_slot(slot, slots));
                    }
                    conv(
                        (e, k),
                        wb,
                        slot_of(cp, slot, cw),
                        &xz[j * 2 * e..],
                        &mut xc[j * e..],
                        1,
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn dt_b_c_rms(&self, s: &mut Scratch, t: usize) -> Result<()> {
        let hp = &self.hp;
        let (r, n) = (hp.dt_rank, hp.d_state);
        each_row(&mut s.bufs[Act::Xdbl as usize], r + 2 * n, t, |_, row| {
            let (dtp, bc) = row.split_at_mut(r);
            let (bp, cp) = bc.split_at_mut(n);
            rms_norm_inplace(dtp, hp.dt_b_c_eps);
            rms_norm_inplace(bp, hp.dt_b_c_eps);
            rms_norm_inplace(cp, hp.dt_b_c_eps);
        });
        Ok(())
    }

    pub(crate) fn split_dt(&self, s: &mut Scratch, t: usize) -> Result<()> {
        let (r, xw) = (self.hp.dt_rank, self.hp.dt_rank + 2 * self.hp.d_state);
        let [_, _, _, _, xdbl, dt_in, ..] = &mut s.bufs;
        for (src, dst) in xdbl.chunks_exact(xw).zip(dt_in.chunks_exact_mut(r)).take(t) {
            dst.copy_from_slice(&src[..r]);
        }
        Ok(())
    }

    pub(crate) fn dt_softplus(&self, s: &mut Scratch, l: usize, t: usize) -> Result<()> {
        let layer = self.layer(l)?;
        let e = self.hp.d_inner;
        let add_softplus = |c0: usize, row: &mut [f32]| {
            for (v, &b) in row.iter_mut().zip(&layer.dt_b[c0..]) {
                *v += b;
            }
            quant::math::softplus_slice(row);
        };
        let dt = &mut s.bufs[Act::Dt as usize];
        if t == 1 {
            each_col_part(&mut dt[..e], add_softplus);
        } else {
            each_row(dt, e, t, |_, row| add_softplus(0, row));
        }
        Ok(())
    }

    pub(crate) fn scan(&self, s: &mut Scratch, l: usize, rows: Rows) -> Result<()> {
        let layer = self.layer(l)?;
        let hp = &self.hp;
        let (e, n, r) = (hp.d_inner, hp.d_state, hp.dt_rank);
        let xw = r + 2 * n;
        let (_, sw) = self.state_widths();
        let [_, _, xz, xc, xdbl, _, dt, y, _] = &mut s.bufs;
        let mut pool = self.pool();
        let slots = pool.slots;
        let sp = pool.ssm.get_mut(l).ok_or_else(|| bad_slot(0, 0))?;
        let args = |t: usize, j: usize| scan::ScanArgs {
            e,
            n,
            r,
            t,
            a: &layer.a,
            d: &layer.d,
            xz: &xz[j * 2 * e..],
            xc: &xc[j * e..],
            xdbl: &xdbl[j * xw..],
            dt: &dt[j * e..],
        };
        match rows {
            Rows::Chunk { slot, t } => {
                if slot >= slots {
                    return Err(bad_slot(slot, slots));
                }
                scan::scan(&args(t, 0), slot_of(sp, slot, sw), y);
            }
            Rows::Seqs(ss) => {
                for (j, &slot) in ss.iter().enumerate() {
                    if slot >= slots {
                        return Err(bad_slot(slot, slots));
                    }
                    scan::scan(
                        &args(1, j),
                        slot_of(sp, slot, sw),
                        &mut y[j * e..(j + 1) * e],
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn residual(&self, s: &mut Scratch, t: usize) -> Result<()> {
        let d = self.hp.n_embd;
        let [x, .., out] = &mut s.bufs;
        let out = &out[..];
        each_row(x, d, t, |j, row| {
            for (xv, &o) in row.iter_mut().zip(&out[j * d..(j + 1) * d]) {
                *xv += o;
            }
        });
        Ok(())
    }

    pub(crate) fn head(
        &self,
        s: &mut Scratch,
        rows: std::ops::Range<usize>,
        logits: &mut [f32],
    ) -> Result<()> {
        let bytes = self.output.n_out * self.output.row_bytes;
        self.profile
            .time(Op::Head, bytes, || self.head_untimed(s, rows, logits))
    }

    fn head_untimed(
        &self,
        s: &mut Scratch,
        rows: std::ops::Range<usize>,
        logits: &mut [f32],
    ) -> Result<()> {
        let d = self.hp.n_embd;
        let n = rows.len();
        check_range(s.rows, &rows)?;
        {
            let [x, h, ..] = &mut s.bufs;
            for (j, i) in rows.enumerate() {
                rms_norm(
                    &x[i * d..(i + 1) * d],
                    Some(&self.output_norm),
                    self.hp.norm_eps,
                    &mut h[j * d..(j + 1) * d],
                );
            }
        }
        let h = &s.bufs[Act::H as usize][..n * d];
        matmul(
            &self.output,
            self.data(&self.output),
            h,
            n,
            logits,
            &mut s.act,
            &mut s.tmp,
        )
    }

    /// [`head`](Self::head) into a host buffer, then [`Greedy::of`] each row.
    pub(crate) fn greedy(
        &self,
        s: &mut Scratch,
        rows: std::ops::Range<usize>,
        out: &mut [Greedy],
    ) -> Result<()> {
        self.each_row_logits(s, rows, out, "greedy ids", Greedy::of)
    }

    /// [`head`](Self::head) into a host buffer, then [`TopK::of`] each row.
    pub(crate) fn top_k(
        &self,
        s: &mut Scratch,
        rows: std::ops::Range<usize>,
        k: usize,
        out: &mut [TopK],
    ) -> Result<()> {
        check_top_k(k, self.hp.n_vocab)?;
        self.each_row_logits(s, rows, out, "top-k lists", |row| TopK::of(row, k))
    }

    /// `out[j] = f(logits of row j)` over host logits from the head.
    fn each_row_logits<T>(
        &self,
        s: &mut Scratch,
        rows: std::ops::Range<usize>,
        out: &mut [T],
        what: &'static str,
        f: impl Fn(&[f32]) -> T,
    ) -> Result<()> {
        let (n, v) = (rows.len(), self.hp.n_vocab);
        check_range(s.rows, &rows)?;
        let out = prefix_mut(out, n, what)?;
        let mut logits = vec![0.0; n * v];
        self.head(s, rows, &mut logits)?;
        self.profile.time(Op::Pick, 0, || {
            for (o, row) in out.iter_mut().zip(logits.chunks_exact(v)) {
                *o = f(row);
            }
        });
        Ok(())
    }

    pub(crate) fn read_act(
        &self,
        s: &mut Scratch,
        act: Act,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let w = self.widths()[act as usize];
        check_range(s.rows, &rows)?;
        let out = prefix_mut(out, rows.len() * w, "rows of an activation")?;
        out.copy_from_slice(&s.bufs[act as usize][rows.start * w..rows.end * w]);
        Ok(())
    }

    pub(crate) fn write_x(&self, s: &mut Scratch, row: usize, x: &[f32]) -> Result<()> {
        let d = self.hp.n_embd;
        let rows = row..row + whole_rows(x, d)?;
        check_range(s.rows, &rows)?;
        s.bufs[Act::X as usize][rows.start * d..rows.end * d].copy_from_slice(x);
        Ok(())
    }

    // ---- the state pool ----

    pub(crate) fn reserve_slots(&self, n: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut pool = self.pool();
        if n <= pool.slots {
            return Ok(());
        }
        for c in &mut pool.conv {
            c.resize(n * cw, 0.0);
        }
        for s in &mut pool.ssm {
            s.resize(n * sw, 0.0);
        }
        pool.slots = n;
        Ok(())
    }

    pub(crate) fn zero_slot(&self, slot: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut pool = self.pool();
        if slot >= pool.slots {
            return Err(bad_slot(slot, pool.slots));
        }
        for c in &mut pool.conv {
            slot_of(c, slot, cw).fill(0.0);
        }
        for s in &mut pool.ssm {
            slot_of(s, slot, sw).fill(0.0);
        }
        Ok(())
    }

    pub(crate) fn copy_slot(&self, from: usize, to: usize) -> Result<()> {
        let (cw, sw) = self.state_widths();
        let mut pool = self.pool();
        for i in [from, to] {
            if i >= pool.slots {
                return Err(bad_slot(i, pool.slots));
            }
        }
        if from == to {
            return Ok(());
        }
        for c in &mut pool.conv {
            c.copy_within(from * cw..(from + 1) * cw, to * cw);
        }
        for s in &mut pool.ssm {
            s.copy_within(from * sw..(from + 1) * sw, to * sw);
        }
        Ok(())
    }

    pub(crate) fn read_slot(&self, slot: usize) -> Result<State> {
        let (cw, sw) = self.state_widths();
        let pool = self.pool();
        if slot >= pool.slots {
            return Err(bad_slot(slot, pool.slots));
        }
        Ok(State {
            layers: pool
                .conv
                .iter()
                .zip(&pool.ssm)
                .map(|(c, s)| LayerState {
                    conv: c[slot * cw..(slot + 1) * cw].to_vec(),
                    ssm: s[slot * sw..(slot + 1) * sw].to_vec(),
                })
                .collect(),
        })
    }

    pub(crate) fn write_slot(&self, slot: usize, st: &State) -> Result<()> {
        let (cw, sw) = self.state_widths();
        if !st.fits(&self.hp) {
            return Err(ModelError::ForeignState {
                what: "the state".into(),
            });
        }
        let mut pool = self.pool();
        if slot >= pool.slots {
            return Err(bad_slot(slot, pool.slots));
        }
        let Pool { conv, ssm, .. } = &mut *pool;
        for ((c, s), ls) in conv.iter_mut().zip(ssm.iter_mut()).zip(&st.layers) {
            slot_of(c, slot, cw).copy_from_slice(&ls.conv);
            slot_of(s, slot, sw).copy_from_slice(&ls.ssm);
        }
        Ok(())
    }

    pub(crate) fn slot_bytes(&self) -> usize {
        let (cw, sw) = self.state_widths();
        4 * self.layers.len() * (cw + sw)
    }
}
