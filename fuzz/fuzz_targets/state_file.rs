//! The state-file reader on arbitrary bytes, for the tiny fixture model: an
//! error, or a snapshot a session of that model accepts.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mamba_gguf::{state_file, Model, Session};

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

fuzz_target!(|data: &[u8]| {
    let m = model();
    if let Ok((snap, _note)) = state_file::decode(m, data, "fuzz") {
        let mut s = Session::new(m);
        s.restore(&snap).expect("a decoded snapshot restores");
    }
});
