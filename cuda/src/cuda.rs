//! The real-GPU backend: cudarc's driver API, loaded at run time. Minimal on
//! purpose (probe, device checks, primary context, PTX modules, launch); it
//! has not yet run on a GPU (none here or in CI).

use crate::error::{CudaError, Result};
use crate::graph::Launch;
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

/// One kernel module (kernels/<name>.cu): its PTX (the fallback, JIT-compiled
/// by the driver for any card of [`MIN_CC`] or newer) and the SASS the pinned
/// ptxas made of that PTX for the architectures we ship (loaded as is: no JIT,
/// and the ptxas report in `cuda/ptx` describes exactly the code that runs).
/// `scripts/cuda/build_ptx.py --check` in CI keeps both equal to a fresh
/// compile of the sources.
pub struct ModuleImage {
    pub name: &'static str,
    pub ptx: &'static str,
    /// (sm as major * 10 + minor, cubin bytes).
    pub cubins: &'static [(u32, &'static [u8])],
    /// The lowest compute capability that loads it: [`MIN_CC`], or (8, 0)
    /// for `mma` (int8 tensor cores, `mma.sync` m16n8k32: compute_80 PTX),
    /// which a card below it does without (its kernels are then missing and
    /// the dp4a matmul serves).
    pub min_cc: (i32, i32),
}

/// The SASS of module `$name` for sm_`$sm`, as shipped in `cuda/cubin`.
macro_rules! cubin {
    ($name:literal, $sm:literal) => {
        (
            $sm,
            include_bytes!(concat!("../cubin/", $name, ".sm_", $sm, ".cubin")) as &[u8],
        )
    };
}

macro_rules! module_image {
    ($name:literal) => {
        module_image!($name, MIN_CC)
    };
    ($name:literal, $min_cc:expr) => {
        ModuleImage {
            name: $name,
            ptx: include_str!(concat!("../ptx/", $name, ".ptx")),
            cubins: &[
                cubin!($name, 80),
                cubin!($name, 86),
                cubin!($name, 89),
                cubin!($name, 90),
            ],
            min_cc: $min_cc,
        }
    };
}

/// Every module the kernels live in; all that the card can run are loaded
/// when a device is opened.
pub const MODULES: &[ModuleImage] = &[
    module_image!("elementwise"),
    module_image!("embed"),
    module_image!("matvec"),
    module_image!("mma", (8, 0)),
    module_image!("norm"),
    module_image!("quantize"),
    module_image!("ssm"),
];

/// The shipped cubin a device of compute capability `major.minor` can run:
/// the one built for it, else the newest of the same major version with a
/// lower minor (SASS runs on later minors of its major, never across majors);
/// `None` means the PTX must be JIT-compiled.
pub fn pick_cubin(
    major: i32,
    minor: i32,
    cubins: &'static [(u32, &'static [u8])],
) -> Option<(u32, &'static [u8])> {
    let (Ok(major), Ok(minor)) = (u32::try_from(major), u32::try_from(minor)) else {
        return None;
    };
    cubins
        .iter()
        .filter(|(sm, _)| sm / 10 == major && sm % 10 <= minor)
        .max_by_key(|(sm, _)| *sm)
        .copied()
}

/// Compute capability the shipped PTX targets (compute_75, `.version 6.3`:
/// a T4 runs it through the JIT), and the lowest this backend opens.
pub const MIN_CC: (i32, i32) = (7, 5);

/// The module (kernels/<module>.cu) that defines `kernel`.
pub fn module_of(kernel: &str) -> &'static str {
    if kernel.starts_with("matvec_") || kernel.starts_with("matmul_") {
        "matvec"
    } else if kernel.starts_with("mma_") {
        "mma"
    } else if kernel.starts_with("embed_") {
        "embed"
    } else if kernel.starts_with("quantize_") {
        "quantize"
    } else if kernel.starts_with("rms_norm") {
        "norm"
    } else if kernel.starts_with("conv1d_") || kernel.starts_with("selective_scan") {
        "ssm"
    } else {
        "elementwise"
    }
}

fn drv(call: &'static str) -> impl Fn(result::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        call,
        msg: format!("{e:?}"),
    }
}

/// Names the driver library is looked up by (as cudarc does).
pub fn driver_library_names() -> Vec<String> {
    ["cuda", "nvcuda"]
        .iter()
        .flat_map(|l| cudarc::get_lib_name_candidates(l))
        .collect()
}

/// Whether the NVIDIA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names; calls nothing in them.
    unsafe { sys::is_culib_present() }
}

fn sync_each_launch() -> bool {
    static SYNC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SYNC.get_or_init(|| std::env::var("MAMBA_GGUF_CUDA_SYNC").is_ok_and(|v| v == "1"))
}

/// Whether launches are queued and repeated lists replayed as graphs
/// ([`crate::graph`]): yes unless `MAMBA_GGUF_CUDA_GRAPHS=0`, or
/// `MAMBA_GGUF_CUDA_SYNC=1` (which wants each launch waited for).
pub(crate) fn graphs_wanted() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !sync_each_launch() && std::env::var("MAMBA_GGUF_CUDA_GRAPHS").map_or(true, |v| v != "0")
    })
}

/// The first driver version with the graph calls used here
/// (`cuGraphAddKernelNode_v2`): 12.0. An older driver runs without graphs.
const GRAPH_DRIVER: i32 = 12000;

/// An executable graph of kernel launches (destroyed on drop).
pub(crate) struct GraphExec {
    exec: sys::CUgraphExec,
}

// SAFETY: an executable graph is a driver handle that may be launched and
// destroyed from any thread with its context current (launch_graph and Drop
// bind it); the queue that holds it is behind a mutex.
unsafe impl Send for GraphExec {}

impl Drop for GraphExec {
    fn drop(&mut self) {
        // SAFETY: `exec` came from cuGraphInstantiateWithFlags and is
        // destroyed once, here.
        let _ = unsafe { sys::cuGraphExecDestroy(self.exec) };
    }
}

pub(crate) struct CudaCtx {
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
    /// "NVIDIA H100 80GB HBM3 (sm_90)".
    pub(crate) name: String,
    /// Streaming multiprocessors.
    pub(crate) sms: usize,
    /// How the kernels were loaded: "SASS sm_90, 6 modules in 12 ms", or
    /// "PTX JIT-compiled for sm_100, 6 modules in 4.1 s".
    pub(crate) code: String,
    /// Every module of [`MODULES`], loaded in [`CudaCtx::new`] (unloaded in
    /// Drop, before the primary context is released).
    modules: HashMap<&'static str, sys::CUmodule>,
    /// Kernels already looked up (a decode step launches hundreds: the
    /// driver's lookup by name is not done again for each).
    functions: Mutex<HashMap<String, sys::CUfunction>>,
}

// SAFETY: a CUDA context may be used from any thread once made current there;
// every entry point below makes it current first.
unsafe impl Send for CudaCtx {}
// SAFETY: as above; the module cache is behind a mutex.
unsafe impl Sync for CudaCtx {}

impl CudaCtx {
    pub(crate) fn new(ordinal: usize) -> Result<CudaCtx> {
        if !driver_present() {
            return Err(CudaError::NoDriver {
                tried: driver_library_names().join(", "),
            });
        }
        result::init().map_err(drv("cuInit"))?;
        let count = result::device::get_count().map_err(drv("cuDeviceGetCount"))?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let dev = result::device::get(ordinal as i32).map_err(drv("cuDeviceGet"))?;
        let name = result::device::get_name(dev).map_err(drv("cuDeviceGetName"))?;
        use sys::CUdevice_attribute::*;
        // SAFETY: `dev` is a valid device handle from cuDeviceGet.
        let major = unsafe {
            result::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        }
        .map_err(drv("cuDeviceGetAttribute"))?;
        // SAFETY: as above.
        let minor = unsafe {
            result::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        }
        .map_err(drv("cuDeviceGetAttribute"))?;
        // SAFETY: as above.
        let sms =
            unsafe { result::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) }
                .map_err(drv("cuDeviceGetAttribute"))?;
        if (major, minor) < MIN_CC {
            return Err(CudaError::ComputeCapability {
                name,
                major,
                minor,
                need_major: MIN_CC.0,
                need_minor: MIN_CC.1,
            });
        }
        // SAFETY: `dev` is valid; the primary context is released in Drop.
        let ctx =
            unsafe { result::primary_ctx::retain(dev) }.map_err(drv("cuDevicePrimaryCtxRetain"))?;
        let mut me = CudaCtx {
            ctx,
            dev,
            name: format!("{name} (sm_{major}{minor})"),
            sms: usize::try_from(sms).unwrap_or(1).max(1),
            code: String::new(),
            modules: HashMap::new(),
            functions: Mutex::new(HashMap::new()),
        };
        me.bind()?;
        // Every module now, before a byte of weights goes up: a driver that
        // cannot run our code (too old for the PTX, a failing JIT) is found
        // here, where `--device auto` can still choose the CPU, and the JIT's
        // cost is paid at load, not inside the first request. On failure
        // `me` drops, unloading what loaded and releasing the context.
        let t0 = std::time::Instant::now();
        let mut kinds = Vec::new();
        let mut loaded = 0;
        for m in MODULES.iter().filter(|m| (major, minor) >= m.min_cc) {
            loaded += 1;
            let (module, kind) = load_module(m, major, minor)?;
            me.modules.insert(m.name, module);
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        me.code = format!(
            "{}, {} modules in {:.0?}",
            kinds.join(" + "),
            loaded,
            t0.elapsed()
        );
        Ok(me)
    }

    pub(crate) fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is a live primary context retained in `new`.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(drv("cuCtxSetCurrent"))
    }

    /// Free device memory in bytes.
    pub(crate) fn free_memory(&self) -> Result<usize> {
        self.bind()?;
        Ok(result::mem_get_info().map_err(drv("cuMemGetInfo"))?.0)
    }

    pub(crate) fn alloc_zeroed(&self, bytes: usize) -> Result<u64> {
        let free = self.free_memory()?;
        if bytes > free {
            return Err(CudaError::OutOfMemory { need: bytes, free });
        }
        // SAFETY: context current; the pointer is freed by `free`.
        let p = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(drv("cuMemAlloc"))?;
        // SAFETY: `p` addresses at least `bytes` bytes just allocated.
        unsafe { result::memset_d8_sync(p, 0, bytes) }.map_err(drv("cuMemsetD8"))?;
        Ok(p)
    }

    pub(crate) fn free(&self, p: u64) {
        if self.bind().is_ok() {
            // SAFETY: `p` came from `alloc_zeroed` and is freed once (Drop).
            let _ = unsafe { result::free_sync(p) };
        }
    }

    pub(crate) fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: `dst` addresses an allocation of at least src.len() bytes (checked by the caller).
        unsafe { result::memcpy_htod_sync(dst, src) }.map_err(drv("cuMemcpyHtoD"))
    }

    pub(crate) fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: `src` addresses an allocation of at least dst.len() bytes (checked by the caller).
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(drv("cuMemcpyDtoH"))
    }

    pub(crate) fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: both ranges lie in live allocations (checked by the caller).
        unsafe { result::memcpy_dtod_sync(dst, src, bytes) }.map_err(drv("cuMemcpyDtoD"))
    }

    pub(crate) fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the range lies in a live allocation (checked by the caller).
        unsafe { result::memset_d8_sync(dst, 0, bytes) }.map_err(drv("cuMemsetD8"))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.bind()?;
        result::ctx::synchronize().map_err(drv("cuCtxSynchronize"))
    }

    /// Builds `ls` into one executable graph: a kernel node per launch, each
    /// after the one before (the order a stream would give them).
    ///
    /// # Safety
    /// As [`CudaCtx::launch`], for every launch of `ls`, whenever the graph
    /// is launched (the queue launches it only for an equal list, see
    /// [`crate::graph`]).
    pub(crate) unsafe fn build_graph(&self, ls: &[Launch]) -> Result<GraphExec> {
        self.bind()?;
        let mut version = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut version) }
            .result()
            .map_err(drv("cuDriverGetVersion"))?;
        if version < GRAPH_DRIVER {
            return Err(CudaError::Driver {
                call: "cuDriverGetVersion",
                msg: format!("driver {version} is older than {GRAPH_DRIVER}, the first with these graph calls"),
            });
        }
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: writes one handle; destroyed below.
        unsafe { sys::cuGraphCreate(&mut graph, 0) }
            .result()
            .map_err(drv("cuGraphCreate"))?;
        let built = self.add_nodes(graph, ls).and_then(|()| {
            let mut exec: sys::CUgraphExec = std::ptr::null_mut();
            // SAFETY: `graph` is a complete graph of this context.
            unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }
                .result()
                .map_err(drv("cuGraphInstantiateWithFlags"))?;
            Ok(GraphExec { exec })
        });
        // SAFETY: the executable graph does not need its source graph.
        let _ = unsafe { sys::cuGraphDestroy(graph) };
        built
    }

    fn add_nodes(&self, graph: sys::CUgraph, ls: &[Launch]) -> Result<()> {
        let mut prev: sys::CUgraphNode = std::ptr::null_mut();
        for l in ls {
            let func = self.function(l.kernel)?;
            // The kernel's one argument, the parameter struct: the driver
            // copies its bytes into the node.
            let mut args = [l.params.as_ptr() as *mut c_void];
            let p = sys::CUDA_KERNEL_NODE_PARAMS {
                func,
                gridDimX: l.grid.0,
                gridDimY: l.grid.1,
                gridDimZ: l.grid.2,
                blockDimX: l.block.0,
                blockDimY: l.block.1,
                blockDimZ: l.block.2,
                sharedMemBytes: 0,
                kernelParams: args.as_mut_ptr(),
                extra: std::ptr::null_mut(),
                kern: std::ptr::null_mut(),
                ctx: std::ptr::null_mut(),
            };
            let (deps, n) = if prev.is_null() {
                (std::ptr::null(), 0)
            } else {
                (&prev as *const sys::CUgraphNode, 1)
            };
            let mut node: sys::CUgraphNode = std::ptr::null_mut();
            // SAFETY: `graph` is live, `deps` points at `n` nodes of it, and
            // `p` (with the argument array it points to) lives for the call.
            unsafe { sys::cuGraphAddKernelNode_v2(&mut node, graph, deps, n, &p) }
                .result()
                .map_err(drv("cuGraphAddKernelNode"))?;
            prev = node;
        }
        Ok(())
    }

    /// Launches a built graph on the legacy default stream (ordered with the
    /// launches and synchronous copies around it).
    pub(crate) fn launch_graph(&self, g: &GraphExec) -> Result<()> {
        self.bind()?;
        // SAFETY: `g.exec` is a live executable graph of this context.
        unsafe { sys::cuGraphLaunch(g.exec, std::ptr::null_mut()) }
            .result()
            .map_err(drv("cuGraphLaunch"))?;
        if sync_each_launch() {
            self.synchronize()?;
        }
        Ok(())
    }

    fn function(&self, kernel: &str) -> Result<sys::CUfunction> {
        let poisoned = |_| CudaError::Driver {
            call: "function cache",
            msg: "poisoned".into(),
        };
        if let Some(&f) = self.functions.lock().map_err(poisoned)?.get(kernel) {
            return Ok(f);
        }
        let f = self.lookup(kernel)?;
        self.functions
            .lock()
            .map_err(poisoned)?
            .insert(kernel.to_string(), f);
        Ok(f)
    }

    fn lookup(&self, kernel: &str) -> Result<sys::CUfunction> {
        let missing = || CudaError::MissingModule {
            kernel: kernel.to_string(),
        };
        let m = *self.modules.get(module_of(kernel)).ok_or_else(missing)?;
        let cname = CString::new(kernel).map_err(|_| missing())?;
        // SAFETY: `m` is a loaded module of this context.
        unsafe { result::module::get_function(m, cname) }.map_err(drv("cuModuleGetFunction"))
    }

    /// # Safety
    /// As [`crate::device::Device::launch`].
    pub(crate) unsafe fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        params: &[u8],
    ) -> Result<()> {
        self.bind()?;
        let f = self.function(kernel)?;
        // The kernel's one argument is the parameter struct: the driver copies
        // its bytes from this pointer.
        let mut args = [params.as_ptr() as *mut c_void];
        // SAFETY: `f` is a function of this context; the caller vouches for
        // the addresses inside `params`, whose bytes the driver copies at the
        // launch. Buffers outlive the work that reads them: cuMemFree and the
        // synchronous copies wait for the default stream's earlier work.
        unsafe { result::launch_kernel(f, grid, block, 0, std::ptr::null_mut(), &mut args) }
            .map_err(drv("cuLaunchKernel"))?;
        // Launches go to the legacy default stream, which orders them with
        // each other and with the synchronous copies that read results back,
        // so no wait is needed here (a wait per launch would cost more than
        // the small decode kernels). MAMBA_GGUF_CUDA_SYNC=1 waits after each
        // launch, so that a failing kernel is named by its own error.
        if sync_each_launch() {
            self.synchronize()?;
        }
        Ok(())
    }
}

impl Drop for CudaCtx {
    fn drop(&mut self) {
        // Modules first, with the context current: releasing the last
        // reference to the primary context resets it, after which their
        // handles (and any graph still holding their functions) are stale.
        // The device's queue destroys its graphs before it lets go of this
        // context (see `device::Queue`'s Drop).
        if self.bind().is_ok() {
            for (_, m) in self.modules.drain() {
                // SAFETY: `m` was loaded in `new` and is unloaded once, here.
                let _ = unsafe { sys::cuModuleUnload(m) };
            }
        }
        // SAFETY: releases the reference retained in `new`.
        let _ = unsafe { result::primary_ctx::release(self.dev) };
    }
}

/// Loads one module for a device of compute capability `major.minor`: the
/// shipped SASS when one fits, else the PTX through the driver's JIT (also
/// when the SASS is refused). Says which ("SASS sm_90", "PTX JIT for
/// sm_100"). The context must be current.
fn load_module(m: &ModuleImage, major: i32, minor: i32) -> Result<(sys::CUmodule, String)> {
    let mut refused = None;
    if let Some((sm, cubin)) = pick_cubin(major, minor, m.cubins) {
        // The ELF image 8-byte aligned, as a driver may expect (an
        // include_bytes! array has no alignment of its own).
        let aligned: Vec<u64> = cubin
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        match load_image(aligned.as_ptr().cast()) {
            Ok(module) => return Ok((module, format!("SASS sm_{sm}"))),
            Err((msg, log)) => refused = Some(format!("its sm_{sm} SASS: {msg} {log}")),
        }
    }
    let image = CString::new(m.ptx).map_err(|_| CudaError::ModuleLoad {
        module: m.name,
        msg: "the shipped PTX holds a NUL byte".into(),
        log: String::new(),
    })?;
    match load_image(image.as_ptr().cast()) {
        Ok(module) => Ok((module, format!("PTX JIT for sm_{major}{minor}"))),
        Err((msg, log)) => Err(CudaError::ModuleLoad {
            module: m.name,
            msg: format!(
                "the driver could not JIT-compile its PTX for sm_{major}{minor} ({msg}{})",
                refused.map_or(String::new(), |r| format!("; it also refused {r}"))
            ),
            log: if log.is_empty() {
                log
            } else {
                format!("; the JIT's log: {log}")
            },
        }),
    }
}

/// `cuModuleLoadDataEx` with the JIT's error and info logs; on failure the
/// driver's error and whatever the logs say.
fn load_image(image: *const c_void) -> std::result::Result<sys::CUmodule, (String, String)> {
    const LOG: usize = 16 * 1024;
    let mut err_log = vec![0u8; LOG];
    let mut info_log = vec![0u8; LOG];
    use sys::CUjit_option::*;
    let mut opts = [
        CU_JIT_ERROR_LOG_BUFFER,
        CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        CU_JIT_INFO_LOG_BUFFER,
        CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
    ];
    // Sizes travel as pointer-sized integers in the value array (the
    // driver's convention for scalar options).
    let mut vals: [*mut c_void; 4] = [
        err_log.as_mut_ptr().cast(),
        LOG as *mut c_void,
        info_log.as_mut_ptr().cast(),
        LOG as *mut c_void,
    ];
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY: the context is current (the caller's contract); `image` is a
    // cubin or NUL-terminated PTX that lives for the call; the option and
    // value arrays have 4 entries each, and the log buffers LOG bytes.
    let rc = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            image,
            opts.len() as u32,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    match rc.result() {
        Ok(()) => Ok(module),
        Err(e) => {
            let text = |b: &[u8]| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).trim().to_string()
            };
            let log = [text(&err_log), text(&info_log)]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            Err((format!("{e:?}"), log))
        }
    }
}
