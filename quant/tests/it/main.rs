//! The quant crate's integration tests in one test binary (one link instead
//! of one per file). Elsewhere: simd_env.rs (its own binary: it sets
//! MAMBA_GGUF_SIMD, which every kernel lookup of this process would see).

mod accuracy;
mod dots;
mod errors;
mod goldens;
mod simd;
