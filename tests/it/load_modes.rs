//! The two ways a model file gets into memory: mapped (`--mmap`, the
//! library's `Model::load`) and read into anonymous memory with huge pages
//! (the CLI's default on the CPU). Same bytes, same model, same output.

use std::process::Command;

use crate::runtime_common::*;
use gguf::GgufFile;
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::Model;

#[test]
fn a_file_read_into_memory_equals_the_mapped_file() {
    let p = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let mapped = GgufFile::open(&p).expect("map");
    let read = GgufFile::open_in_memory(&p).expect("read");
    assert_eq!(mapped.as_bytes(), read.as_bytes());
    assert_eq!(read.path(), Some(p.as_path()));
    let r = reference("falcon-mamba-tiny");
    let a = all_logits(
        &Model::load_with(&p, DeviceRequest::Cpu, false).unwrap(),
        &r.prompt_ids,
        64,
    );
    let b = all_logits(
        &Model::load_with(&p, DeviceRequest::Cpu, true).unwrap(),
        &r.prompt_ids,
        64,
    );
    assert_eq!(a, b);
    // Errors name the file.
    let missing = root().join("tests/fixtures/no-such-model.gguf");
    let e = GgufFile::open_in_memory(&missing).unwrap_err().to_string();
    assert!(e.contains("no-such-model.gguf"), "{e}");
}

#[test]
fn run_gives_the_same_text_mapped_or_read() {
    let p = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
            .args(["run", "-m"])
            .arg(&p)
            .args([
                "-p",
                "The falcon",
                "-n",
                "12",
                "--temp",
                "0",
                "--device",
                "cpu",
            ])
            .args(extra)
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(run(&[]), run(&["--mmap"]));
}
