//! The GGUF reader on arbitrary bytes: `mamba_gguf_fuzz::gguf_reader` (fuzz/src/lib.rs) says what it feeds
//! and what it asserts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::gguf_reader(data));
