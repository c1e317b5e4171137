//! Every committed fuzz seed (`fuzz/seeds/<target>/*`) through its target's
//! body (`fuzz/src/lib.rs`, the code cargo-fuzz runs): the seeds are the
//! inputs that once reached deep into each parser, so a regression that
//! makes one of them panic, or a change of API that breaks a target's body,
//! fails here, on stable, in the ordinary test run. Coverage-guided fuzzing
//! itself needs nightly and cargo-fuzz (fuzz/README.md).

use std::path::{Path, PathBuf};

use mamba_gguf::Model;

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_bodies;

use crate::runtime_common::llamacpp_gguf;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = root().join("fuzz/seeds").join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("seed folder entry").path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{}: no seeds", dir.display());
    v
}

#[test]
fn every_target_has_seeds_and_every_seed_folder_a_target() {
    let mut folders: Vec<String> = std::fs::read_dir(root().join("fuzz/seeds"))
        .expect("fuzz/seeds")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut targets: Vec<String> = fuzz_bodies::TARGETS.iter().map(|t| t.to_string()).collect();
    targets.sort();
    assert_eq!(folders, targets);
    for t in fuzz_bodies::TARGETS {
        let bin = root().join(format!("fuzz/fuzz_targets/{t}.rs"));
        assert!(bin.is_file(), "{} is missing", bin.display());
    }
}

#[test]
fn every_committed_seed_runs_through_its_target() {
    let model = Model::load(llamacpp_gguf("falcon-mamba-tiny-f32.gguf")).expect("tiny model");
    let fixture = root().join("tests/fixtures/hf/falcon-mamba-small-bf16");
    for t in fuzz_bodies::TARGETS {
        for seed in seeds(t) {
            let data = std::fs::read(&seed).expect("seed");
            let run = || match t {
                "gguf_reader" => fuzz_bodies::gguf_reader(&data),
                "gguf_tokenizer" => fuzz_bodies::gguf_tokenizer(&data),
                "state_file" => fuzz_bodies::state_file(&model, &data),
                "convert_config" => fuzz_bodies::convert_config(&fixture, &data),
                "safetensors_header" => fuzz_bodies::safetensors_header(&data),
                "chat_template" => fuzz_bodies::chat_template(&data),
                "openai_request" => fuzz_bodies::openai_request(&data),
                "bnb_quant_state" => fuzz_bodies::bnb_quant_state(&data),
                other => panic!("no body for fuzz target {other}"),
            };
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "fuzz target {t} panicked on its seed {}: {msg}",
                    seed.display()
                );
            }
        }
    }
}
