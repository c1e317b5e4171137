//! The OpenAI request parser on arbitrary bodies: `mamba_gguf_fuzz::openai_request` (fuzz/src/lib.rs) says what it feeds
//! and what it asserts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::openai_request(data));
