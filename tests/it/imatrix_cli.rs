//! `mamba-gguf imatrix` against llama-imatrix: on the same F32 model and
//! text, in 128-token chunks, the same matrices, token counts and chunk
//! count as the committed tests/fixtures/llamacpp-quant/mamba-tiny-tied.
//! imatrix.gguf (made by llama-imatrix, scripts/fixtures/
//! make_quant_manifests.py), and sums equal up to float summation order
//! (and the two runtimes' own rounding); then `quantize --imatrix` takes
//! our file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runtime_common::{ours_gguf, read_parts, root, tempdir, write_parts};
use convert::imatrix::Imatrix;
use convert::FileType;
use gguf::GgufFile;

const BIN: &str = env!("CARGO_BIN_EXE_mamba-gguf");

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/llamacpp-quant")
}

/// The F32 GGUF llama-imatrix ran on: ours of mamba-tiny-tied (an F16
/// checkpoint) with ssm_a rounded through f16, as llama.cpp computes it
/// (make_quant_manifests.py proves that file equal to llama.cpp's).
fn llamacpp_f32(dir: &Path) -> PathBuf {
    let mut p = read_parts(&ours_gguf("mamba-tiny-tied", FileType::F32));
    for (spec, bytes) in &mut p.tensors {
        if spec.name.ends_with(".ssm_a") {
            for c in bytes.chunks_exact_mut(4) {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                c.copy_from_slice(&half::f16::from_f32(x).to_f32().to_le_bytes());
            }
        }
    }
    let out = dir.join("tiny-f32.gguf");
    write_parts(&p, &out);
    out
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run mamba-gguf")
}

#[test]
fn imatrix_matches_llama_imatrix_and_feeds_quantize() {
    let dir = tempdir();
    let model = llamacpp_f32(dir.path());
    let text = fixtures().join("imatrix-text.txt");
    let out = dir.path().join("ours.imatrix.gguf");
    let o = run(&[
        "imatrix",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-c",
        "128",
        "-t",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[6/6]") && err.contains("ppl"), "{err}");

    let ours = Imatrix::load(&out).unwrap();
    let theirs = Imatrix::load(&fixtures().join("mamba-tiny-tied.imatrix.gguf")).unwrap();
    assert_eq!(ours.datasets, vec![text.to_string_lossy().into_owned()]);
    assert_eq!((ours.chunk_count, ours.chunk_size), (6, 128));
    assert_eq!(
        (ours.chunk_count, ours.chunk_size),
        (theirs.chunk_count, theirs.chunk_size)
    );
    assert_eq!(
        ours.entries.keys().collect::<Vec<_>>(),
        theirs.entries.keys().collect::<Vec<_>>()
    );
    for (name, t) in &theirs.entries {
        let o = &ours.entries[name];
        assert_eq!(o.counts, t.counts, "{name}: tokens counted");
        assert_eq!(o.in_sum2.len(), t.in_sum2.len(), "{name}");
        let worst = o
            .in_sum2
            .iter()
            .zip(&t.in_sum2)
            .map(|(&a, &b)| ((a - b).abs() / b.abs().max(1e-30)) as f64)
            .fold(0f64, f64::max);
        assert!(worst < 1e-4, "{name}: relative difference {worst:e}");
    }
    // The tensors in llama-imatrix's order (by matrix name, in_sum2 first).
    let names = |p: &Path| -> Vec<String> {
        let f = GgufFile::open(p).unwrap();
        f.tensors().iter().map(|t| t.name.clone()).collect()
    };
    assert_eq!(
        names(&out),
        names(&fixtures().join("mamba-tiny-tied.imatrix.gguf"))
    );

    // Q2_K_S needs the matrix; with ours it is made, and records it.
    let q = dir.path().join("q2ks.gguf");
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        q.to_str().unwrap(),
        "q2_k_s",
        "--imatrix",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&q).unwrap();
    assert_eq!(
        f.get_str("quantize.imatrix.file").unwrap(),
        out.to_str().unwrap()
    );
    assert_eq!(f.get_u32("quantize.imatrix.entries_count").unwrap(), 8);
    assert_eq!(f.get_u32("quantize.imatrix.chunks_count").unwrap(), 6);
}

#[test]
fn imatrix_refuses_what_it_cannot_do() {
    let dir = tempdir();
    let model = ours_gguf("mamba-tiny-tied", FileType::Q8_0);
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "only a few words").unwrap();
    let out = dir.path().join("m.gguf");
    let imatrix = || {
        let (m, f, o) = (model.to_str(), short.to_str(), out.to_str());
        run(&[
            "imatrix",
            "-m",
            m.unwrap(),
            "-f",
            f.unwrap(),
            "-o",
            o.unwrap(),
        ])
    };
    let o = imatrix();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--ctx-size") && err.contains("tokens"),
        "{err}"
    );
    assert!(!out.exists());
    // An existing output is kept without --force.
    std::fs::write(&out, b"keep").unwrap();
    let o = imatrix();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}
