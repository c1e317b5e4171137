//! The tokenizer loader on the metadata of arbitrary GGUF bytes: `mamba_gguf_fuzz::gguf_tokenizer` (fuzz/src/lib.rs) says what it feeds
//! and what it asserts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::gguf_tokenizer(data));
