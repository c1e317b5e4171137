//! The gguf crate's integration tests in one test binary (one link instead
//! of one per file). Elsewhere: damaged.rs (its own binary: it installs a
//! recording global allocator), python_interop.rs (its own harness: it may
//! be skipped at run time) and ggml_interop.rs (a manual check).

mod real_files;
mod round_trip;
