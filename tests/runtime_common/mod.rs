//! Shared helpers of the runtime tests: the transformers reference files, the
//! GGUFs to test, GGUF rewriting (requantize, break) and comparison measures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use gguf::{GgmlType, GgufFile, TensorSpec, Value};

#[path = "../support/llamacpp_gguf.rs"]
mod llamacpp_fixture;
pub use llamacpp_fixture::llamacpp_gguf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One fixture's golden data from scripts/reference/make_reference_logits.py.
pub struct Reference {
    pub name: String,
    pub prompt_ids: Vec<u32>,
    pub positions: usize,
    pub vocab: usize,
    /// [positions][vocab]
    pub logits: Vec<f32>,
    /// (first position, [rows][vocab]) with mixer_rms_eps = 1e-5 (Falcon only).
    pub eps_logits: Option<(usize, Vec<f32>)>,
    pub std: f64,
    pub greedy_ids: Vec<u32>,
    pub greedy_margins: Vec<f32>,
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn reference(name: &str) -> Reference {
    let dir = root().join("tests/fixtures/reference");
    let p = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let j: serde_json::Value = serde_json::from_str(&text).expect("reference json");
    let ids = |k: &str| -> Vec<u32> {
        j[k].as_array()
            .expect(k)
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect()
    };
    let positions = j["positions"].as_u64().expect("positions") as usize;
    let vocab = j["vocab"].as_u64().expect("vocab") as usize;
    let logits = read_f32(&dir.join(j["logits_file"].as_str().expect("logits_file")));
    assert_eq!(logits.len(), positions * vocab, "{name}: logits file size");
    let eps_logits = j
        .get("logits_eps1e-5_file")
        .and_then(|f| f.as_str())
        .map(|f| {
            let first = j["logits_eps1e-5_first_position"].as_u64().expect("first") as usize;
            let v = read_f32(&dir.join(f));
            assert_eq!(v.len(), (positions - first) * vocab);
            (first, v)
        });
    Reference {
        name: name.to_string(),
        prompt_ids: ids("prompt_ids"),
        positions,
        vocab,
        logits,
        eps_logits,
        std: j["logits_std"].as_f64().expect("std"),
        greedy_ids: ids("greedy_ids"),
        greedy_margins: j["greedy_margins"]
            .as_array()
            .expect("margins")
            .iter()
            .map(|v| v.as_f64().expect("margin") as f32)
            .collect(),
    }
}

/// Where an F32 GGUF of a fixture was made.
#[derive(Clone, Debug, PartialEq)]
pub enum Maker {
    /// llama.cpp's convert_hf_to_gguf.py: no dt_b_c_rms_eps key, so the
    /// dt/B/C norm runs with layer_norm_rms_epsilon (1e-5) where transformers
    /// uses mixer_rms_eps (1e-6).
    LlamaCpp,
    /// Our converter.
    Ours,
}

/// The F32 GGUFs of a fixture available to this run: llama.cpp's file where
/// tests/fixtures/llamacpp/files.json records one (falcon-mamba-tiny; rebuilt
/// byte for byte by [`llamacpp_gguf`]) and any in $MAMBA_GGUF_TEST_GGUF_DIR
/// (same naming; hand runs with more llama.cpp files).
pub fn f32_ggufs(fixture: &str) -> Vec<(PathBuf, Maker)> {
    let mut v = Vec::new();
    let name = format!("{fixture}-f32.gguf");
    let records = std::fs::read_to_string(root().join("tests/fixtures/llamacpp/files.json"))
        .expect("tests/fixtures/llamacpp/files.json");
    let records: serde_json::Value = serde_json::from_str(&records).expect("files.json");
    if records.get(&name).is_some() {
        v.push((llamacpp_gguf(&name), Maker::LlamaCpp));
    }
    if let Ok(dir) = std::env::var("MAMBA_GGUF_TEST_GGUF_DIR") {
        let p = Path::new(&dir).join(&name);
        if p.exists() {
            v.push((p, Maker::LlamaCpp));
        }
    }
    v.push((ours_gguf(fixture, convert::FileType::F32), Maker::Ours));
    v
}

static OURS: OnceLock<tempfile::TempDir> = OnceLock::new();
static OURS_LOCK: Mutex<()> = Mutex::new(());

/// The fixture converted by our converter (`convert::convert`), made once per
/// test process into a temp dir.
pub fn ours_gguf(fixture: &str, ft: convert::FileType) -> PathBuf {
    let dir = OURS.get_or_init(tempdir);
    let out = dir.path().join(format!("{fixture}-{ft:?}.gguf"));
    let _g = OURS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !out.exists() {
        let opts = convert::ConvertOptions {
            file_type: ft,
            threads: Some(1),
            ..Default::default()
        };
        let src = root().join("tests/fixtures/hf").join(fixture);
        convert::convert(&src, &out, &opts, &AtomicBool::new(false), &mut |_| {})
            .unwrap_or_else(|e| panic!("convert {fixture} to {ft:?}: {e}"));
    }
    out
}

/// A GGUF held as editable parts.
pub struct Parts {
    pub meta: Vec<(String, Value)>,
    pub tensors: Vec<(TensorSpec, Vec<u8>)>,
}

pub fn read_parts(path: &Path) -> Parts {
    let f = GgufFile::open(path).expect("open gguf");
    Parts {
        meta: f.metadata().to_vec(),
        tensors: f
            .tensors()
            .iter()
            .map(|t| {
                (
                    TensorSpec::new(t.name.clone(), t.dims.clone(), t.ty),
                    f.tensor_data(t).to_vec(),
                )
            })
            .collect(),
    }
}

pub fn write_parts(p: &Parts, path: &Path) {
    let t: Vec<(TensorSpec, &[u8])> = p.tensors.iter().map(|(s, b)| (s.clone(), &b[..])).collect();
    gguf::write_file(path, &p.meta, &t).expect("write gguf");
}

impl Parts {
    pub fn set_meta(&mut self, key: &str, v: Value) {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.meta.push((key.to_string(), v)),
        }
    }
}

fn to_f32(ty: GgmlType, dims: &[u64], bytes: &[u8]) -> Vec<f32> {
    let n: u64 = dims.iter().product();
    let row = dims[0] as usize;
    let mut out = vec![0f32; n as usize];
    let rb = ty.row_bytes(row).expect("row bytes");
    for (dst, src) in out.chunks_mut(row).zip(bytes.chunks(rb)) {
        quant::dequantize_row(ty, src, dst).expect("dequantize");
    }
    out
}

fn from_f32(ty: GgmlType, row: usize, vals: &[f32]) -> Vec<u8> {
    let rb = ty.row_bytes(row).expect("row bytes");
    let mut out = vec![0u8; vals.len() / row * rb];
    for (src, dst) in vals.chunks(row).zip(out.chunks_mut(rb)) {
        quant::quantize_row(ty, src, dst).expect("quantize");
    }
    out
}

/// Requantizes a float GGUF the way llama-quantize treats Mamba: only 2-D
/// tensors named `*.weight` other than the conv are quantized (norms, A, D,
/// biases and the conv stay as they are); `output.weight` gets `output_ty`;
/// a tensor whose row length is not a multiple of the type's block falls back
/// to `fallback` (llama.cpp: Q5_0/Q8_0/F16 chains; we use one fallback).
pub fn requantize(src: &Path, dst: &Path, ty: GgmlType, output_ty: GgmlType, fallback: GgmlType) {
    let mut p = read_parts(src);
    for (spec, bytes) in &mut p.tensors {
        let name = spec.name.as_str();
        let is_matrix =
            spec.dims.len() == 2 && name.ends_with(".weight") && !name.contains("ssm_conv1d");
        if !is_matrix {
            continue;
        }
        let want = if name == "output.weight" {
            output_ty
        } else {
            ty
        };
        let row = spec.dims[0] as usize;
        let target = if row.is_multiple_of(want.block_size()) {
            want
        } else if row.is_multiple_of(fallback.block_size()) {
            fallback
        } else {
            GgmlType::F16
        };
        let vals = to_f32(spec.ty, &spec.dims, bytes);
        *bytes = from_f32(target, row, &vals);
        spec.ty = target;
    }
    p.set_meta("general.file_type", Value::U32(0));
    p.set_meta("general.quantization_version", Value::U32(2));
    write_parts(&p, dst);
}

/// max |a - b| / std(b): the measure every logits comparison uses.
pub fn rel_max_diff(ours: &[f32], reference: &[f32], std: f64) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .fold(0.0, f64::max)
        / std
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - z).collect()
}

/// KL(reference || ours) of one position's distributions.
pub fn kl(reference: &[f32], ours: &[f32]) -> f64 {
    let p = log_softmax(reference);
    let q = log_softmax(ours);
    p.iter()
        .zip(&q)
        .map(|(&lp, &lq)| lp.exp() * (lp - lq))
        .sum()
}

pub fn argmax(x: &[f32]) -> usize {
    let mut b = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[b] {
            b = i;
        }
    }
    b
}

pub fn std_of(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let m: f64 = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
}

/// Every position's logits for `ids` from a fresh session.
pub fn all_logits(model: &mamba_gguf::Model, ids: &[u32], chunk: usize) -> Vec<f32> {
    let mut s = mamba_gguf::Session::with_chunk(model, chunk);
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(ids.len() * model.hp.n_vocab);
    s.feed_each(ids, &mut buf, |_, row| out.extend_from_slice(row))
        .expect("forward");
    out
}

/// A temp dir under the target folder.
pub fn tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("mkdir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Rewrites a GGUF with every tensor dequantized to F32 (same values the
/// quantized kernels see as weights).
pub fn dequantize_all(src: &Path, dst: &Path) {
    let mut p = read_parts(src);
    for (spec, bytes) in &mut p.tensors {
        if spec.ty != GgmlType::F32 {
            let vals = to_f32(spec.ty, &spec.dims, bytes);
            *bytes = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            spec.ty = GgmlType::F32;
        }
    }
    write_parts(&p, dst);
}
