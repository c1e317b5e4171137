//! Devices and typed buffers. One host-side code path serves both backends:
//! the same buffers, launch configurations and parameter blocks go to the
//! real GPU (`Cuda`) or to the emulator (`Emu`).

use crate::cuda::CudaCtx;
use crate::error::{CudaError, Result};
use std::alloc::Layout;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// A compute device: the emulator or a CUDA GPU.
pub struct Device {
    kind: Kind,
    id: u64,
    /// Kernel launches and host-to-device copies so far ([`Device::counts`]).
    launches: AtomicU64,
    uploads: AtomicU64,
}

/// What a [`Device`] has been asked to do so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kernel launches.
    pub launches: u64,
    /// Host-to-device copies (`upload`, `write_at`).
    pub uploads: u64,
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
    _t: PhantomData<T>,
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
        Device {
            kind: Kind::Emu,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            launches: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
        }
    }

    /// CUDA device `ordinal`. Probes for the driver library before any
    /// driver call, so a machine without one gets [`CudaError::NoDriver`].
    pub fn cuda(ordinal: usize) -> Result<Device> {
        let ctx = CudaCtx::new(ordinal)?;
        Ok(Device {
            kind: Kind::Cuda(Arc::new(ctx)),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            launches: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
        })
    }

    /// Launches and uploads so far: what a forward costs in driver calls
    /// (a decode step on a fast GPU is bound by them, not by bandwidth).
    pub fn counts(&self) -> Counts {
        Counts {
            launches: self.launches.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
        }
    }

    pub fn is_emu(&self) -> bool {
        matches!(self.kind, Kind::Emu)
    }

    /// What it is, for logs: the GPU's name and compute capability, or
    /// "CUDA emulator (CPU)".
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Emu => "CUDA emulator (CPU)".into(),
            Kind::Cuda(ctx) => ctx.name.clone(),
        }
    }

    /// Free device memory in bytes (`None` on the emulator, which allocates
    /// host memory).
    pub fn free_memory(&self) -> Result<Option<usize>> {
        match &self.kind {
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
        let mem = match &self.kind {
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

    /// Launches `kernel` with a parameter block (see [`Params`]).
    ///
    /// # Safety
    /// Every address in `params` must come from a [`View`] of this device
    /// large enough for what the kernel touches with this configuration
    /// (the typed wrappers in [`crate::ops`] check that).
    pub(crate) unsafe fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        params: &Params,
    ) -> Result<()> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        match &self.kind {
            // SAFETY: forwarded from the caller.
            Kind::Emu => unsafe { crate::emu::launch(kernel, grid, block, &params.bytes) },
            // SAFETY: forwarded from the caller.
            Kind::Cuda(ctx) => unsafe { ctx.launch(kernel, grid, block, &params.bytes) },
        }
    }

    /// Waits for all launched work (a no-op on the emulator, which runs launches synchronously).
    pub fn synchronize(&self) -> Result<()> {
        match &self.kind {
            Kind::Emu => Ok(()),
            Kind::Cuda(ctx) => ctx.synchronize(),
        }
    }
}

/// A kernel's parameter block (its single struct argument), laid out with C's
/// rules: each field at its natural alignment, the whole padded to 8.
#[derive(Default)]
pub(crate) struct Params {
    bytes: Vec<u8>,
}

impl Params {
    fn align(&mut self, a: usize) {
        while self.bytes.len() % a != 0 {
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
}
