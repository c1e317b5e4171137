//! convert's safetensors reading: `mamba_gguf_fuzz::safetensors_header` (fuzz/src/lib.rs) says what it feeds
//! and what it asserts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::safetensors_header(data));
