//! The convert crate's integration tests in one test binary (one link
//! instead of one per file). Elsewhere: gguf_py.rs (its own harness: it may
//! be skipped at run time).

#[path = "../common/mod.rs"]
mod common;

mod bnb;
mod errors;
mod falcon3;
mod llamacpp_identity;
mod llamacpp_quant_identity;
mod requantize;
mod roundtrip;
