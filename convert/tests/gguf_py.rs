//! An independent reader: the `gguf` Python package (gguf-py) reads our files
//! and dequantizes every tensor; its values must equal ours. When no Python
//! with `gguf` and `numpy` is found ($MAMBA_GGUF_PYTHON, then python3) it
//! is reported as ignored with the reason, and fails under CI=true (CI
//! installs both). Its own harness (tests/support/harness.rs, `harness =
//! false` in Cargo.toml), so that a test that cannot run says so.

mod common;
#[path = "../../tests/support/harness.rs"]
mod harness;

use std::process::{Command, ExitCode};

use common::*;
use convert::mix::ALL_TYPES;
use gguf::GgufFile;
use harness::{Ran, Skip};

fn main() -> ExitCode {
    harness::main(vec![harness::skippable(
        "gguf_py_reads_and_dequantizes_our_files_like_we_do",
        gguf_py_reads_and_dequantizes_our_files_like_we_do,
    )])
}

fn python() -> Option<String> {
    let mut cands = Vec::new();
    if let Ok(p) = std::env::var("MAMBA_GGUF_PYTHON") {
        cands.push(p);
    }
    cands.push("python3".into());
    cands.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import gguf, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn gguf_py_reads_and_dequantizes_our_files_like_we_do() -> Ran {
    let py = python().ok_or_else(|| {
        Skip::needs(
            "no python with `gguf` and `numpy` (pip install gguf numpy, or set MAMBA_GGUF_PYTHON)",
        )
    })?;
    let script = root().join("convert/tests/py/gguf_dequant.py");
    let tmp = tempfile::tempdir().unwrap();
    // The types that need an importance matrix (refused without one, as
    // llama-quantize does) are made with the fixture's, llama-imatrix's.
    for &ft in ALL_TYPES {
        let out = tmp.path().join(format!("{}.gguf", ft.name()));
        let fx = "falcon-mamba-small-bf16";
        let imatrix = needs_imatrix(ft).then(|| fixture_imatrix(fx));
        convert_with(&hf(fx), &out, ft, false, imatrix).unwrap();
        let dump = tmp.path().join(ft.name());
        let o = Command::new(&py)
            .arg(&script)
            .arg(&out)
            .arg(&dump)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let f = GgufFile::open(&out).unwrap();
        let types = std::fs::read_to_string(dump.join("types.txt")).unwrap();
        assert_eq!(types.lines().count(), f.tensors().len());
        for line in types.lines() {
            let mut it = line.split(' ');
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            let t = f.tensor(name).unwrap();
            assert_eq!(t.ty.name(), ty, "{name}");
            let theirs: Vec<f32> = std::fs::read(dump.join(format!("{name}.f32")))
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let n = t.row_len() as usize;
            let mut ours = vec![0f32; t.n_elements as usize];
            let rb = t.ty.row_bytes(n).unwrap();
            for (row, o) in f
                .tensor_data(t)
                .chunks_exact(rb)
                .zip(ours.chunks_exact_mut(n))
            {
                quant::dequantize_row(t.ty, row, o).unwrap();
            }
            assert_eq!(theirs.len(), ours.len(), "{name}");
            for (i, (a, b)) in theirs.iter().zip(&ours).enumerate() {
                assert!(
                    a == b || (a - b).abs() <= 1e-6 * a.abs().max(1e-30),
                    "{} {name}[{i}]: gguf-py {a}, ours {b}",
                    ft.name()
                );
            }
        }
    }
    Ok(())
}
