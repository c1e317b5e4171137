//! Every refusal names the file and tensor or field at fault, and leaves no
//! output (nor temp file) behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::common::*;
use convert::config::Variant;
use convert::{ConvertError, ConvertOptions, FileType};
use safetensors::tensor::{Dtype, TensorView};

struct T {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn read_tensors(path: &Path) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<T> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| T {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn write_tensors(path: &Path, ts: &[T]) {
    let views: Vec<(String, TensorView<'_>)> = ts
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Copy a fixture folder (large files linked, not copied).
fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let src = hf(name);
    let dst = to.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let d = dst.join(p.file_name().unwrap());
        if std::fs::metadata(&p).unwrap().len() > 4 << 20 {
            std::os::unix::fs::symlink(&p, &d).unwrap();
        } else {
            std::fs::copy(&p, &d).unwrap();
        }
    }
    dst
}

fn edit_tensors(dir: &Path, f: impl FnOnce(&mut Vec<T>)) {
    let p = dir.join("model.safetensors");
    let mut ts = read_tensors(&p);
    f(&mut ts);
    std::fs::remove_file(&p).unwrap();
    write_tensors(&p, &ts);
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Convert, expect an error containing every `needles`, and check that the
/// output folder holds nothing afterwards.
fn expect_err(dir: &Path, needles: &[&str]) -> ConvertError {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.gguf");
    let err = convert_to(dir, &out, FileType::Q4_K_M, false).expect_err("conversion should fail");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    err
}

#[test]
fn missing_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_tensors(&d, |ts| {
        ts.retain(|t| t.name != "backbone.layers.1.mixer.x_proj.weight")
    });
    expect_err(
        &d,
        &[
            "model.safetensors",
            "backbone.layers.1.mixer.x_proj.weight",
            "missing",
        ],
    );
}

#[test]
fn extra_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_tensors(&d, |ts| {
        ts.push(T {
            name: "backbone.layers.2.norm.weight".into(),
            dtype: Dtype::F16,
            shape: vec![256],
            data: vec![0; 512],
        })
    });
    expect_err(
        &d,
        &[
            "model.safetensors",
            "backbone.layers.2.norm.weight",
            "unexpected tensor",
        ],
    );
}

#[test]
fn mis_shaped_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_tensors(&d, |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == "backbone.layers.1.mixer.x_proj.weight")
            .unwrap();
        t.shape = vec![40, 512];
        t.data.truncate(40 * 512 * 2);
    });
    expect_err(
        &d,
        &[
            "model.safetensors",
            "backbone.layers.1.mixer.x_proj.weight",
            "[40, 512]",
            "[48, 512]",
        ],
    );
}

#[test]
fn config_disagrees_with_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_config(&d, |c| c["intermediate_size"] = 1024.into());
    expect_err(&d, &["backbone.layers.0.mixer.D", "intermediate_size"]);
}

#[test]
fn unsupported_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_tensors(&d, |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == "backbone.layers.0.mixer.D")
            .unwrap();
        t.dtype = Dtype::F64;
        t.shape = vec![128];
    });
    expect_err(
        &d,
        &[
            "model.safetensors",
            "backbone.layers.0.mixer.D",
            "unsupported dtype",
        ],
    );
}

#[test]
fn unsupported_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_config(&d, |c| {
        c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        c["model_type"] = "llama".into();
    });
    expect_err(
        &d,
        &[
            "config.json",
            "unsupported architecture",
            "LlamaForCausalLM",
        ],
    );
}

#[test]
fn missing_config_field_and_bad_json() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_config(&d, |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    expect_err(&d, &["config.json", "hidden_size"]);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    expect_err(&d, &["config.json", "invalid JSON"]);
}

#[test]
fn untied_without_head() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    edit_config(&d, |c| c["tie_word_embeddings"] = false.into());
    expect_err(&d, &["lm_head.weight", "tie_word_embeddings false"]);
}

#[test]
fn inconsistent_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("falcon-mamba-small-bf16", tmp.path());
    let idx = d.join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    let moved = "backbone.layers.0.mixer.in_proj.weight";
    let real = v["weight_map"][moved].as_str().unwrap().to_string();
    let other = if real.contains("00001") {
        "model-00002-of-00004.safetensors"
    } else {
        "model-00001-of-00004.safetensors"
    };
    v["weight_map"][moved] = other.into();
    std::fs::write(&idx, serde_json::to_string(&v).unwrap()).unwrap();
    expect_err(&d, &[moved, &real, other]);

    // A shard named by the index but absent.
    v["weight_map"][moved] = real.clone().into();
    std::fs::write(&idx, serde_json::to_string(&v).unwrap()).unwrap();
    std::fs::remove_file(d.join(&real)).unwrap();
    expect_err(&d, &[&real]);
}

#[test]
fn no_weights_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let d = copy_fixture("mamba-tiny-tied", tmp.path());
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    expect_err(&d, &["no model.safetensors"]);
}

#[test]
fn existing_output_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let err = convert_to(&hf("mamba-tiny-tied"), &out, FileType::Q8_0, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let opts = ConvertOptions {
        file_type: FileType::Q8_0,
        pure: false,
        force: true,
        threads: Some(1),
        arch: None,
        imatrix: None,
    };
    convert::convert(
        &hf("mamba-tiny-tied"),
        &out,
        &opts,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(gguf::GgufFile::open(&out).is_ok());
}

#[test]
fn cancelled_conversion_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let opts = ConvertOptions::default();
    let cancel = AtomicBool::new(true);
    let err =
        convert::convert(&hf("mamba-tiny-tied"), &out, &opts, &cancel, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ConvertError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("token_embd.weight"), "{err}");
    assert!(err.to_string().contains("out.gguf"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Converts `dir` to F32 and returns the file and the warnings.
fn convert_f32(dir: &Path, out: &Path, arch: Option<Variant>) -> (gguf::GgufFile, Vec<String>) {
    let mut warnings = Vec::new();
    let opts = ConvertOptions {
        file_type: FileType::F32,
        arch,
        ..ConvertOptions::default()
    };
    convert::convert(dir, out, &opts, &AtomicBool::new(false), &mut |p| {
        if let convert::Progress::Warning(w) = p {
            warnings.push(w)
        }
    })
    .unwrap();
    (gguf::GgufFile::open(out).unwrap(), warnings)
}

/// falcon-mamba-tiny (Falcon's tokenizer) with a config.json that says plain
/// Mamba, in a folder called `name`.
fn falcon_tokenizer_labelled_mamba(tmp: &Path, name: &str) -> PathBuf {
    let d0 = copy_fixture("falcon-mamba-tiny", tmp);
    let d = tmp.join(name);
    std::fs::rename(&d0, &d).unwrap();
    edit_config(&d, |c| {
        c["architectures"] = serde_json::json!(["MambaForCausalLM"]);
        c["model_type"] = "mamba".into();
        c.as_object_mut().unwrap().remove("mixer_rms_eps");
    });
    d
}

#[test]
fn config_decides_the_architecture_not_the_tokenizer() {
    // Plain Mamba-1 checkpoints are trained with Falcon's tokenizer too: the
    // tokenizer only adds a warning, config.json says what the model is.
    let tmp = tempfile::tempdir().unwrap();
    let d = falcon_tokenizer_labelled_mamba(tmp.path(), "some-mamba");
    let (f, warnings) = convert_f32(&d, &tmp.path().join("out.gguf"), None);
    assert!(!f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert!(f.get("mamba.ssm.dt_b_c_rms_eps").is_none());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Falcon's tokenizer") && w.contains("--arch falcon-mamba")),
        "{warnings:?}"
    );
}

#[test]
fn arch_option_overrides_config() {
    let tmp = tempfile::tempdir().unwrap();
    let d = falcon_tokenizer_labelled_mamba(tmp.path(), "some-mamba");
    let (f, warnings) = convert_f32(&d, &tmp.path().join("out.gguf"), Some(Variant::FalconMamba));
    assert!(f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    // transformers' default mixer_rms_eps when config.json has none.
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-6);
    assert!(
        warnings.iter().any(|w| w.contains("--arch")),
        "{warnings:?}"
    );
    // And the other way: a Falcon Mamba config converted as plain Mamba.
    let (f, _) = convert_f32(
        &hf("falcon-mamba-tiny"),
        &tmp.path().join("plain.gguf"),
        Some(Variant::Mamba),
    );
    assert!(!f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
}

#[test]
fn the_known_mislabelled_upload_is_recognised_by_name() {
    // The first revision of tiiuae/falcon-mamba-7b-instruct-4bit said
    // model_type "mamba"; models.toml records that mislabel.
    let tmp = tempfile::tempdir().unwrap();
    let d = falcon_tokenizer_labelled_mamba(tmp.path(), "falcon-mamba-7b-instruct-4bit");
    let (f, warnings) = convert_f32(&d, &tmp.path().join("out.gguf"), None);
    assert!(f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-6);
    assert!(
        warnings.iter().any(|w| w.contains("mislabel")),
        "{warnings:?}"
    );
    // A known Falcon Mamba name without a recorded mislabel: config.json
    // wins, with a warning that says how to override it.
    let tmp = tempfile::tempdir().unwrap();
    let d = falcon_tokenizer_labelled_mamba(tmp.path(), "falcon-mamba-7b");
    let (f, warnings) = convert_f32(&d, &tmp.path().join("out.gguf"), None);
    assert!(!f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("models.toml lists falcon-mamba-7b") && w.contains("--arch")),
        "{warnings:?}"
    );
}

#[test]
fn known_checkpoint_mismatch_warns() {
    // A folder named like a known checkpoint whose config disagrees.
    let tmp = tempfile::tempdir().unwrap();
    let d0 = copy_fixture("mamba-tiny-tied", tmp.path());
    let d = tmp.path().join("mamba-130m-hf");
    std::fs::rename(&d0, &d).unwrap();
    let out = tmp.path().join("out.gguf");
    let mut warnings = Vec::new();
    convert::convert(
        &d,
        &out,
        &ConvertOptions::default(),
        &AtomicBool::new(false),
        &mut |p| {
            if let convert::Progress::Warning(w) = p {
                warnings.push(w)
            }
        },
    )
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("hidden_size is 256") && w.contains("768")),
        "{warnings:?}"
    );
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 8192);
}
