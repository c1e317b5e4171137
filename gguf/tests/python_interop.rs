//! Interop with the `gguf` Python package (llama.cpp's gguf-py): we read what
//! its GGUFWriter wrote (committed fixtures + JSON of what was put in, from
//! scripts/gguf_fixtures/make_fixture.py), and its GGUFReader reads what we
//! write (run live when `import gguf` works; otherwise it is reported as
//! ignored with the reason, and fails under CI=true, where CI has installed
//! gguf and numpy). Its own harness (tests/support/harness.rs, `harness =
//! false` in Cargo.toml), so that a test that cannot run says so.
//!
//! ggml's C loader reading our files lives in scripts/gguf_fixtures/ggml_check.sh
//! (a manual check: it needs a libggml-base.so, which CI cannot build quickly).

#[path = "../../tests/support/harness.rs"]
mod harness;

mod interop_common;

use std::process::{Command, ExitCode};

use gguf::GgufFile;
use harness::{Ran, Skip};
use interop_common::*;
use serde_json::{json, Value as Json};

fn main() -> ExitCode {
    harness::main(vec![
        harness::test("reads_gguf_py_writer_output", reads_gguf_py_writer_output),
        harness::test(
            "reads_gguf_py_writer_output_align64",
            reads_gguf_py_writer_output_align64,
        ),
        harness::skippable(
            "gguf_py_reads_our_writer_output",
            gguf_py_reads_our_writer_output,
        ),
    ])
}

fn check_pywriter_fixture(name: &str) {
    let dir = repo().join("tests/fixtures/gguf");
    let f = GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap();
    let exp: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(json!(f.version()), exp["version"]);
    assert_eq!(json!(f.alignment()), exp["alignment"]);
    let md = exp["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), md.len(), "{name}: key count");
    for ((k, v), e) in f.metadata().iter().zip(md) {
        assert_eq!(json!(k), e["key"], "{name}: key order");
        let mut got = encode(v);
        got.as_object_mut().unwrap().insert("key".into(), json!(k));
        assert!(same(&got, e), "{name}: key {k}: {got} != {e}");
    }
    let ts = exp["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), ts.len());
    for (t, e) in f.tensors().iter().zip(ts) {
        assert_eq!(json!(t.name), e["name"]);
        assert_eq!(json!(t.dims), e["dims"], "{}", t.name);
        assert_eq!(json!(t.ty.name()), e["type"], "{}", t.name);
        assert_eq!(json!(t.n_elements), e["n_elements"], "{}", t.name);
        assert_eq!(json!(t.n_bytes), e["n_bytes"], "{}", t.name);
        assert_eq!(json!(t.offset), e["offset"], "{}", t.name);
        assert_eq!(json!(hex(f.tensor_data(t))), e["hex"], "{}", t.name);
    }
}

fn reads_gguf_py_writer_output() {
    check_pywriter_fixture("pywriter");
}

fn reads_gguf_py_writer_output_align64() {
    check_pywriter_fixture("pywriter-align64");
}

/// The Python interpreter to use: $GGUF_PYTHON, else python3, if it can
/// `import gguf`.
fn python_with_gguf() -> Option<String> {
    let candidates = std::env::var("GGUF_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import gguf, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

fn gguf_py_reads_our_writer_output() -> Ran {
    let py = python_with_gguf().ok_or_else(|| {
        Skip::needs(
            "no python3 with `gguf` and `numpy` (pip install gguf numpy, or set GGUF_PYTHON)",
        )
    })?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let (md, specs, data) = our_file(&path, true);
    let script = repo().join("scripts/gguf_fixtures/read_with_gguf_py.py");
    let out = Command::new(&py).arg(&script).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "gguf-py failed to read our file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(got["alignment"], json!(64));
    assert_eq!(got["data_offset"], json!(ours.data_offset()));
    let gmd = got["metadata"].as_array().unwrap();
    assert_eq!(gmd.len(), md.len());
    for ((k, v), g) in md.iter().zip(gmd) {
        let (types, value) = gguf_py_view(v);
        assert_eq!(g["key"], json!(k));
        assert_eq!(g["types"], json!(types), "key {k}");
        assert!(
            same(&g["value"], &value),
            "key {k}: {} != {value}",
            g["value"]
        );
    }
    let gts = got["tensors"].as_array().unwrap();
    assert_eq!(gts.len(), specs.len());
    let mut offset = 0u64;
    for ((s, d), g) in specs.iter().zip(&data).zip(gts) {
        assert_eq!(g["name"], json!(s.name));
        // GGUFReader reports shape innermost first, as stored.
        assert_eq!(g["dims"], json!(s.dims), "{}", s.name);
        assert_eq!(g["type"], json!(s.ty.name()), "{}", s.name);
        assert_eq!(g["n_bytes"], json!(d.len()), "{}", s.name);
        assert_eq!(g["offset"], json!(offset), "{}", s.name);
        assert_eq!(g["hex"], json!(hex(d)), "{}", s.name);
        offset += (d.len() as u64).next_multiple_of(64);
    }
    Ok(())
}
