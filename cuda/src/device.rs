//! Devices and typed buffers. One host-side code path serves both backends:
//! the same buffers, launch configurations and parameter blocks go to the
//! real GPU (`Cuda`) or to the emulator (`Emu`).

use crate::cuda::{CudaCtx, GraphExec};
use crate::error::{CudaError, Result};
use crate::graph::{Launch, Plan, Replay};
use std::alloc::Layout;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Plain element types a buffer may hold.
///
/// # Safety
/// Implementors must be `Copy` types with no padding and for which every bit
/// pattern is a valid value.
pub unsafe trait Elem: Copy + Default + 'static {}
// SAFETY: primitive integers and floats: no padding, every bit pattern valid.
unsafe impl Elem for u8 {}
// SAFETY: as above.
unsafe impl Elem for i8 {}
// SAFETY: as above.
unsafe impl Elem for u16 {}
// SAFETY: as above.
unsafe impl Elem for i32 {}
// SAFETY: as above.
unsafe impl Elem for u32 {}
// SAFETY: as above.
unsafe impl Elem for f32 {}

fn as_bytes<T: Elem>(v: &[T]) -> &[u8] {
    // SAFETY: `Elem` types have no padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Elem>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: no padding, and any byte pattern is a valid `T`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

enum Kind {
    Emu,
    Cuda(Arc<CudaCtx>),
}

/// A built graph: the driver's executable graph, or on the emulator a
/// marker (the emulator replays the stored list).
enum Graph {
    Emu,
    Cuda(GraphExec),
}

/// Where launches go: at once, or queued and replayed (see [`crate::graph`]).
/// Buffers hold it too, so that freeing one first runs the launches queued
/// before (they may use it).
///
/// Teardown order matters on a GPU: the queue is the last holder of the
/// context (every buffer drops its own reference first), and releasing the
/// last reference to the primary context resets it. So the queue's Drop
/// destroys the cached graphs while the context is alive and current, and
/// only then do the fields drop (`replay` is also declared before `kind`,
/// so field order alone would give the same).
struct Queue {
    /// Queue launches (graphs on); false: each launch runs when asked.
    defer: AtomicBool,
    replay: Mutex<Replay<Graph>>,
    /// Graphs launched, and the kernel launches inside them.
    graphs: AtomicU64,
    replayed: AtomicU64,
    kind: Kind,
}

impl Drop for Queue {
    fn drop(&mut self) {
        let cached = std::mem::take(&mut *self.replay());
        if let Kind::Cuda(ctx) = &self.kind {
            // cuGraphExecDestroy on the context that made the graphs.
            let _ = ctx.bind();
        }
        drop(cached);
    }
}

impl Queue {
    fn replay(&self) -> MutexGuard<'_, Replay<Graph>> {
        self.replay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one launch now.
    ///
    /// # Safety
    /// As [`Device::launch`], for the buffers as they are now.
    unsafe fn run(&self, l: &Launch) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.run_now(l.kernel, l.grid, l.block, &l.params) }
    }

    /// # Safety
    /// As [`Queue::run`].
    unsafe fn run_now(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        params: &[u8],
    ) -> Result<()> {
        match &self.kind {
            // SAFETY: forwarded from the caller.
            Kind::Emu => unsafe { crate::emu::launch(kernel, grid, block, params) },
            // SAFETY: forwarded from the caller.
            Kind::Cuda(ctx) => unsafe { ctx.launch(kernel, grid, block, params) },
        }
    }

    /// Runs the queued launches (as one graph when the list was seen
    /// before); then reports a failure an earlier, unreported flush had.
    fn flush(&self) -> Result<()> {
        let mut r = self.replay();
        if r.pending() == 0 {
            return r.sticky.take().map_or(Ok(()), Err);
        }
        let sticky = r.sticky.take();
        // SAFETY (the unsafe blocks below): every queued launch was checked
        // by its `ops` wrapper against views of live buffers of this device,
        // and no buffer has been freed or copied to since it was queued:
        // freeing a buffer and every copy flush first.
        let ran = match r.take() {
            Plan::Each(ls) => ls.iter().try_for_each(|l| unsafe { self.run(l) }),
            Plan::Graph => {
                let (ls, g) = r.current();
                match g {
                    Some(g) => unsafe { self.launch_graph(g, ls) },
                    None => ls.iter().try_for_each(|l| unsafe { self.run(l) }),
                }
            }
            Plan::Build => {
                let built = match &self.kind {
                    Kind::Emu => Ok(Graph::Emu),
                    // SAFETY: as above; the graph copies the parameter blocks.
                    Kind::Cuda(ctx) => unsafe { ctx.build_graph(r.current().0) }.map(Graph::Cuda),
                };
                match built {
                    Ok(g) => {
                        let ran = unsafe { self.launch_graph(&g, r.current().0) };
                        r.built(g);
                        ran
                    }
                    Err(e) => {
                        let ls = r.current().0.to_vec();
                        r.refuse(e.to_string());
                        ls.iter().try_for_each(|l| unsafe { self.run(l) })
                    }
                }
            }
        };
        match sticky {
            Some(e) => Err(e),
            None => ran,
        }
    }

    /// # Safety
    /// As [`Queue::run`], for every launch of `ls`, the list `g` was built from.
    unsafe fn launch_graph(&self, g: &Graph, ls: &[Launch]) -> Result<()> {
        self.graphs.fetch_add(1, Ordering::Relaxed);
        self.replayed.fetch_add(ls.len() as u64, Ordering::Relaxed);
        match g {
            // SAFETY: forwarded from the caller.
            Graph::Emu => ls.iter().try_for_each(|l| unsafe { self.run(l) }),
            Graph::Cuda(x) => match &self.kind {
                Kind::Cuda(ctx) => ctx.launch_graph(x),
                Kind::Emu => Err(CudaError::Emu("a driver graph on the emulator".into())),
            },
        }
    }

    /// [`Queue::flush`] where no caller can be told (a buffer's drop): a
    /// failure is kept for the next flush.
    fn flush_quietly(&self) {
        if let Err(e) = self.flush() {
            let mut r = self.replay();
            if r.sticky.is_none() {
                r.sticky = Some(e);
            }
        }
    }
}

/// A compute device: the emulator or a CUDA GPU.
pub struct Device {
    q: Arc<Queue>,
    id: u64,
    /// Kernel launches and host-to-device copies so far ([`Device::counts`]).
    launches: AtomicU64,
    uploads: AtomicU64,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.q.flush_quietly();
    }
}

/// What a [`Device`] has been asked to do so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kernel launches asked for.
    pub launches: u64,
    /// Host-to-device copies (`upload`, `write_at`).
    pub uploads: u64,
    /// Graphs launched (each a list of launches seen before, see
    /// [`crate::graph`]).
    pub graphs: u64,
    /// Of the launches, those that ran inside a graph.
    pub replayed: u64,
}

const HOST_ALIGN: usize = 256; // as cuMemAlloc guarantees

enum Mem {
    Host { ptr: *mut u8, layout: Layout },
    Cuda { ptr: u64, ctx: Arc<CudaCtx> },
}

// SAFETY: `Host` is an allocation owned by this value alone (freed in Drop),
// `Cuda` a device address plus a Send + Sync context; moving either to
// another thread moves that ownership. Not `Sync`: kernels write through
// views of a shared `&Buffer`, so buffers are never shared across threads.
unsafe impl Send for Mem {}

impl Drop for Mem {
    fn drop(&mut self) {
        match self {
            Mem::Host { ptr, layout } => {
                // SAFETY: allocated in `Device::alloc` with this layout.
                unsafe { std::alloc::dealloc(*ptr, *layout) }
            }
            Mem::Cuda { ptr, ctx } => ctx.free(*ptr),
        }
    }
}

/// A device allocation of `len` elements of `T`, zeroed when made.
pub struct Buffer<T: Elem> {
    mem: Mem,
    len: usize,
    device: u64,
    /// The device's launch queue, run before the memory is freed.
    q: Arc<Queue>,
    _t: PhantomData<T>,
}

impl<T: Elem> Drop for Buffer<T> {
    fn drop(&mut self) {
        // Launches queued before may read or write this buffer.
        self.q.flush_quietly();
    }
}

impl<T: Elem> Buffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn base(&self) -> u64 {
        match &self.mem {
            Mem::Host { ptr, .. } => *ptr as u64,
            Mem::Cuda { ptr, .. } => *ptr,
        }
    }
}

/// A view of `len` elements of a buffer from element `off`, as a kernel argument.
pub struct View {
    pub(crate) addr: u64,
    pub(crate) len: usize,
    device: u64,
}

impl Device {
    /// The CPU emulator (always available where a C++ compiler built the crate).
    pub fn emu() -> Device {
        Device::with(Kind::Emu)
    }

    fn with(kind: Kind) -> Device {
        Device {
            q: Arc::new(Queue {
                defer: AtomicBool::new(crate::cuda::graphs_wanted()),
                replay: Mutex::new(Replay::default()),
                graphs: AtomicU64::new(0),
                replayed: AtomicU64::new(0),
                kind,
            }),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            launches: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
        }
    }

    /// CUDA device `ordinal`. Probes for the driver library before any
    /// driver call, so a machine without one gets [`CudaError::NoDriver`].
    pub fn cuda(ordinal: usize) -> Result<Device> {
        let ctx = CudaCtx::new(ordinal)?;
        Ok(Device::with(Kind::Cuda(Arc::new(ctx))))
    }

    /// Launches and uploads so far: what a forward costs in driver calls
    /// (a decode step on a fast GPU is bound by them, not by bandwidth).
    pub fn counts(&self) -> Counts {
        Counts {
            launches: self.launches.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            graphs: self.q.graphs.load(Ordering::Relaxed),
            replayed: self.q.replayed.load(Ordering::Relaxed),
        }
    }

    /// Queues launches and replays repeated lists as graphs (`true`, the
    /// default unless `MAMBA_GGUF_CUDA_GRAPHS=0` or `MAMBA_GGUF_CUDA_SYNC=1`),
    /// or runs each launch when asked. Runs what is queued first.
    pub fn set_graphs(&self, on: bool) -> Result<()> {
        self.flush()?;
        self.q.defer.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Why the driver's graphs were turned off for this device, if they were
    /// (launches then run one by one).
    pub fn graph_error(&self) -> Option<String> {
        self.q.replay().error.clone()
    }

    /// Runs the launches queued so far (every copy, memset, wait and free
    /// does this first; see [`crate::graph`]).
    pub fn flush(&self) -> Result<()> {
        self.q.flush()
    }

    pub fn is_emu(&self) -> bool {
        matches!(self.q.kind, Kind::Emu)
    }

    /// What it is, for logs: the GPU's name and compute capability, or
    /// "CUDA emulator (CPU)".
    pub fn name(&self) -> String {
        match &self.q.kind {
            Kind::Emu => "CUDA emulator (CPU)".into(),
            Kind::Cuda(ctx) => ctx.name.clone(),
        }
    }

    /// Streaming multiprocessors: the GPU's; on the emulator a stand-in of
    /// 8 (launch shapes that depend on it, split-K, take the same rule).
    pub fn sm_count(&self) -> usize {
        match &self.q.kind {
            Kind::Emu => 8,
            Kind::Cuda(ctx) => ctx.sms,
        }
    }

    /// How the kernels were loaded: on a GPU, "SASS sm_90, 6 modules in
    /// 12 ms" or "PTX JIT for sm_100, 6 modules in 4.1 s"; on the emulator,
    /// "compiled in".
    pub fn code(&self) -> String {
        match &self.q.kind {
            Kind::Emu => "compiled in".into(),
            Kind::Cuda(ctx) => ctx.code.clone(),
        }
    }

    /// Free device memory in bytes (`None` on the emulator, which allocates
    /// host memory).
    pub fn free_memory(&self) -> Result<Option<usize>> {
        match &self.q.kind {
            Kind::Emu => Ok(None),
            Kind::Cuda(ctx) => ctx.free_memory().map(Some),
        }
    }

    /// A zeroed buffer of `len` elements.
    pub fn alloc<T: Elem>(&self, len: usize) -> Result<Buffer<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(CudaError::Shape {
                what: "buffer length",
                value: len,
                why: "byte size overflows",
            })?;
        let mem = match &self.q.kind {
            Kind::Emu => {
                let layout = Layout::from_size_align(bytes.max(1), HOST_ALIGN).map_err(|_| {
                    CudaError::Shape {
                        what: "buffer bytes",
                        value: bytes,
                        why: "too large",
                    }
                })?;
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
                if ptr.is_null() {
                    return Err(CudaError::OutOfMemory {
                        need: bytes,
                        free: 0,
                    });
                }
                Mem::Host { ptr, layout }
            }
            Kind::Cuda(ctx) => Mem::Cuda {
                ptr: ctx.alloc_zeroed(bytes)?,
                ctx: ctx.clone(),
            },
        };
        Ok(Buffer {
            mem,
            len,
            device: self.id,
            q: self.q.clone(),
            _t: PhantomData,
        })
    }

    /// A buffer holding a copy of `data` (weights go up once, as stored).
    pub fn upload<T: Elem>(&self, data: &[T]) -> Result<Buffer<T>> {
        let mut b = self.alloc(data.len())?;
        self.write(&mut b, data)?;
        Ok(b)
    }

    /// Overwrites the whole buffer with `data`.
    pub fn write<T: Elem>(&self, buf: &mut Buffer<T>, data: &[T]) -> Result<()> {
        self.own(buf.device)?;
        self.flush()?;
        self.uploads.fetch_add(1, Ordering::Relaxed);
        if data.len() != buf.len {
            return Err(CudaError::Size {
                what: "write length",
                expected: buf.len,
                got: data.len(),
            });
        }
        let src = as_bytes(data);
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: the allocation holds len * size_of::<T>() = src.len() bytes
                // and no kernel runs (launches are synchronous on the emulator).
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), *ptr, src.len()) }
                Ok(())
            }
            Mem::Cuda { ptr, ctx } => ctx.htod(*ptr, src),
        }
    }

    /// The buffer's contents.
    pub fn read<T: Elem>(&self, buf: &Buffer<T>) -> Result<Vec<T>> {
        self.own(buf.device)?;
        self.flush()?;
        let mut out = vec![T::default(); buf.len];
        let dst = as_bytes_mut(&mut out);
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: the allocation holds dst.len() bytes; no kernel runs.
                unsafe { std::ptr::copy_nonoverlapping(*ptr, dst.as_mut_ptr(), dst.len()) }
            }
            Mem::Cuda { ptr, ctx } => ctx.dtoh(dst, *ptr)?,
        }
        Ok(out)
    }

    /// Checks that `off .. off + len` lies in a buffer of `have` elements,
    /// and gives its byte range.
    fn range<T: Elem>(&self, have: usize, off: usize, len: usize) -> Result<(usize, usize)> {
        let end = off.checked_add(len).ok_or(CudaError::Shape {
            what: "range end",
            value: off,
            why: "overflows",
        })?;
        if end > have {
            return Err(CudaError::Size {
                what: "buffer elements for range",
                expected: end,
                got: have,
            });
        }
        let sz = std::mem::size_of::<T>();
        Ok((off * sz, len * sz))
    }

    /// Writes `data` into `buf` from element `off`.
    pub fn write_at<T: Elem>(&self, buf: &mut Buffer<T>, off: usize, data: &[T]) -> Result<()> {
        self.own(buf.device)?;
        self.flush()?;
        self.uploads.fetch_add(1, Ordering::Relaxed);
        let (at, n) = self.range::<T>(buf.len, off, data.len())?;
        let src = as_bytes(data);
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: `at + n` bytes lie inside the allocation (checked);
                // no kernel runs (emulated launches are synchronous).
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), ptr.add(at), n) }
                Ok(())
            }
            Mem::Cuda { ptr, ctx } => ctx.htod(*ptr + at as u64, src),
        }
    }

    /// Reads elements `off .. off + out.len()` of `buf` into `out`.
    pub fn read_at<T: Elem>(&self, buf: &Buffer<T>, off: usize, out: &mut [T]) -> Result<()> {
        self.own(buf.device)?;
        self.flush()?;
        let (at, n) = self.range::<T>(buf.len, off, out.len())?;
        let dst = as_bytes_mut(out);
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: `at + n` bytes lie inside the allocation (checked).
                unsafe { std::ptr::copy_nonoverlapping(ptr.add(at), dst.as_mut_ptr(), n) }
                Ok(())
            }
            Mem::Cuda { ptr, ctx } => ctx.dtoh(dst, *ptr + at as u64),
        }
    }

    /// Copies elements `from .. from + len` of `buf` to `to .. to + len`,
    /// on the device (the ranges may overlap only if equal).
    pub fn copy_within<T: Elem>(
        &self,
        buf: &mut Buffer<T>,
        from: usize,
        to: usize,
        len: usize,
    ) -> Result<()> {
        self.own(buf.device)?;
        self.flush()?;
        let (src, n) = self.range::<T>(buf.len, from, len)?;
        let (dst, _) = self.range::<T>(buf.len, to, len)?;
        if src == dst || n == 0 {
            return Ok(());
        }
        if src.abs_diff(dst) < n {
            return Err(CudaError::Shape {
                what: "copy_within ranges",
                value: len,
                why: "overlap",
            });
        }
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: both ranges lie inside the allocation and do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(ptr.add(src), ptr.add(dst), n) }
                Ok(())
            }
            Mem::Cuda { ptr, ctx } => ctx.dtod(*ptr + dst as u64, *ptr + src as u64, n),
        }
    }

    /// Zeroes elements `off .. off + len` of `buf`.
    pub fn zero_at<T: Elem>(&self, buf: &mut Buffer<T>, off: usize, len: usize) -> Result<()> {
        self.own(buf.device)?;
        self.flush()?;
        let (at, n) = self.range::<T>(buf.len, off, len)?;
        match &buf.mem {
            Mem::Host { ptr, .. } => {
                // SAFETY: the range lies inside the allocation.
                unsafe { std::ptr::write_bytes(ptr.add(at), 0, n) }
                Ok(())
            }
            Mem::Cuda { ptr, ctx } => ctx.zero(*ptr + at as u64, n),
        }
    }

    /// Elements `off .. off + len` of `buf` as a kernel argument.
    pub fn view<T: Elem>(&self, buf: &Buffer<T>, off: usize, len: usize) -> Result<View> {
        self.own(buf.device)?;
        let end = off.checked_add(len).ok_or(CudaError::Shape {
            what: "view end",
            value: off,
            why: "overflows",
        })?;
        if end > buf.len {
            return Err(CudaError::Size {
                what: "buffer elements for view",
                expected: end,
                got: buf.len,
            });
        }
        Ok(View {
            addr: buf.base() + (off * std::mem::size_of::<T>()) as u64,
            len,
            device: self.id,
        })
    }

    fn own(&self, device: u64) -> Result<()> {
        if device == self.id {
            Ok(())
        } else {
            Err(CudaError::ForeignBuffer)
        }
    }

    pub(crate) fn check_view(&self, v: &View) -> Result<u64> {
        self.own(v.device)?;
        Ok(v.addr)
    }

    /// Launches `kernel` with a parameter block (see [`Params`]): queued
    /// when graphs are on (it runs at the next copy, memset, wait or free;
    /// a failure of the kernel is reported there), else at once.
    ///
    /// # Safety
    /// Every address in `params` must come from a [`View`] of this device
    /// large enough for what the kernel touches with this configuration
    /// (the typed wrappers in [`crate::ops`] check that).
    pub(crate) unsafe fn launch(
        &self,
        kernel: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        params: Params,
    ) -> Result<()> {
        check_launch_shape(kernel, grid, block)?;
        self.launches.fetch_add(1, Ordering::Relaxed);
        if !self.q.defer.load(Ordering::Relaxed) {
            // SAFETY: forwarded from the caller.
            return unsafe { self.q.run_now(kernel, grid, block, &params.bytes) };
        }
        self.q.replay().push(Launch {
            kernel,
            grid,
            block,
            params: params.bytes,
        });
        Ok(())
    }

    /// Runs what is queued and waits for all launched work (the emulator
    /// runs launches synchronously).
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        match &self.q.kind {
            Kind::Emu => Ok(()),
            Kind::Cuda(ctx) => ctx.synchronize(),
        }
    }
}

/// The launch limits every CUDA GPU since compute capability 3.0 has (and
/// the emulator enforces the same): grid.x < 2^31, grid.y and grid.z <=
/// 65535, block.x and block.y <= 1024, block.z <= 64, at most 1024 threads
/// in a block, and no dimension 0. A shape past them is refused here, on
/// the emulator as on a GPU, instead of failing only on hardware.
pub(crate) fn check_launch_shape(
    kernel: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
) -> Result<()> {
    let bad = |what: &'static str, value: u32, why: &'static str| {
        Err(CudaError::Launch {
            kernel: kernel.to_string(),
            what,
            value: value as usize,
            why,
        })
    };
    let threads = block.0 as u64 * block.1 as u64 * block.2 as u64;
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return bad("grid", 0, "a grid dimension is 0");
    }
    if grid.0 > i32::MAX as u32 {
        return bad("grid.x", grid.0, "over 2^31 - 1 blocks");
    }
    if grid.1 > 65535 {
        return bad("grid.y", grid.1, "over 65535 blocks");
    }
    if grid.2 > 65535 {
        return bad("grid.z", grid.2, "over 65535 blocks");
    }
    if threads == 0 || threads > 1024 || block.0 > 1024 || block.1 > 1024 || block.2 > 64 {
        return bad(
            "block",
            block.0,
            "not a valid block shape (at most 1024 threads)",
        );
    }
    Ok(())
}

/// A kernel's parameter block (its single struct argument), laid out with C's
/// rules: each field at its natural alignment, the whole padded to 8.
#[derive(Default)]
pub(crate) struct Params {
    bytes: Vec<u8>,
}

impl Params {
    fn align(&mut self, a: usize) {
        while !self.bytes.len().is_multiple_of(a) {
            self.bytes.push(0);
        }
    }
    pub(crate) fn ptr(mut self, addr: u64) -> Self {
        self.align(8);
        self.bytes.extend_from_slice(&addr.to_le_bytes());
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> Self {
        self.align(4);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn f32(mut self, v: f32) -> Self {
        self.align(4);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn done(mut self) -> Self {
        self.align(8);
        self
    }
    /// The block's bytes (a struct a kernel reads from device memory).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
