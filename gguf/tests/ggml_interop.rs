//! ggml's own C loader (gguf_init_from_file in libggml-base, e.g. from a
//! llama.cpp build, through scripts/gguf_fixtures/read_with_ggml.py) reads
//! what our writer writes, and accepts nothing our reader refuses.
//!
//! A manual check, not part of `cargo test --workspace`: it needs a
//! libggml-base.so, which CI cannot build in its time. This file is compiled
//! only with the `ggml-interop` feature; scripts/gguf_fixtures/ggml_check.sh
//! runs it (`GGML_BASE_LIB=/path/libggml-base.so bash scripts/gguf_fixtures/ggml_check.sh`),
//! and without GGML_BASE_LIB it fails rather than passing vacuously.

mod interop_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf::{GgufFile, Value};
use interop_common::*;
use serde_json::{json, Value as Json};

/// The Python to run read_with_ggml.py ($GGUF_PYTHON, else python3) and
/// $GGML_BASE_LIB, which must name an existing libggml-base.so.
fn ggml_reader() -> (String, String) {
    let lib = std::env::var("GGML_BASE_LIB")
        .expect("set GGML_BASE_LIB to a libggml-base.so (see scripts/gguf_fixtures/ggml_check.sh)");
    assert!(
        Path::new(&lib).exists(),
        "GGML_BASE_LIB={lib}: no such file"
    );
    let py = std::env::var("GGUF_PYTHON").unwrap_or_else(|_| "python3".into());
    (py, lib)
}

fn run_ggml(py: &str, lib: &str, files: &[PathBuf]) -> Vec<Json> {
    let script = repo().join("scripts/gguf_fixtures/read_with_ggml.py");
    let out = Command::new(py)
        .arg(&script)
        .arg(lib)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read_with_ggml.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if files.len() == 1 {
        // ggml's own log says why it refused a file.
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ggml_reads_our_writer_output() {
    let (py, lib) = ggml_reader();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let (md, specs, data) = our_file(&path, false);
    let got = run_ggml(&py, &lib, std::slice::from_ref(&path));
    let g = &got[0];
    assert_eq!(g["ok"], json!(true), "ggml refused our file");
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(g["version"], json!(3));
    assert_eq!(g["alignment"], json!(64));
    assert_eq!(g["data_offset"], json!(ours.data_offset()));
    let gmd = g["metadata"].as_array().unwrap();
    assert_eq!(gmd.len(), md.len());
    for ((k, v), g) in md.iter().zip(gmd) {
        assert_eq!(g["key"], json!(k));
        let (types, value) = gguf_py_view(v);
        assert_eq!(g["type"], json!(types[0]), "key {k}");
        if let Value::Array(_) = v {
            assert_eq!(g["elem"], json!(types[1]), "key {k}");
            assert!(
                same(&g["items"], &value),
                "key {k}: {} != {value}",
                g["items"]
            );
        } else {
            assert!(
                same(&g["value"], &value),
                "key {k}: {} != {value}",
                g["value"]
            );
        }
    }
    let gts = g["tensors"].as_array().unwrap();
    assert_eq!(gts.len(), specs.len());
    for ((s, d), (g, t)) in specs.iter().zip(&data).zip(gts.iter().zip(ours.tensors())) {
        let mut ne = s.dims.clone();
        ne.resize(4, 1);
        assert_eq!(g["name"], json!(s.name));
        assert_eq!(g["type"], json!(s.ty.id()), "{}", s.name);
        assert_eq!(g["ne"], json!(ne), "{}", s.name);
        assert_eq!(g["size"], json!(d.len()), "{}", s.name);
        assert_eq!(g["offset"], json!(t.offset), "{}", s.name);
    }
}

/// Differential check on randomly damaged files: whatever ggml's loader
/// accepts, we accept too, except for the checks we add on purpose (valid
/// UTF-8, bool bytes 0/1) or make earlier than ggml (tensor data inside the
/// file: gguf_init without data loading leaves that to llama.cpp's model
/// loader). The reverse need not hold: ggml also requires each tensor to
/// start exactly where the previous one's padding ends.
#[test]
fn ggml_accepts_nothing_we_refuse() {
    let (py, lib) = ggml_reader();
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    our_file(&base_path, false);
    let base = std::fs::read(&base_path).unwrap();
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut files = Vec::new();
    // Damage only the header, metadata and tensor infos (data bytes are opaque).
    let head = GgufFile::from_bytes(base.clone()).unwrap().data_offset() as usize;
    for i in 0..400 {
        let mut b = base.clone();
        for _ in 0..(1 + next() % 3) {
            let at = (next() % head as u64) as usize;
            b[at] = match next() % 3 {
                0 => next() as u8,
                1 => b[at].wrapping_add(1),
                _ => b[at] ^ (1 << (next() % 8)),
            };
        }
        let p = dir.path().join(format!("d{i}.gguf"));
        std::fs::write(&p, &b).unwrap();
        files.push(p);
    }
    let verdicts = run_ggml(&py, &lib, &files);
    assert_eq!(verdicts.len(), files.len());
    let (mut both_ok, mut both_err, mut only_ggml_err) = (0, 0, 0);
    for (p, v) in files.iter().zip(&verdicts) {
        let ggml_ok = v["ok"] == json!(true);
        match (ggml_ok, GgufFile::open(p)) {
            (true, Ok(_)) => both_ok += 1,
            (false, Err(_)) => both_err += 1,
            (false, Ok(_)) => only_ggml_err += 1,
            (true, Err(e)) => {
                let m = e.to_string();
                assert!(
                    m.contains("UTF-8")
                        || m.contains("bool byte")
                        || m.contains("runs past the end of the file"),
                    "ggml accepts {} but we refuse it: {m}",
                    p.display()
                );
            }
        }
    }
    eprintln!("both accept {both_ok}, both refuse {both_err}, only ggml refuses {only_ggml_err}");
    assert!(both_err > 100);
}
