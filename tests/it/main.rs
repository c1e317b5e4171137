//! The root crate's integration tests, one module per area, in one test
//! binary: one build and link against the crate and its dependencies
//! instead of one per file (22 binaries took ~210 s of the compile time of
//! a fresh `cargo test --workspace`, each 3-40 s; `cargo --timings`).
//! Run one area with a filter: `cargo test --test it server_http::`.
//!
//! Elsewhere: tests/cuda_emu.rs (its own binary: scripts/gpu/check.sh runs
//! it on a GPU), tests/solo (tests that must have the process to themselves,
//! or may be skipped at run time, on their own harness).

#[path = "../runtime_common/mod.rs"]
mod runtime_common;

mod batch_decode;
mod bench_cli;
mod chat_cli;
mod convert_cli;
mod crash_safety;
mod fuzz_seeds;
mod gguf_layouts;
mod imatrix_cli;
mod inspect_cli;
mod iq3_files;
mod load_modes;
mod run_state_cli;
mod runtime_cli;
mod runtime_errors;
mod runtime_reference;
mod server_anthropic;
mod server_echo;
mod server_http;
mod server_tools;
mod state_file_roundtrip;
mod state_pool;
mod tokenizer_cli;
mod tokenizer_falcon;
mod tokenizer_gguf;
