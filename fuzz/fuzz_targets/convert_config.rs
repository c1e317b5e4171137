//! convert's JSON inputs (config.json, tokenizer_config.json):
//! `mamba_gguf_fuzz::convert_config` (fuzz/src/lib.rs), beside the small
//! bf16 fixture.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/falcon-mamba-small-bf16");
    mamba_gguf_fuzz::convert_config(&fixture, data)
});
