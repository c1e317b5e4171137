//! What the writer writes, the reader reads back identically.

use gguf::{write_file, Array, GgmlType, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

fn all_value_types() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", Value::String("mamba".into())),
        kv("t.u8", Value::U8(255)),
        kv("t.i8", Value::I8(-128)),
        kv("t.u16", Value::U16(65535)),
        kv("t.i16", Value::I16(-32768)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(1e-5)),
        kv("t.bool.true", Value::Bool(true)),
        kv("t.bool.false", Value::Bool(false)),
        kv("t.string.unicode", Value::String("héllo → 世界 🙂".into())),
        kv("t.string.empty", Value::String(String::new())),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(-1.0e300)),
        kv("t.arr.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        kv("t.arr.i8", Value::Array(Array::I8(vec![-1, 2]))),
        kv("t.arr.u16", Value::Array(Array::U16(vec![7]))),
        kv("t.arr.i16", Value::Array(Array::I16(vec![-7, 7]))),
        kv("t.arr.u32", Value::Array(Array::U32(vec![1, 2, 3]))),
        kv("t.arr.i32", Value::Array(Array::I32(vec![-1, 0, 1]))),
        kv(
            "t.arr.f32",
            Value::Array(Array::F32(vec![0.5, -2.25, f32::MAX])),
        ),
        kv(
            "t.arr.bool",
            Value::Array(Array::Bool(vec![true, false, true])),
        ),
        kv(
            "t.arr.string",
            Value::Array(Array::String(vec!["a".into(), "".into(), "ü b".into()])),
        ),
        kv("t.arr.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        kv(
            "t.arr.i64",
            Value::Array(Array::I64(vec![i64::MIN, i64::MAX])),
        ),
        kv("t.arr.f64", Value::Array(Array::F64(vec![1.0 / 3.0]))),
        kv("t.arr.empty", Value::Array(Array::I32(vec![]))),
        kv(
            "t.arr.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2, 3]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::F32(vec![1.5]), Array::U8(vec![])]),
                Array::Bool(vec![]),
            ])),
        ),
    ]
}

/// Deterministic pseudo-random bytes (the container does not interpret them).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn several_tensors() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("token_embd.weight", vec![64, 5], GgmlType::Q8_0),
        TensorSpec::new("blk.0.attn_norm.weight", vec![64], GgmlType::F32),
        TensorSpec::new("blk.0.ssm_in.weight", vec![64, 3], GgmlType::Q4_0),
        TensorSpec::new("blk.0.ssm_conv1d.weight", vec![4, 6], GgmlType::F16),
        TensorSpec::new("blk.0.ssm_x.weight", vec![256, 2], GgmlType::Q4_K),
        TensorSpec::new("output.weight", vec![256, 1, 1, 2], GgmlType::Q6_K),
        TensorSpec::new("t.bf16", vec![3, 1], GgmlType::BF16),
        TensorSpec::new("t.i32", vec![5], GgmlType::I32),
        TensorSpec::new("t.scalar", vec![], GgmlType::F32),
        TensorSpec::new("t.empty", vec![0, 4], GgmlType::F32),
        TensorSpec::new("n".repeat(63), vec![1], GgmlType::I8),
    ]
}

fn check_round_trip(alignment: Option<u32>, chunk: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let mut md = all_value_types();
    if let Some(a) = alignment {
        md.push(("general.alignment".into(), Value::U32(a)));
    }
    let specs = several_tensors();
    let data: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| bytes(s.n_bytes().unwrap(), i as u64))
        .collect();

    let mut w = GgufWriter::create(&path, &md, &specs).unwrap();
    for d in &data {
        for c in d.chunks(chunk) {
            w.write_tensor_data(c).unwrap();
        }
    }
    assert_eq!(w.current_tensor(), None);
    let size = w.finish().unwrap();
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());
    // Nothing else left in the folder (the temp file was renamed).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let align = u64::from(alignment.unwrap_or(32));
    let raw = std::fs::read(&path).unwrap();
    for f in [
        GgufFile::open(&path).unwrap(),
        GgufFile::from_bytes(raw).unwrap(),
    ] {
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), align);
        assert_eq!(f.data_offset() % align, 0);
        assert_eq!(f.file_size(), size);
        assert_eq!(f.metadata(), &md[..]);
        assert_eq!(f.architecture(), Some("mamba"));
        assert_eq!(f.as_bytes().len() as u64, size);
        #[cfg(unix)]
        f.advise(gguf::Advice::WillNeed).unwrap();
        assert_eq!(f.tensors().len(), specs.len());
        for ((t, s), d) in f.tensors().iter().zip(&specs).zip(&data) {
            assert_eq!(t.name, s.name);
            assert_eq!(t.dims, s.dims);
            assert_eq!(t.ty, s.ty);
            assert_eq!(t.n_bytes, d.len());
            assert_eq!(t.n_elements, s.dims.iter().product::<u64>());
            assert_eq!(t.offset % align, 0);
            let got = f.tensor_data(t);
            assert_eq!(got, &d[..], "tensor {}", t.name);
            if !got.is_empty() {
                assert_eq!(got.as_ptr() as usize % align.min(64) as usize, 0);
            }
            assert_eq!(f.tensor(&t.name), Some(t));
        }
    }
}

#[test]
fn round_trip_default_alignment() {
    check_round_trip(None, usize::MAX);
}

#[test]
fn round_trip_alignment_64_in_chunks() {
    check_round_trip(Some(64), 7);
}

#[test]
fn round_trip_alignment_32_explicit_and_1() {
    check_round_trip(Some(32), 1000);
    check_round_trip(Some(1), 3);
}

#[test]
fn typed_getters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_file(&path, &all_value_types(), &[]).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u32("t.u8").unwrap(), 255);
    assert_eq!(f.get_f32("t.f32").unwrap(), 1e-5);
    assert!(f.get_bool("t.bool.true").unwrap());
    assert_eq!(f.get_str("t.string.unicode").unwrap(), "héllo → 世界 🙂");
    assert_eq!(
        f.get_array("t.arr.u32").unwrap().to_u32_vec(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(f.get_i64("t.i64").unwrap(), i64::MIN);
    match f.get_u32("t.i32") {
        Err(e @ GgufError::WrongType { .. }) => {
            let m = e.to_string();
            assert!(m.contains("t.i32") && m.contains("-2000000000"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    match f.get_u32("t.missing") {
        Err(e @ GgufError::MissingKey { .. }) => assert!(e.to_string().contains("t.missing")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.get_str("t.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.tensor_by_name("nope"),
        Err(GgufError::MissingTensor { .. })
    ));
}

fn must_fail(r: Result<GgufWriter, GgufError>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
    }
}

#[test]
fn writer_refuses_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    let f32t = |n: &str, d: Vec<u64>| TensorSpec::new(n, d, GgmlType::F32);
    must_fail(
        GgufWriter::create(&p, &[], &[f32t("a", vec![1]), f32t("a", vec![2])]),
        "duplicate tensor name 'a'",
    );
    must_fail(
        GgufWriter::create(&p, &[], &[f32t(&"n".repeat(64), vec![1])]),
        "at most 63",
    );
    must_fail(
        GgufWriter::create(&p, &[], &[f32t("", vec![1])]),
        "empty tensor name",
    );
    must_fail(
        GgufWriter::create(&p, &[], &[f32t("five", vec![1, 1, 1, 1, 1])]),
        "tensor 'five'",
    );
    must_fail(
        GgufWriter::create(&p, &[], &[TensorSpec::new("q", vec![33], GgmlType::Q4_0)]),
        "block size",
    );
    must_fail(
        GgufWriter::create(&p, &[], &[f32t("big", vec![1 << 40, 1 << 40])]),
        "tensor 'big'",
    );
    let kv = |k: &str, v: Value| vec![(k.to_string(), v)];
    must_fail(
        GgufWriter::create(&p, &kv("general.alignment", Value::U32(3)), &[]),
        "general.alignment",
    );
    must_fail(
        GgufWriter::create(&p, &kv("general.alignment", Value::U64(32)), &[]),
        "general.alignment",
    );
    must_fail(
        GgufWriter::create(&p, &kv("", Value::U8(1)), &[]),
        "empty metadata key",
    );
    let mut dup = kv("k", Value::U8(1));
    dup.extend(kv("k", Value::U8(2)));
    must_fail(
        GgufWriter::create(&p, &dup, &[]),
        "duplicate metadata key 'k'",
    );
    // 16 levels of arrays are fine (and read back); 17 are refused.
    let mut deep = Array::U8(vec![1]);
    for _ in 0..15 {
        deep = Array::Array(vec![deep]);
    }
    let ok_path = dir.path().join("deep.gguf");
    let md = kv("deep", Value::Array(deep.clone()));
    write_file(&ok_path, &md, &[]).unwrap();
    assert_eq!(GgufFile::open(&ok_path).unwrap().metadata(), &md[..]);
    std::fs::remove_file(&ok_path).unwrap();
    let deep = Array::Array(vec![deep]);
    must_fail(
        GgufWriter::create(&p, &kv("deep", Value::Array(deep)), &[]),
        "nested",
    );
    // Nothing left behind by any of these.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn writer_checks_byte_counts_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"previous contents").unwrap();
    let specs = [
        TensorSpec::new("a", vec![4], GgmlType::F32),
        TensorSpec::new("b", vec![2], GgmlType::F16),
    ];

    // Too many bytes for a tensor: the error names it.
    let mut w = GgufWriter::create(&p, &[], &specs).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    w.write_tensor_data(&[0; 10]).unwrap();
    let e = w.write_tensor_data(&[0; 7]).unwrap_err().to_string();
    assert!(e.contains("tensor 'a'") && e.contains("only 6"), "{e}");
    let e = w.write_tensor("b", &[0; 4]).unwrap_err().to_string();
    assert!(e.contains("out of order") && e.contains("'a'"), "{e}");
    w.write_tensor_data(&[0; 6]).unwrap();
    assert_eq!(w.current_tensor(), Some("b"));
    // Finishing early fails, names the tensor, removes the temp file and
    // leaves the old target alone.
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("tensor 'b'") && e.contains("0 of 4"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read(&p).unwrap(), b"previous contents");

    // Dropping unfinished removes the temp file too.
    let w = GgufWriter::create(&p, &[], &specs).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Extra bytes after the last tensor are refused.
    let mut w = GgufWriter::create(&p, &[], &specs).unwrap();
    w.write_tensor("a", &[1; 16]).unwrap();
    w.write_tensor("b", &[2; 4]).unwrap();
    let e = w.write_tensor_data(&[0]).unwrap_err().to_string();
    assert!(e.contains("after all 2 tensors"), "{e}");
    w.finish().unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensor_by_name("b").unwrap().1, &[2; 4]);
}

/// The exact bytes of a tiny file, laid out by hand from the GGUF spec.
#[test]
fn byte_layout_matches_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    let md = vec![("k".to_string(), Value::U16(0x0102))];
    let t = TensorSpec::new("w", vec![2], GgmlType::F32);
    write_file(&p, &md, &[(t, &[1, 2, 3, 4, 5, 6, 7, 8][..])]).unwrap();
    let mut want: Vec<u8> = Vec::new();
    want.extend(b"GGUF");
    want.extend(3u32.to_le_bytes());
    want.extend(1u64.to_le_bytes()); // tensors
    want.extend(1u64.to_le_bytes()); // kvs
    want.extend(1u64.to_le_bytes());
    want.extend(b"k");
    want.extend(2u32.to_le_bytes()); // u16
    want.extend([0x02, 0x01]);
    want.extend(1u64.to_le_bytes());
    want.extend(b"w");
    want.extend(1u32.to_le_bytes()); // n_dims
    want.extend(2u64.to_le_bytes());
    want.extend(0u32.to_le_bytes()); // F32
    want.extend(0u64.to_le_bytes()); // offset
    assert_eq!(want.len(), 72);
    want.resize(96, 0); // padding to 32
    want.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    want.resize(128, 0); // tensor padding
    assert_eq!(std::fs::read(&p).unwrap(), want);
}

/// The runtime shares one opened file between threads.
#[test]
fn file_is_send_and_sync_writer_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<GgufFile>();
    send::<GgufWriter>();
}
