use thiserror::Error;

/// Everything the CUDA backend and its emulator can report. Nothing here
/// panics for want of a GPU: each missing piece has its own variant.
#[derive(Debug, Error)]
pub enum CudaError {
    #[error("NVIDIA driver library not found (tried {tried}): install the NVIDIA driver, or use --device cuda-emu / cpu")]
    NoDriver { tried: String },
    #[error("CUDA driver call {call} failed: {msg}")]
    Driver { call: &'static str, msg: String },
    #[error("no CUDA device with ordinal {ordinal} ({count} found)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("device {name} has compute capability {major}.{minor}; these kernels need {need_major}.{need_minor} or newer")]
    ComputeCapability {
        name: String,
        major: i32,
        minor: i32,
        need_major: i32,
        need_minor: i32,
    },
    #[error("not enough free device memory: {need} bytes needed, {free} free")]
    OutOfMemory { need: usize, free: usize },
    #[error("the shipped PTX holds no module for kernel {kernel}")]
    MissingModule { kernel: String },
    /// A kernel module the driver would not load (too old for the PTX's ISA
    /// version, a failing JIT): found when the device is opened, so that
    /// `--device auto` can still choose the CPU.
    #[error("CUDA kernel module '{module}' could not be loaded: {msg}{log}")]
    ModuleLoad {
        module: &'static str,
        msg: String,
        /// Empty, or "; the JIT's log: ...".
        log: String,
    },
    #[error("self-test: the {kernel} kernel disagrees with the host on this device ({detail}); the model is not run there (--device cpu runs it; please report the GPU and driver)")]
    SelfTest { kernel: String, detail: String },
    #[error("emulator: {0}")]
    Emu(String),
    #[error("{what}: expected {expected}, got {got}")]
    Size {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} = {value} is out of range ({why})")]
    Shape {
        what: &'static str,
        value: usize,
        why: &'static str,
    },
    #[error("launch of {kernel}: {what} = {value} is past the GPU's limits ({why})")]
    Launch {
        kernel: String,
        what: &'static str,
        value: usize,
        why: &'static str,
    },
    #[error("weight type {ty:?} has no kernel here")]
    Unsupported { ty: quant::GgmlType },
    #[error("buffer belongs to another device")]
    ForeignBuffer,
    #[error("logits row {row} holds a NaN at index {index}")]
    NanLogits { row: usize, index: usize },
}

pub type Result<T> = std::result::Result<T, CudaError>;
