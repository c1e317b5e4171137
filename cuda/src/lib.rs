//! CUDA backend groundwork for mamba-gguf (issue 13): hand-written CUDA C
//! kernels (`kernels/*.cu`), a CPU emulator of the CUDA execution model that
//! compiles the same sources as C++ (`emu/`), and the host code both run
//! under: [`Device::emu`] and [`Device::cuda`] share buffers, launch
//! configurations and parameter blocks. See `cuda/README.md` for the kernel
//! list, the Q8A activation format, and what the emulator does and does not
//! check.

pub mod cuda;
pub mod device;
mod emu;
pub mod error;
pub mod graph;
pub mod mma;
pub mod ops;
pub mod selftest;

pub use device::{Buffer, Counts, Device, Elem, View};
pub use error::{CudaError, Result};
