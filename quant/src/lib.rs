//! ggml block formats: bit-exact reference quantizers, dequantizers and the
//! dot-product kernels the runtime's matmuls are built from. Pure compute: no
//! I/O and no model knowledge.

pub mod types;

pub use types::GgmlType;
