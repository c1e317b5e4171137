//! Makes llama.cpp's GGUFs of the `falcon-mamba-tiny` fixture in
//! `tests/fixtures/llamacpp/` (git-ignored), byte for byte as llama.cpp
//! wrote them (tests/support/llamacpp_gguf.rs says how, and checks the
//! sha256 recorded in `tests/fixtures/llamacpp/files.json`), and prints
//! their paths. The Rust tests make them on demand; the Python tests, the
//! fuzz targets and the examples read them as files, so run this first:
//!
//! ```sh
//! cargo run --example llamacpp_fixtures
//! ```

#[allow(dead_code)]
#[path = "../tests/support/llamacpp_gguf.rs"]
mod llamacpp_gguf;

fn main() {
    for f in [
        "falcon-mamba-tiny-f32.gguf",
        "falcon-mamba-tiny-q4_k_m.gguf",
    ] {
        println!("{}", llamacpp_gguf::llamacpp_gguf(f).display());
    }
}
