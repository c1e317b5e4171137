//! Falcon3-Mamba-7B checkpoints as TII publishes them: config.json says
//! eos 0 (the padding token) and has no context key, the Instruct
//! generation_config.json says [10, 11], mixer_rms_eps is 1e-5. The fixtures
//! (tests/fixtures/hf/falcon3-mamba-*-tiny, made by
//! scripts/fixtures/make_hf_fixtures.py) carry those files at a tiny width;
//! their logits are checked against transformers in tests/it/runtime_reference.rs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::common::*;
use convert::{ConvertOptions, FileType};
use gguf::{Array, GgufFile};

fn convert_f32(dir: &Path, out: &Path) -> (GgufFile, Vec<String>) {
    let mut warnings = Vec::new();
    let opts = ConvertOptions {
        file_type: FileType::F32,
        threads: Some(1),
        ..ConvertOptions::default()
    };
    convert::convert(dir, out, &opts, &AtomicBool::new(false), &mut |p| {
        if let convert::Progress::Warning(w) = p {
            warnings.push(w)
        }
    })
    .unwrap_or_else(|e| panic!("convert {}: {e}", dir.display()));
    (GgufFile::open(out).unwrap(), warnings)
}

fn stop_ids(f: &GgufFile) -> Vec<u32> {
    match f.get_array("tokenizer.ggml.eos_token_ids").unwrap() {
        Array::U32(v) => v.clone(),
        other => panic!("eos_token_ids is {other:?}"),
    }
}

#[test]
fn falcon3_instruct_gets_its_eps_context_stop_ids_and_template() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, _) = convert_f32(
        &hf("falcon3-mamba-instruct-tiny"),
        &tmp.path().join("i.gguf"),
    );
    assert!(f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-5);
    // No context key in config.json: models.toml's 32k, not a family default.
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 32768);
    // generation_config.json's [10, 11]; config.json's eos 0 is the padding
    // token and must never stop generation.
    assert_eq!(stop_ids(&f), vec![10, 11]);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 11);
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 8);
    assert_eq!(f.get_u32("tokenizer.ggml.padding_token_id").unwrap(), 0);
    let Array::String(tokens) = f.get_array("tokenizer.ggml.tokens").unwrap() else {
        panic!("tokens")
    };
    assert_eq!(
        &tokens[7..12],
        [
            "assistant",
            "<|begin_of_text|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|end_of_text|>"
        ]
    );
    let t = f.get_str("tokenizer.chat_template").unwrap();
    assert!(t.contains("<|im_start|>") && t.contains("add_generation_prompt"));
}

#[test]
fn falcon3_base_never_stops_on_the_padding_id() {
    // Base: config.json and generation_config.json both say eos 0 (>>TITLE<<,
    // the padding id); the tokenizer's eos is <|endoftext|> (11).
    let tmp = tempfile::tempdir().unwrap();
    let (f, _) = convert_f32(&hf("falcon3-mamba-base-tiny"), &tmp.path().join("b.gguf"));
    assert_eq!(stop_ids(&f), vec![11]);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 11);
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 32768);
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-5);
    assert!(f.get("tokenizer.chat_template").is_none());
}

/// A copy of a fixture inside a Hugging Face hub cache layout, without
/// `_name_or_path`: only the cache's repo folder names the model.
fn in_hub_cache(fixture: &str, repo_folder: &str, tmp: &Path) -> PathBuf {
    let d = tmp.join(repo_folder).join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(hf(fixture)).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::symlink(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    let cfg = d.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("_name_or_path");
    v.as_object_mut().unwrap().remove("mixer_rms_eps");
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    d
}

#[test]
fn a_hub_cache_snapshot_is_known_by_its_repo_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let d = in_hub_cache(
        "falcon3-mamba-instruct-tiny",
        "models--tiiuae--Falcon3-Mamba-7B-Instruct",
        tmp.path(),
    );
    let (f, warnings) = convert_f32(&d, &tmp.path().join("c.gguf"));
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 32768);
    // config.json without mixer_rms_eps: the known model's 1e-5, not
    // transformers' default 1e-6.
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-5);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("falcon3-mamba-7b-instruct")),
        "the tiny fixture's sizes differ from the 7B's: {warnings:?}"
    );
    // An unknown folder gets neither.
    let d = in_hub_cache(
        "falcon3-mamba-instruct-tiny",
        "models--someone--tiny",
        tmp.path(),
    );
    let (f, _) = convert_f32(&d, &tmp.path().join("u.gguf"));
    assert_ne!(f.get_u32("mamba.context_length").unwrap(), 32768);
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-6);
}
