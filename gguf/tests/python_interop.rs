//! Interop with the `gguf` Python package (llama.cpp's gguf-py): we read what
//! its GGUFWriter wrote (committed fixtures + JSON of what was put in, from
//! scripts/gguf_fixtures/make_fixture.py), and its GGUFReader reads what we
//! write (run live when `import gguf` works; skipped with a notice otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf::{write_file, Array, GgmlType, GgufFile, TensorSpec, Value};
use serde_json::{json, Value as Json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value in make_fixture.py's JSON encoding.
fn encode(v: &Value) -> Json {
    let scalar = |t: &str, x: Json| json!({"type": t, "value": x});
    match v {
        Value::U8(x) => scalar("u8", json!(x)),
        Value::I8(x) => scalar("i8", json!(x)),
        Value::U16(x) => scalar("u16", json!(x)),
        Value::I16(x) => scalar("i16", json!(x)),
        Value::U32(x) => scalar("u32", json!(x)),
        Value::I32(x) => scalar("i32", json!(x)),
        Value::U64(x) => scalar("u64", json!(x)),
        Value::I64(x) => scalar("i64", json!(x)),
        Value::F32(x) => scalar("f32", json!(f64::from(*x))),
        Value::F64(x) => scalar("f64", json!(x)),
        Value::Bool(x) => scalar("bool", json!(x)),
        Value::String(x) => scalar("string", json!(x)),
        Value::Array(a) => encode_array(a),
    }
}

fn encode_array(a: &Array) -> Json {
    let items: Json = match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F32(v) => json!(v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()),
        Array::F64(v) => json!(v),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => Json::Array(v.iter().map(encode_array).collect()),
    };
    json!({"type": "array", "elem": a.elem_type().name(), "items": items})
}

/// JSON equality, except that floats may differ in the last bit or so of an
/// f64 (serde_json's default float parser is not always correctly rounded);
/// an f32 that differed would differ by ~1e-7 relative, far more.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check_pywriter_fixture(name: &str) {
    let dir = repo().join("tests/fixtures/gguf");
    let f = GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap();
    let exp: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(json!(f.version()), exp["version"]);
    assert_eq!(json!(f.alignment()), exp["alignment"]);
    let md = exp["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), md.len(), "{name}: key count");
    for ((k, v), e) in f.metadata().iter().zip(md) {
        assert_eq!(json!(k), e["key"], "{name}: key order");
        let mut got = encode(v);
        got.as_object_mut().unwrap().insert("key".into(), json!(k));
        assert!(same(&got, e), "{name}: key {k}: {got} != {e}");
    }
    let ts = exp["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), ts.len());
    for (t, e) in f.tensors().iter().zip(ts) {
        assert_eq!(json!(t.name), e["name"]);
        assert_eq!(json!(t.dims), e["dims"], "{}", t.name);
        assert_eq!(json!(t.ty.name()), e["type"], "{}", t.name);
        assert_eq!(json!(t.n_elements), e["n_elements"], "{}", t.name);
        assert_eq!(json!(t.n_bytes), e["n_bytes"], "{}", t.name);
        assert_eq!(json!(t.offset), e["offset"], "{}", t.name);
        assert_eq!(json!(hex(f.tensor_data(t))), e["hex"], "{}", t.name);
    }
}

#[test]
fn reads_gguf_py_writer_output() {
    check_pywriter_fixture("pywriter");
}

#[test]
fn reads_gguf_py_writer_output_align64() {
    check_pywriter_fixture("pywriter-align64");
}

/// The Python interpreter to use: $GGUF_PYTHON, else python3, if it can
/// `import gguf`.
fn python_with_gguf() -> Option<String> {
    let candidates = std::env::var("GGUF_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import gguf, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

/// What gguf-py reports for a value: its type chain and (flattened) contents.
fn gguf_py_view(v: &Value) -> (Vec<&'static str>, Json) {
    fn tname(t: gguf::ValueType) -> &'static str {
        use gguf::ValueType::*;
        match t {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }
    fn flat(a: &Array, types: &mut Vec<&'static str>, out: &mut Vec<Json>, first: bool) {
        if first {
            types.push(tname(a.elem_type()));
        }
        match a {
            Array::Array(v) => {
                for (i, inner) in v.iter().enumerate() {
                    flat(inner, types, out, first && i == 0);
                }
            }
            _ => {
                let j = encode_array(a);
                out.extend(j["items"].as_array().unwrap().iter().cloned());
            }
        }
    }
    match v {
        Value::Array(a) => {
            let (mut types, mut out) = (vec!["ARRAY"], Vec::new());
            flat(a, &mut types, &mut out, true);
            (types, Json::Array(out))
        }
        v => (vec![tname(v.value_type())], encode(v)["value"].clone()),
    }
}

type OurFile = (Vec<(String, Value)>, Vec<TensorSpec>, Vec<Vec<u8>>);

/// Writes a file with our writer: every value type (an array of arrays when
/// `nested`, which ggml's loader does not accept), alignment 64, five tensors.
fn our_file(path: &Path, nested: bool) -> OurFile {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    let mut md = vec![
        kv("general.architecture", Value::from("mamba")),
        kv("general.alignment", Value::U32(64)),
        kv("t.u8", Value::U8(200)),
        kv("t.i8", Value::I8(-3)),
        kv("t.u16", Value::U16(60000)),
        kv("t.i16", Value::I16(-300)),
        kv("t.u32", Value::U32(3_000_000_000)),
        kv("t.i32", Value::I32(-5)),
        kv("t.f32", Value::F32(1e-5)),
        kv("t.bool", Value::Bool(false)),
        kv("t.string", Value::from("ünïcode ✓")),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(0.1)),
        kv(
            "t.arr.string",
            Value::Array(Array::String(vec!["a".into(), "Ġb".into()])),
        ),
        kv("t.arr.f32", Value::Array(Array::F32(vec![0.25, -1e-3]))),
        kv("t.arr.u64", Value::Array(Array::U64(vec![1, u64::MAX]))),
        kv(
            "t.arr.bool",
            Value::Array(Array::Bool(vec![true, false, true])),
        ),
        kv("t.arr.i16", Value::Array(Array::I16(vec![-1, 2]))),
    ];
    if nested {
        md.push(kv(
            "t.arr.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::I32(vec![3]),
            ])),
        ));
    }
    let specs = vec![
        TensorSpec::new("a.q8", vec![64, 2], GgmlType::Q8_0),
        TensorSpec::new("b.f32", vec![3], GgmlType::F32),
        TensorSpec::new("c.q4k", vec![256, 1], GgmlType::Q4_K),
        TensorSpec::new("d.f16", vec![2, 2, 2], GgmlType::F16),
        TensorSpec::new("e.q6k", vec![256], GgmlType::Q6_K),
    ];
    let data: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.n_bytes().unwrap())
                .map(|j| (j * 7 + i * 13) as u8)
                .collect()
        })
        .collect();
    let tensors: Vec<(TensorSpec, &[u8])> = specs
        .iter()
        .cloned()
        .zip(data.iter().map(|d| &d[..]))
        .collect();
    write_file(path, &md, &tensors).unwrap();
    (md, specs, data)
}

#[test]
fn gguf_py_reads_our_writer_output() {
    let Some(py) = python_with_gguf() else {
        eprintln!(
            "NOTICE: skipping gguf_py_reads_our_writer_output: no python3 with `gguf` and \
             `numpy` (pip install gguf numpy, or set GGUF_PYTHON)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let (md, specs, data) = our_file(&path, true);
    let script = repo().join("scripts/gguf_fixtures/read_with_gguf_py.py");
    let out = Command::new(&py).arg(&script).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "gguf-py failed to read our file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(got["alignment"], json!(64));
    assert_eq!(got["data_offset"], json!(ours.data_offset()));
    let gmd = got["metadata"].as_array().unwrap();
    assert_eq!(gmd.len(), md.len());
    for ((k, v), g) in md.iter().zip(gmd) {
        let (types, value) = gguf_py_view(v);
        assert_eq!(g["key"], json!(k));
        assert_eq!(g["types"], json!(types), "key {k}");
        assert!(
            same(&g["value"], &value),
            "key {k}: {} != {value}",
            g["value"]
        );
    }
    let gts = got["tensors"].as_array().unwrap();
    assert_eq!(gts.len(), specs.len());
    let mut offset = 0u64;
    for ((s, d), g) in specs.iter().zip(&data).zip(gts) {
        assert_eq!(g["name"], json!(s.name));
        // GGUFReader reports shape innermost first, as stored.
        assert_eq!(g["dims"], json!(s.dims), "{}", s.name);
        assert_eq!(g["type"], json!(s.ty.name()), "{}", s.name);
        assert_eq!(g["n_bytes"], json!(d.len()), "{}", s.name);
        assert_eq!(g["offset"], json!(offset), "{}", s.name);
        assert_eq!(g["hex"], json!(hex(d)), "{}", s.name);
        offset += (d.len() as u64).next_multiple_of(64);
    }
}

/// ggml's C loader (via scripts/gguf_fixtures/read_with_ggml.py) when
/// $GGML_BASE_LIB names libggml-base.so and python3 exists; else skipped.
fn ggml_reader() -> Option<(String, String)> {
    let lib = std::env::var("GGML_BASE_LIB").ok()?;
    let py = std::env::var("GGUF_PYTHON").unwrap_or_else(|_| "python3".into());
    Path::new(&lib).exists().then_some((py, lib))
}

fn run_ggml(py: &str, lib: &str, files: &[PathBuf]) -> Vec<Json> {
    let script = repo().join("scripts/gguf_fixtures/read_with_ggml.py");
    let out = Command::new(py)
        .arg(&script)
        .arg(lib)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read_with_ggml.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if files.len() == 1 {
        // ggml's own log says why it refused a file.
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ggml_reads_our_writer_output() {
    let Some((py, lib)) = ggml_reader() else {
        eprintln!("NOTICE: skipping: set GGML_BASE_LIB to a libggml-base.so to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let (md, specs, data) = our_file(&path, false);
    let got = run_ggml(&py, &lib, std::slice::from_ref(&path));
    let g = &got[0];
    assert_eq!(g["ok"], json!(true), "ggml refused our file");
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(g["version"], json!(3));
    assert_eq!(g["alignment"], json!(64));
    assert_eq!(g["data_offset"], json!(ours.data_offset()));
    let gmd = g["metadata"].as_array().unwrap();
    assert_eq!(gmd.len(), md.len());
    for ((k, v), g) in md.iter().zip(gmd) {
        assert_eq!(g["key"], json!(k));
        let (types, value) = gguf_py_view(v);
        assert_eq!(g["type"], json!(types[0]), "key {k}");
        if let Value::Array(_) = v {
            assert_eq!(g["elem"], json!(types[1]), "key {k}");
            assert!(
                same(&g["items"], &value),
                "key {k}: {} != {value}",
                g["items"]
            );
        } else {
            assert!(
                same(&g["value"], &value),
                "key {k}: {} != {value}",
                g["value"]
            );
        }
    }
    let gts = g["tensors"].as_array().unwrap();
    assert_eq!(gts.len(), specs.len());
    for ((s, d), (g, t)) in specs.iter().zip(&data).zip(gts.iter().zip(ours.tensors())) {
        let mut ne = s.dims.clone();
        ne.resize(4, 1);
        assert_eq!(g["name"], json!(s.name));
        assert_eq!(g["type"], json!(s.ty.id()), "{}", s.name);
        assert_eq!(g["ne"], json!(ne), "{}", s.name);
        assert_eq!(g["size"], json!(d.len()), "{}", s.name);
        assert_eq!(g["offset"], json!(t.offset), "{}", s.name);
    }
}

/// Differential check on randomly damaged files: whatever ggml's loader
/// accepts, we accept too, except for the checks we add on purpose (valid
/// UTF-8, bool bytes 0/1) or make earlier than ggml (tensor data inside the
/// file: gguf_init without data loading leaves that to llama.cpp's model
/// loader). The reverse need not hold: ggml also requires each tensor to
/// start exactly where the previous one's padding ends.
#[test]
fn ggml_accepts_nothing_we_refuse() {
    let Some((py, lib)) = ggml_reader() else {
        eprintln!("NOTICE: skipping: set GGML_BASE_LIB to a libggml-base.so to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    our_file(&base_path, false);
    let base = std::fs::read(&base_path).unwrap();
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut files = Vec::new();
    // Damage only the header, metadata and tensor infos (data bytes are opaque).
    let head = GgufFile::from_bytes(base.clone()).unwrap().data_offset() as usize;
    for i in 0..400 {
        let mut b = base.clone();
        for _ in 0..(1 + next() % 3) {
            let at = (next() % head as u64) as usize;
            b[at] = match next() % 3 {
                0 => next() as u8,
                1 => b[at].wrapping_add(1),
                _ => b[at] ^ (1 << (next() % 8)),
            };
        }
        let p = dir.path().join(format!("d{i}.gguf"));
        std::fs::write(&p, &b).unwrap();
        files.push(p);
    }
    let verdicts = run_ggml(&py, &lib, &files);
    assert_eq!(verdicts.len(), files.len());
    let (mut both_ok, mut both_err, mut only_ggml_err) = (0, 0, 0);
    for (p, v) in files.iter().zip(&verdicts) {
        let ggml_ok = v["ok"] == json!(true);
        match (ggml_ok, GgufFile::open(p)) {
            (true, Ok(_)) => both_ok += 1,
            (false, Err(_)) => both_err += 1,
            (false, Ok(_)) => only_ggml_err += 1,
            (true, Err(e)) => {
                let m = e.to_string();
                assert!(
                    m.contains("UTF-8")
                        || m.contains("bool byte")
                        || m.contains("runs past the end of the file"),
                    "ggml accepts {} but we refuse it: {m}",
                    p.display()
                );
            }
        }
    }
    eprintln!("both accept {both_ok}, both refuse {both_err}, only ggml refuses {only_ggml_err}");
    assert!(both_err > 100);
}
