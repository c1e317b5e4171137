//! Bad input: a clear error naming the problem and a non-zero exit, never a
//! panic. Broken GGUFs are made from the committed llama.cpp F32 file by
//! rewriting it (gguf::write_file) or by cutting bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runtime_common::*;
use gguf::Value;
use mamba_gguf::{Model, ModelError};

fn tiny() -> PathBuf {
    llamacpp_gguf("falcon-mamba-tiny-f32.gguf")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
}

/// Runs the CLI, expects failure without a panic, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded; stderr: {err}");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

fn load_err(p: &Path) -> ModelError {
    match Model::load(p) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e,
    }
}

#[test]
fn another_architecture_is_refused() {
    let dir = tempdir();
    let p = dir.path().join("llama.gguf");
    let mut parts = read_parts(&tiny());
    parts.set_meta("general.architecture", Value::String("llama".into()));
    write_parts(&parts, &p);
    let e = load_err(&p);
    assert!(matches!(e, ModelError::Architecture { .. }), "{e}");
    let err = fails(&["logits", "-m", p.to_str().unwrap(), "--ids", "1,2"]);
    assert!(err.contains("architecture is 'llama'"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempdir();
    let p = dir.path().join("missing.gguf");
    let mut parts = read_parts(&tiny());
    parts.tensors.retain(|(s, _)| s.name != "blk.1.ssm_d");
    write_parts(&parts, &p);
    let e = load_err(&p);
    assert!(
        matches!(&e, ModelError::MissingTensor { name, .. } if name == "blk.1.ssm_d"),
        "{e}"
    );
    let err = fails(&["run", "-m", p.to_str().unwrap(), "-p", "hi", "-n", "2"]);
    assert!(err.contains("missing tensor 'blk.1.ssm_d'"), "{err}");
}

#[test]
fn shapes_that_do_not_match_the_metadata_are_named() {
    let dir = tempdir();
    // Metadata says d_inner 64, the tensors are built for 128.
    let p = dir.path().join("inner.gguf");
    let mut parts = read_parts(&tiny());
    parts.set_meta("mamba.ssm.inner_size", Value::U32(64));
    write_parts(&parts, &p);
    let e = load_err(&p);
    assert!(
        matches!(&e, ModelError::Shape { name, .. } if name == "blk.0.ssm_in.weight"),
        "{e}"
    );
    let err = fails(&["logits", "-m", p.to_str().unwrap(), "--ids", "1"]);
    assert!(
        err.contains("blk.0.ssm_in.weight") && err.contains("{64, 128}"),
        "{err}"
    );

    // One tensor reshaped (same byte count): ssm_x {128, 40} -> {40, 128}.
    let p = dir.path().join("xshape.gguf");
    let mut parts = read_parts(&tiny());
    for (s, _) in &mut parts.tensors {
        if s.name == "blk.1.ssm_x.weight" {
            s.dims.reverse();
        }
    }
    write_parts(&parts, &p);
    let e = load_err(&p);
    assert!(
        matches!(&e, ModelError::Shape { name, .. } if name == "blk.1.ssm_x.weight"),
        "{e}"
    );

    // A bad metadata value: zero layers.
    let p = dir.path().join("zero.gguf");
    let mut parts = read_parts(&tiny());
    parts.set_meta("mamba.block_count", Value::U32(0));
    write_parts(&parts, &p);
    assert!(load_err(&p).to_string().contains("mamba.block_count"));

    // A missing key.
    let p = dir.path().join("nokey.gguf");
    let mut parts = read_parts(&tiny());
    parts.meta.retain(|(k, _)| k != "mamba.ssm.state_size");
    write_parts(&parts, &p);
    assert!(load_err(&p).to_string().contains("mamba.ssm.state_size"));
}

#[test]
fn an_unsupported_tensor_type_is_named() {
    let dir = tempdir();
    let p = dir.path().join("i32.gguf");
    let mut parts = read_parts(&tiny());
    for (s, _) in &mut parts.tensors {
        if s.name == "blk.0.ssm_out.weight" {
            s.ty = gguf::GgmlType::I32; // same byte size as F32
        }
    }
    write_parts(&parts, &p);
    let e = load_err(&p);
    assert!(
        matches!(&e, ModelError::TensorType { name, .. } if name == "blk.0.ssm_out.weight"),
        "{e}"
    );
}

#[test]
fn a_truncated_file_is_an_error() {
    let dir = tempdir();
    let p = dir.path().join("cut.gguf");
    let bytes = std::fs::read(tiny()).expect("read");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).expect("write");
    let _ = load_err(&p);
    fails(&["logits", "-m", p.to_str().unwrap(), "--ids", "1"]);
    std::fs::write(&p, &bytes[..100]).expect("write");
    let _ = load_err(&p);
    fails(&["run", "-m", p.to_str().unwrap(), "-p", "x"]);
}

#[test]
fn empty_prompts_and_bad_ids_are_refused() {
    let m = tiny();
    let m = m.to_str().unwrap();
    let err = fails(&["run", "-m", m, "-p", ""]);
    assert!(err.contains("prompt is empty"), "{err}");
    let err = fails(&["logits", "-m", m, "-p", ""]);
    assert!(err.contains("prompt is empty"), "{err}");
    let err = fails(&["logits", "-m", m, "--ids", ","]);
    assert!(err.contains("no tokens"), "{err}");
    let err = fails(&["logits", "-m", m, "--ids", "1,x"]);
    assert!(err.contains("'x'"), "{err}");
    let err = fails(&["logits", "-m", m, "--ids", "1,99999999"]);
    assert!(err.contains("token id 99999999 is out of range"), "{err}");
    let dir = tempdir();
    let f = dir.path().join("empty.txt");
    std::fs::write(&f, "").expect("write");
    let err = fails(&["run", "-m", m, "-f", f.to_str().unwrap()]);
    assert!(err.contains("prompt is empty"), "{err}");
    let model = Model::load(tiny()).expect("load");
    let mut s = mamba_gguf::Session::new(&model);
    assert!(matches!(s.feed(&[]), Err(ModelError::Empty)));
}

#[test]
fn a_prompt_file_that_is_not_utf8_is_refused() {
    let dir = tempdir();
    let f = dir.path().join("latin1.txt");
    std::fs::write(&f, b"caf\xe9 au lait").expect("write");
    let m = tiny();
    let err = fails(&["run", "-m", m.to_str().unwrap(), "-f", f.to_str().unwrap()]);
    assert!(
        err.contains("not UTF-8") && err.contains("offset 3"),
        "{err}"
    );
    let err = fails(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
    ]);
    assert!(err.contains("not UTF-8"), "{err}");
    let err = fails(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-f",
        "/nonexistent/prompt.txt",
    ]);
    assert!(err.contains("/nonexistent/prompt.txt"), "{err}");
}

#[test]
fn an_unknown_device_is_refused_with_the_choices() {
    let m = tiny();
    let m = m.to_str().unwrap();
    for cmd in ["run", "logits", "perplexity", "chat", "serve", "bench"] {
        let out = bin()
            .args([cmd, "-m", m, "--device", "tpu"])
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}: {err}");
        assert!(
            err.contains("unknown device 'tpu'") && err.contains("auto, cpu"),
            "{cmd}: {err}"
        );
    }
    // And the library refuses it the same way.
    let e = "tpu"
        .parse::<mamba_gguf::backend::DeviceRequest>()
        .expect_err("refused");
    assert!(matches!(e, ModelError::Device { .. }), "{e}");
}

/// An error during generation ends it with `Finish::Error`, never with
/// `Finish::Length` (which would read as "max tokens reached"): here the
/// prompt holds a token outside the vocabulary, so prefill fails.
#[test]
fn a_generation_error_finishes_as_an_error() {
    use mamba_gguf::generate::{Finish, Generate};
    use mamba_gguf::tokenizer::Tokenizer;
    use mamba_gguf::{Sampler, SamplerConfig, Session};
    let model = Model::load(tiny()).expect("fixture loads");
    let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
    let bad = u32::try_from(model.hp.n_vocab).expect("vocab fits u32") + 5;
    let mut session = Session::new(&model);
    let greedy = SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    };
    let mut gen = Generate::new(&mut session, &tok, Sampler::new(greedy), &[1, bad], 8);
    assert!(
        matches!(gen.next(), Some(Err(_))),
        "the bad prompt is an error"
    );
    assert_eq!(gen.finish(), Some(Finish::Error));
    assert!(gen.next().is_none(), "nothing after the error");
    assert_eq!(gen.finish(), Some(Finish::Error));
}
