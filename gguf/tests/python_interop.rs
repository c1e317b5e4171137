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
    let kv = |k: &str, v: Value| (k.to_string(), v);
    let md = vec![
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
        kv(
            "t.arr.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::I32(vec![3]),
            ])),
        ),
    ];
    let specs = [
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
    write_file(&path, &md, &tensors).unwrap();

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
