//! The state-file reader on arbitrary bytes, for llama.cpp's falcon-mamba-tiny
//! F32 file: `mamba_gguf_fuzz::state_file` (fuzz/src/lib.rs).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mamba_gguf::Model;

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        // llama.cpp's file, not committed: rebuilt byte for byte by the
        // repository's tests or `cargo run --example llamacpp_fixtures`.
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/llamacpp/falcon-mamba-tiny-f32.gguf"
        );
        Model::load(p).unwrap_or_else(|e| {
            panic!(
                "{p}: {e} (make it: cargo run --example llamacpp_fixtures, in the repository root)"
            )
        })
    })
}

fuzz_target!(|data: &[u8]| mamba_gguf_fuzz::state_file(model(), data));
