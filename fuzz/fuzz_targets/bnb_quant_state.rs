//! The bitsandbytes quant-state JSON and its tensors: `mamba_gguf_fuzz::bnb_quant_state` (fuzz/src/lib.rs) says what it feeds
//! and what it asserts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::bnb_quant_state(data));
