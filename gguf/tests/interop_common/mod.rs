//! Helpers shared by the GGUF interop tests (gguf-py in python_interop.rs,
//! ggml's C loader in ggml_interop.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gguf::{write_file, Array, GgmlType, TensorSpec, Value};
use serde_json::{json, Value as Json};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value in make_fixture.py's JSON encoding.
pub fn encode(v: &Value) -> Json {
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

pub fn encode_array(a: &Array) -> Json {
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
pub fn same(a: &Json, b: &Json) -> bool {
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

/// What gguf-py reports for a value: its type chain and (flattened) contents.
pub fn gguf_py_view(v: &Value) -> (Vec<&'static str>, Json) {
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

pub type OurFile = (Vec<(String, Value)>, Vec<TensorSpec>, Vec<Vec<u8>>);

/// Writes a file with our writer: every value type (an array of arrays when
/// `nested`, which ggml's loader does not accept), alignment 64, five tensors.
pub fn our_file(path: &Path, nested: bool) -> OurFile {
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
