// llama.cpp's own GGUFs of the `falcon-mamba-tiny` fixture, rebuilt instead
// of committed (45 MB; issue 24).
//
// `scripts/fixtures/make_llamacpp_refs.py` made them with llama.cpp's
// `convert_hf_to_gguf.py` (+ `llama-quantize`) and recorded, in
// `tests/fixtures/llamacpp/files.json`, each file's size, sha256, GGUF
// version, alignment and metadata keys in file order; the manifest beside it
// (`<fixture>.<type>.json`) holds every metadata value (arrays by hash) and
// every tensor (in file order) with its sha256. [`llamacpp_gguf`] converts
// the Hugging Face fixture with our converter, lays its tensors and values
// out as llama.cpp did (llama.cpp's scalar values from the manifest, the
// arrays and tensor bytes from our file, which the manifest's hashes
// vouch for: `convert/tests/it/llamacpp_identity.rs`), and requires the
// result's sha256 to be the recorded one: the file the tests read is
// byte for byte the one llama.cpp wrote, or the test that asked fails.
//
// The file is written once into `tests/fixtures/llamacpp/` (git-ignored),
// atomically (a temp file renamed over the target), and reused while its
// size and sha256 stay right; every test binary, the `llamacpp_fixtures`
// example (for the Python tests, the fuzz targets and CI) and the library's
// unit tests and doctests share this file through `#[path]` or `include!`
// (so no inner attributes here).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use gguf::{GgufFile, TensorSpec, Value};
use sha2::{Digest, Sha256};

/// The repository root: the first folder above the including crate's
/// (the root crate, `convert/`, `fuzz/`) with the llamacpp fixtures.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|a| a.join("tests/fixtures/llamacpp/files.json").is_file())
        .expect("the repository root above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

static LOCK: Mutex<()> = Mutex::new(());

/// The path of llama.cpp's `file` (`falcon-mamba-tiny-f32.gguf` or
/// `falcon-mamba-tiny-q4_k_m.gguf`), made first if missing or not the
/// recorded bytes. Panics, naming what differs, if it cannot be made.
pub fn llamacpp_gguf(file: &str) -> PathBuf {
    let dir = repo_root().join("tests/fixtures/llamacpp");
    llamacpp_gguf_in(&dir, file)
}

fn sha256_file(path: &Path) -> Option<(u64, String)> {
    let bytes = std::fs::read(path).ok()?;
    Some((bytes.len() as u64, hex(&Sha256::digest(&bytes))))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn llamacpp_gguf_in(dir: &Path, file: &str) -> PathBuf {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let records: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("files.json"))
            .expect("tests/fixtures/llamacpp/files.json"),
    )
    .expect("files.json parses");
    let rec = records
        .get(file)
        .unwrap_or_else(|| panic!("{file} is not in tests/fixtures/llamacpp/files.json"));
    let want_sha = rec["sha256"].as_str().expect("sha256");
    let want_size = rec["size"].as_u64().expect("size");
    let out = dir.join(file);
    if let Some((size, sha)) = sha256_file(&out) {
        if size == want_size && sha == want_sha {
            return out;
        }
    }
    rebuild(dir, rec, &out);
    match sha256_file(&out) {
        Some((size, sha)) if size == want_size && sha == want_sha => out,
        got => {
            let _ = std::fs::remove_file(&out);
            panic!(
                "{file}: the rebuilt file is not llama.cpp's (size, sha256) {got:?}, \
                 recorded ({want_size}, {want_sha}) in tests/fixtures/llamacpp/files.json"
            )
        }
    }
}

/// A manifest scalar (`{"uint32": 15}`) as a GGUF value.
fn scalar(key: &str, v: &serde_json::Value) -> Value {
    let (ty, x) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("manifest key {key}: {v}"));
    let int = || x.as_i64().unwrap_or_else(|| panic!("{key}: {x}"));
    let uint = || x.as_u64().unwrap_or_else(|| panic!("{key}: {x}"));
    let float = || x.as_f64().unwrap_or_else(|| panic!("{key}: {x}"));
    match ty.as_str() {
        "string" => Value::String(x.as_str().expect("string").to_string()),
        "bool" => Value::Bool(x.as_bool().expect("bool")),
        "uint8" => Value::U8(uint() as u8),
        "int8" => Value::I8(int() as i8),
        "uint16" => Value::U16(uint() as u16),
        "int16" => Value::I16(int() as i16),
        "uint32" => Value::U32(uint() as u32),
        "int32" => Value::I32(int() as i32),
        "uint64" => Value::U64(uint()),
        "int64" => Value::I64(int()),
        // gguf-py printed the f32 as the f64 it widens to: exact.
        "float32" => Value::F32(float() as f32),
        "float64" => Value::F64(float()),
        other => panic!("manifest key {key}: unknown type {other}"),
    }
}

fn rebuild(dir: &Path, rec: &serde_json::Value, out: &Path) {
    let fixture = rec["fixture"].as_str().expect("fixture");
    let manifest_name = rec["manifest"].as_str().expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{manifest_name}.json")))
            .unwrap_or_else(|e| panic!("{manifest_name}.json: {e}")),
    )
    .expect("manifest parses");
    assert_eq!(rec["version"].as_u64(), Some(3), "GGUF version");
    assert_eq!(rec["alignment"].as_u64(), Some(32), "alignment");
    // The manifest name's type part: "falcon-mamba-tiny.q4_k_m" -> q4_k_m.
    let ty = manifest_name
        .strip_prefix(fixture)
        .and_then(|t| t.strip_prefix('.'))
        .expect("manifest <fixture>.<type>");
    let ft = convert::FileType::parse(ty).unwrap_or_else(|| panic!("file type {ty}"));

    let tmp = tempfile::tempdir().expect("tempdir");
    let ours_path = tmp.path().join("ours.gguf");
    let opts = convert::ConvertOptions {
        file_type: ft,
        ..Default::default()
    };
    let src = repo_root().join("tests/fixtures/hf").join(fixture);
    convert::convert(
        &src,
        &ours_path,
        &opts,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("convert {fixture} to {ty}: {e}"));
    let ours = GgufFile::open(&ours_path).expect("open our conversion");

    let values = manifest["metadata"].as_object().expect("metadata");
    let order = rec["metadata_order"].as_array().expect("metadata_order");
    assert_eq!(
        order.len(),
        values.len(),
        "metadata_order against the manifest"
    );
    let mut meta = Vec::new();
    for k in order {
        let k = k.as_str().expect("key");
        let m = &values[k];
        let v = if let Some(n) = m.get("len") {
            let a = ours
                .get_array(k)
                .unwrap_or_else(|e| panic!("our file lacks array {k}: {e}"));
            assert_eq!(Some(a.len() as u64), n.as_u64(), "{k}: length");
            Value::Array(a.clone())
        } else {
            scalar(k, m)
        };
        meta.push((k.to_string(), v));
    }

    let mut tensors = Vec::new();
    for t in manifest["tensors"].as_array().expect("tensors") {
        let name = t["name"].as_str().expect("name");
        let (info, bytes) = ours
            .tensor_by_name(name)
            .unwrap_or_else(|e| panic!("our file lacks {name}: {e}"));
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .expect("dims")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        assert_eq!(info.dims, dims, "{name}: dims");
        assert_eq!(
            info.ty.name(),
            t["type"].as_str().expect("type"),
            "{name}: type"
        );
        tensors.push((TensorSpec::new(name, dims, info.ty), bytes));
    }
    assert_eq!(tensors.len(), ours.tensors().len(), "tensor count");
    gguf::write_file(out, &meta, &tensors)
        .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}
