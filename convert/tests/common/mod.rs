//! Helpers shared by the convert integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use convert::{ConvertOptions, FileType, Progress};
use gguf::{Array, GgufFile, Value};
use sha2::{Digest, Sha256};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn hf(name: &str) -> PathBuf {
    root().join("tests/fixtures/hf").join(name)
}

#[path = "../../../tests/support/llamacpp_gguf.rs"]
mod llamacpp_fixture;
/// llama.cpp's own GGUF `name` of the tiny fixture, rebuilt byte for byte
/// (tests/support/llamacpp_gguf.rs).
#[allow(unused_imports)] // not every test binary asks for one
pub use llamacpp_fixture::llamacpp_gguf;

pub fn llamacpp(name: &str) -> PathBuf {
    root().join("tests/fixtures/llamacpp").join(name)
}

pub fn sha256(b: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

pub fn convert_to(
    dir: &Path,
    out: &Path,
    ft: FileType,
    pure: bool,
) -> convert::Result<convert::Summary> {
    convert_with(dir, out, ft, pure, None)
}

/// [`convert_to`] with an importance matrix.
pub fn convert_with(
    dir: &Path,
    out: &Path,
    ft: FileType,
    pure: bool,
    imatrix: Option<convert::imatrix::ImatrixInput>,
) -> convert::Result<convert::Summary> {
    let opts = ConvertOptions {
        file_type: ft,
        pure,
        force: false,
        threads: Some(2),
        arch: None,
        imatrix,
    };
    let cancel = AtomicBool::new(false);
    convert::convert(dir, out, &opts, &cancel, &mut |_p: Progress<'_>| {})
}

/// gguf-py's lower-case name of a value's type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "uint8",
        Value::I8(_) => "int8",
        Value::U16(_) => "uint16",
        Value::I16(_) => "int16",
        Value::U32(_) => "uint32",
        Value::I32(_) => "int32",
        Value::F32(_) => "float32",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::U64(_) => "uint64",
        Value::I64(_) => "int64",
        Value::F64(_) => "float64",
    }
}

/// (element type name, length, sha256 over GGUF's element encoding).
pub fn array_digest(a: &Array) -> (&'static str, usize, String) {
    let mut h = Sha256::new();
    let (name, len) = match a {
        Array::String(v) => {
            for s in v {
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            ("string", v.len())
        }
        Array::I32(v) => {
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
            ("int32", v.len())
        }
        Array::U32(v) => {
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
            ("uint32", v.len())
        }
        Array::F32(v) => {
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
            ("float32", v.len())
        }
        Array::U8(v) => {
            h.update(v);
            ("uint8", v.len())
        }
        Array::I64(v) => {
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
            ("int64", v.len())
        }
        Array::U64(v) => {
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
            ("uint64", v.len())
        }
        _ => ("other", 0),
    };
    let d: String = h.finalize().iter().map(|x| format!("{x:02x}")).collect();
    (name, len, d)
}

/// Keys whose llama.cpp value comes from name heuristics or that we
/// deliberately write differently (documented in the README of the fixtures).
pub const KEYS_WE_DIFFER_ON: &[&str] = &[
    "general.basename",
    "general.size_label",
    "general.finetune",
    "general.version",
    "mamba.context_length",
];

/// Compare a GGUF with a llama.cpp manifest; returns every difference.
/// Differences between our file and a llama.cpp manifest. `f16_source`: the
/// checkpoint is F16, where llama.cpp's `ssm_a` is ours rounded through f16.
pub fn diff_manifest(f: &GgufFile, manifest: &serde_json::Value, f16_source: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let tensors = manifest["tensors"].as_array().unwrap();
    if tensors.len() != f.tensors().len() {
        diffs.push(format!(
            "tensor count: ours {}, llama.cpp {}",
            f.tensors().len(),
            tensors.len()
        ));
    }
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let Some(ours) = f.tensor(name) else {
            diffs.push(format!("{name}: missing"));
            continue;
        };
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        if ours.dims != dims {
            diffs.push(format!(
                "{name}: dims {:?} vs llama.cpp {dims:?}",
                ours.dims
            ));
        }
        if ours.ty.name() != t["type"].as_str().unwrap() {
            diffs.push(format!(
                "{name}: type {} vs llama.cpp {}",
                ours.ty.name(),
                t["type"]
            ));
            continue;
        }
        let want = t["sha256"].as_str().unwrap();
        let data = f.tensor_data(ours);
        if sha256(data) != want {
            // llama.cpp computes ssm_a = -exp(A_log) in the source dtype, so
            // from an F16 checkpoint its A is ours rounded through f16 (we
            // compute it in f32 as transformers does). Exactly that, and
            // nothing else, is allowed to differ.
            let f16_rounded = || {
                let v: Vec<u8> = data
                    .chunks_exact(4)
                    .flat_map(|b| {
                        let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        half::f16::from_f32(x).to_f32().to_le_bytes()
                    })
                    .collect();
                sha256(&v) == want
            };
            let allowed = f16_source
                && name.ends_with(".ssm_a")
                && ours.ty == gguf::GgmlType::F32
                && f16_rounded();
            if !allowed {
                diffs.push(format!("{name} ({}): bytes differ", ours.ty.name()));
            }
        }
    }
    for (k, want) in manifest["metadata"].as_object().unwrap() {
        if KEYS_WE_DIFFER_ON.contains(&k.as_str()) {
            continue;
        }
        let Some(v) = f.get(k) else {
            diffs.push(format!("metadata {k}: missing"));
            continue;
        };
        let ok = match v {
            Value::Array(a) => {
                let (et, len, sha) = array_digest(a);
                want["array"] == et && want["len"] == len && want["sha256"] == sha.as_str()
            }
            Value::String(s) => want["string"] == s.as_str(),
            Value::Bool(b) => want["bool"] == *b,
            Value::F32(x) => want["float32"].as_f64() == Some(f64::from(*x)),
            Value::U32(x) => want["uint32"] == *x,
            Value::I32(x) => want["int32"] == *x,
            Value::U64(x) => want["uint64"] == *x,
            other => want.get(type_name(other)).is_some(),
        };
        if !ok {
            let shown = match v {
                Value::Array(a) => format!("{:?}", array_digest(a)),
                Value::String(s) if s.len() > 200 => format!("string of {} bytes", s.len()),
                other => format!("{other:?}"),
            };
            diffs.push(format!("metadata {k}: ours {shown}, llama.cpp {want}"));
        }
    }
    diffs
}

/// (type, --pure, --imatrix) of a manifest's `<type>[.pure][.imatrix]`.
pub fn type_from_manifest_name(s: &str) -> (FileType, bool, bool) {
    let (s, imatrix) = match s.strip_suffix(".imatrix") {
        Some(t) => (t, true),
        None => (s, false),
    };
    let (t, pure) = match s.strip_suffix(".pure") {
        Some(t) => (t, true),
        None => (s, false),
    };
    (FileType::parse(t).unwrap(), pure, imatrix)
}

/// Whether llama-quantize (and so `convert`) needs an importance matrix for
/// file type `ft` (Q2_K_S, IQ3_XXS, the IQ2 and IQ1 files).
pub fn needs_imatrix(ft: FileType) -> bool {
    convert::mix::requires_imatrix(ft, "blk.0.ssm_in.weight", ft.base())
}

/// The fixture's importance matrix made by llama-imatrix
/// (tests/fixtures/llamacpp-quant/<fixture>.imatrix.gguf), recorded as its
/// bare file name, as make_quant_manifests.py gave it to llama-quantize.
pub fn fixture_imatrix(fixture: &str) -> convert::imatrix::ImatrixInput {
    let name = format!("{fixture}.imatrix.gguf");
    let path = root().join("tests/fixtures/llamacpp-quant").join(&name);
    let mut m = convert::imatrix::ImatrixInput::load(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    m.given_as = name;
    m
}

/// The manifests `<fixture>.<type>[.pure].json` in `dir` (other JSON files,
/// such as llamacpp/files.json, are not manifests), as (fixture, type, path),
/// sorted.
pub fn manifests_in(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "files.json" {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".json") {
            let (fixture, ty) = stem.split_once('.').unwrap();
            out.push((fixture.to_string(), ty.to_string(), p));
        }
    }
    out.sort();
    out
}

/// Converts each manifest's fixture to its type with our `convert` and
/// compares the file with the manifest; panics listing every difference.
pub fn assert_conversions_match(ms: &[(String, String, PathBuf)]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (fixture, ty, path) in ms {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (ft, pure, imatrix) = type_from_manifest_name(ty);
        let out = tmp.path().join(format!("{fixture}.{ty}.gguf"));
        let imatrix = imatrix.then(|| fixture_imatrix(fixture));
        convert_with(&hf(fixture), &out, ft, pure, imatrix)
            .unwrap_or_else(|e| panic!("{fixture} {ty}: {e}"));
        let f = GgufFile::open(&out).unwrap();
        // mamba-tiny-tied is the F16 checkpoint.
        let d = diff_manifest(&f, &manifest, fixture == "mamba-tiny-tied");
        if !d.is_empty() {
            failures.push(format!("{fixture} {ty}:\n  {}", d.join("\n  ")));
        }
        std::fs::remove_file(&out).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        ms.len(),
        failures.join("\n")
    );
}
