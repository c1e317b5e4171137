//! A corpus of damaged files, generated here from valid ones: every one must
//! give a clean `GgufError` naming the problem, never a panic or a huge
//! allocation (the allocator below records the largest request).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gguf::{write_file, Array, GgmlType, GgufFile, TensorSpec, Value};

struct Recording;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// own arguments, so Recording keeps System's guarantees; it only records sizes.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc`/`realloc` above, i.e. from System.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        // SAFETY: as in `dealloc`, and the caller's contract for `realloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

/// No parse of these small files may ask for more than this at once.
const ALLOC_LIMIT: usize = 16 << 20;

fn assert_small_allocations() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < ALLOC_LIMIT, "an allocation of {largest} bytes");
}

// ---- a raw builder that can write any (invalid) field ------------------

fn s(b: &mut Vec<u8>, bytes: &[u8]) {
    b.extend((bytes.len() as u64).to_le_bytes());
    b.extend(bytes);
}

fn kv(key: &[u8], ty: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    s(&mut b, key);
    b.extend(ty.to_le_bytes());
    b.extend(payload);
    b
}

fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    kv(key.as_bytes(), 4, &v.to_le_bytes())
}

fn kv_str(key: &str, v: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    s(&mut p, v);
    kv(key.as_bytes(), 8, &p)
}

#[derive(Clone)]
struct RawTensor {
    name: Vec<u8>,
    n_dims: u32,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

fn t(name: &str, dims: &[u64], ty: u32, offset: u64) -> RawTensor {
    RawTensor {
        name: name.as_bytes().to_vec(),
        n_dims: dims.len() as u32,
        dims: dims.to_vec(),
        ty,
        offset,
    }
}

#[derive(Clone)]
struct Raw {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<RawTensor>,
    align: usize,
    data_len: usize,
}

impl Raw {
    /// A valid file: a 32x2 Q8_0 tensor (68 bytes) at 0 and an F32 [4] at 96.
    fn valid() -> Raw {
        Raw {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![kv_str("general.architecture", b"mamba"), kv_u32("x.n", 7)],
            tensors: vec![t("a", &[32, 2], 8, 0), t("b", &[4], 0, 96)],
            align: 32,
            data_len: 128,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(self.magic);
        b.extend(self.version.to_le_bytes());
        b.extend(
            self.n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend(self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for k in &self.kvs {
            b.extend(k);
        }
        for t in &self.tensors {
            s(&mut b, &t.name);
            b.extend(t.n_dims.to_le_bytes());
            for d in &t.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.ty.to_le_bytes());
            b.extend(t.offset.to_le_bytes());
        }
        b.resize(b.len().next_multiple_of(self.align), 0);
        b.resize(b.len() + self.data_len, 0x5a);
        b
    }
}

/// Parses `bytes` (in memory and from disk) expecting an error whose message
/// contains every needle; returns the message.
fn expect_err(label: &str, bytes: Vec<u8>, needles: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let from_disk = GgufFile::open(&path);
    let in_mem = GgufFile::from_bytes(bytes);
    let (e_disk, e_mem) = match (from_disk, in_mem) {
        (Err(a), Err(b)) => (a, b),
        _ => panic!("{label}: parsed without error"),
    };
    let msg = e_mem.to_string();
    for n in needles {
        assert!(msg.contains(n), "{label}: {msg:?} lacks {n:?}");
    }
    assert!(e_mem.offset().is_some(), "{label}: no offset in {msg:?}");
    assert!(msg.contains("at byte "), "{label}: {msg:?}");
    let disk_msg = e_disk.to_string();
    assert!(disk_msg.contains("damaged.gguf"), "{label}: {disk_msg:?}");
    assert!(
        disk_msg.ends_with(&msg[..]),
        "{label}: {disk_msg:?} vs {msg:?}"
    );
    msg
}

#[test]
fn the_valid_base_parses() {
    let f = GgufFile::from_bytes(Raw::valid().bytes()).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("a").unwrap().n_bytes, 68);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[0x5a; 16]);
    assert_eq!(f.get_u32("x.n").unwrap(), 7);
}

#[test]
fn header_damage() {
    let mut r = Raw::valid();
    r.magic = *b"GGUX";
    expect_err("magic", r.bytes(), &["magic", "at byte 0"]);
    expect_err("empty file", Vec::new(), &["magic"]);
    expect_err("3 bytes", b"GGU".to_vec(), &["magic"]);
    for v in [0, 1, 4, 0x0300] {
        let mut r = Raw::valid();
        r.version = v;
        expect_err(
            "version",
            r.bytes(),
            &[&format!("version {v} "), "at byte 4"],
        );
    }
    let mut r = Raw::valid();
    r.version = 3u32.swap_bytes();
    expect_err("big endian", r.bytes(), &["big-endian"]);
    let mut r = Raw::valid();
    r.n_tensors = Some(u64::MAX);
    expect_err(
        "tensor count",
        r.bytes(),
        &["tensor count 18446744073709551615"],
    );
    let mut r = Raw::valid();
    r.n_tensors = Some(3);
    // The third "tensor" is read from the padding: an unnamed F32 scalar at 0.
    expect_err("one tensor too many", r.bytes(), &["tensor ''", "overlaps"]);
    let mut r = Raw::valid();
    r.n_kv = Some(u64::MAX / 2);
    expect_err("kv count", r.bytes(), &["metadata count"]);
    let mut r = Raw::valid();
    r.n_kv = Some(3);
    expect_err("one kv too many", r.bytes(), &[]);
    assert_small_allocations();
}

fn r_with_kvs(kvs: Vec<Vec<u8>>) -> Vec<u8> {
    let mut r = Raw::valid();
    r.kvs = kvs;
    r.bytes()
}

#[test]
fn metadata_damage() {
    let case = |label: &str, kvs: Vec<Vec<u8>>, needles: &[&str]| {
        let mut r = Raw::valid();
        r.kvs = kvs;
        expect_err(label, r.bytes(), needles);
    };
    // A key whose length is huge.
    let mut k = Vec::new();
    k.extend((u64::MAX).to_le_bytes());
    case(
        "huge key length",
        vec![k],
        &["metadata key #0", "string length"],
    );
    let mut k = Vec::new();
    k.extend((1u64 << 40).to_le_bytes());
    k.extend(b"abc");
    case(
        "key length past EOF",
        vec![k],
        &["string length 1099511627776"],
    );
    // A string value whose length is huge.
    let mut p = Vec::new();
    p.extend(u64::MAX.to_le_bytes());
    case(
        "huge string",
        vec![kv(b"s", 8, &p)],
        &["key 's'", "string length"],
    );
    // Arrays whose count is huge, for several element types.
    for (ty, min) in [(0u32, 1u64), (8, 8), (9, 12), (10, 8), (7, 1)] {
        let mut p = Vec::new();
        p.extend(ty.to_le_bytes());
        p.extend((1u64 << 62).to_le_bytes());
        case(
            "huge array",
            vec![kv(b"arr", 9, &p)],
            &[
                "key 'arr'",
                "count 4611686018427387904",
                &format!("at least {min} bytes"),
            ],
        );
    }
    // An array of strings whose count fits but one string is too long.
    let mut p = Vec::new();
    p.extend(8u32.to_le_bytes());
    p.extend(2u64.to_le_bytes());
    s(&mut p, b"ok");
    p.extend(1_000_000u64.to_le_bytes());
    p.extend([0u8; 40]);
    case(
        "long element",
        vec![kv(b"arr", 9, &p)],
        &["key 'arr' element 1", "string length 1000000"],
    );
    // Arrays nested 17 deep.
    let mut p = Vec::new();
    for _ in 0..17 {
        p.extend(9u32.to_le_bytes());
        p.extend(1u64.to_le_bytes());
    }
    p.extend(0u32.to_le_bytes());
    p.extend(0u64.to_le_bytes());
    p.extend([0u8; 64]);
    case(
        "deep nesting",
        vec![kv(b"deep", 9, &p)],
        &["key 'deep'", "nested more than 16"],
    );
    case(
        "unknown value type",
        vec![kv(b"v", 13, &[0; 8])],
        &["key 'v'", "unknown value type id 13"],
    );
    let mut p = Vec::new();
    p.extend(99u32.to_le_bytes());
    p.extend(1u64.to_le_bytes());
    case(
        "unknown element type",
        vec![kv(b"v", 9, &p)],
        &["key 'v'", "unknown value type id 99"],
    );
    case(
        "bool 2",
        vec![kv(b"flag", 7, &[2])],
        &["key 'flag'", "bool byte is 2"],
    );
    case("empty key", vec![kv(b"", 4, &[0; 4])], &["key #0 is empty"]);
    let long = "k".repeat(5000);
    let m = expect_err(
        "long key",
        r_with_kvs(vec![kv_u32(&long, 1), kv_u32(&long, 2)]),
        &["duplicate metadata key 'kkk"],
    );
    assert!(m.len() < 300, "{m}");
    case(
        "bad utf-8 key",
        vec![kv(b"ab\xffcd", 4, &[0; 4])],
        &["metadata key #0", "UTF-8"],
    );
    case(
        "bad utf-8 value",
        vec![kv_str("name", b"\xc3\x28")],
        &["key 'name'", "UTF-8"],
    );
    case(
        "duplicate key",
        vec![kv_u32("x.n", 1), kv_u32("x.n", 2)],
        &["duplicate metadata key 'x.n'"],
    );
    for a in [0u32, 3, 48] {
        case(
            "alignment",
            vec![kv_u32("general.alignment", a)],
            &[
                "general.alignment",
                &format!("is {a}, not a nonzero power of two"),
            ],
        );
    }
    case(
        "alignment type",
        vec![kv(b"general.alignment", 10, &32u64.to_le_bytes())],
        &["general.alignment", "must be u32"],
    );
    assert_small_allocations();
}

#[test]
fn tensor_info_damage() {
    let case = |label: &str, f: &dyn Fn(&mut Raw), needles: &[&str]| {
        let mut r = Raw::valid();
        f(&mut r);
        expect_err(label, r.bytes(), needles)
    };
    case(
        "n_dims 5",
        &|r| r.tensors[1] = t("b", &[1, 1, 1, 1, 1], 0, 96),
        &["tensor 'b'", "5 dimensions"],
    );
    case(
        "n_dims huge",
        &|r| r.tensors[1].n_dims = u32::MAX,
        &["tensor 'b'", "4294967295 dimensions"],
    );
    for id in [4u32, 5, 31, 1000, u32::MAX] {
        case(
            "type id",
            &|r| r.tensors[1].ty = id,
            &["tensor 'b'", &format!("unknown ggml type id {id}")],
        );
    }
    case(
        "dims overflow",
        &|r| r.tensors[1] = t("b", &[1 << 32, 1 << 32], 0, 96),
        &["tensor 'b'", "i64::MAX"],
    );
    case(
        "dim > i64",
        &|r| r.tensors[1].dims = vec![u64::MAX],
        &["tensor 'b'", "i64::MAX"],
    );
    case(
        "row not a multiple of the block",
        &|r| r.tensors[0].dims = vec![33, 2],
        &["tensor 'a'", "Q8_0", "row length 33", "block size 32"],
    );
    case(
        "misaligned offset",
        &|r| r.tensors[1].offset = 100,
        &["tensor 'b'", "offset 100", "alignment 32"],
    );
    case(
        "offset past EOF",
        &|r| r.tensors[1].offset = 1 << 20,
        &["tensor 'b'", "past the end"],
    );
    case(
        "offset near u64::MAX",
        &|r| r.tensors[1].offset = u64::MAX - 31,
        &["tensor 'b'", "past the end"],
    );
    case(
        "data runs past EOF",
        &|r| r.tensors[1].dims = vec![16],
        &["tensor 'b'", "past the end"],
    );
    case(
        "overlap",
        &|r| r.tensors[1].offset = 64,
        &["tensor 'b'", "overlaps tensor 'a'"],
    );
    case(
        "overlap in reverse order",
        &|r| {
            r.tensors[0].offset = 32;
            r.tensors[1].offset = 64;
        },
        &["overlaps"],
    );
    case(
        "duplicate name",
        &|r| r.tensors[1].name = b"a".to_vec(),
        &["duplicate tensor name 'a'"],
    );
    case(
        "bad utf-8 name",
        &|r| r.tensors[1].name = b"b\xfe".to_vec(),
        &["tensor #1 name", "UTF-8"],
    );
    case(
        "long name",
        &|r| r.tensors[1].name = vec![b'n'; 64],
        &["tensor #1", "64 bytes long"],
    );
    case(
        "huge name length",
        &|r| r.tensors[1].name = vec![b'n'; 10_000],
        &["tensor #1", "10000 bytes long", "nnn..."],
    );
    // Tensor infos end unaligned right at EOF: the data section cannot start.
    let mut r = Raw::valid();
    r.tensors = vec![t("z", &[0], 0, 0)];
    r.align = 1;
    r.data_len = 0;
    let mut b = r.bytes();
    if b.len().is_multiple_of(32) {
        b.push(0);
    }
    expect_err("data section", b, &["data section"]);
    assert_small_allocations();
}

/// A rich valid file from our writer, cut at every byte: every cut that
/// loses tensor data must fail cleanly; cuts inside the final padding are
/// still valid files.
#[test]
fn truncated_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.gguf");
    let md = vec![
        ("general.architecture".to_string(), Value::from("mamba")),
        ("a.f32".to_string(), Value::F32(0.5)),
        ("a.bool".to_string(), Value::Bool(true)),
        ("a.u64".to_string(), Value::U64(9)),
        (
            "a.strings".to_string(),
            Value::Array(Array::String(vec!["x".into(), "yz".into()])),
        ),
        (
            "a.nested".to_string(),
            Value::Array(Array::Array(vec![
                Array::I16(vec![1, -1]),
                Array::F64(vec![2.0]),
            ])),
        ),
    ];
    let q = [7u8; 34];
    let f = [1u8; 12];
    write_file(
        &path,
        &md,
        &[
            (TensorSpec::new("q", vec![32], GgmlType::Q8_0), &q[..]),
            (TensorSpec::new("f", vec![3], GgmlType::F32), &f[..]),
        ],
    )
    .unwrap();
    let full = std::fs::read(&path).unwrap();
    let parsed = GgufFile::from_bytes(full.clone()).unwrap();
    let last = parsed
        .tensors()
        .iter()
        .map(|t| parsed.data_offset() + t.offset + t.n_bytes as u64);
    let needed = last.max().unwrap() as usize;
    for cut in 0..full.len() {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        if cut >= needed {
            assert!(r.is_ok(), "cut at {cut}: {:?}", r.err());
        } else {
            let e = r.err().unwrap_or_else(|| panic!("cut at {cut} parsed"));
            let m = e.to_string();
            assert!(
                m.contains("truncated")
                    || m.contains("past the end")
                    || m.contains("left")
                    || m.contains("magic"),
                "cut at {cut}: {m}"
            );
        }
    }
    assert_small_allocations();
}

/// Random byte damage anywhere in a valid file: parsing may succeed or fail
/// but must never panic or allocate wildly.
#[test]
fn random_byte_damage_never_panics() {
    let base = {
        let mut r = Raw::valid();
        let mut p = Vec::new();
        p.extend(8u32.to_le_bytes());
        p.extend(3u64.to_le_bytes());
        for w in [&b"aa"[..], b"bbb", b"c"] {
            s(&mut p, w);
        }
        r.kvs.push(kv(b"toks", 9, &p));
        r.bytes()
    };
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..5000 {
        let mut b = base.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() % b.len() as u64) as usize;
            b[i] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => b[i] ^ (1 << (next() % 8)),
            };
        }
        match GgufFile::from_bytes(b) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        }
    }
    assert!(
        err > 1000,
        "only {err} of {} damaged files were refused",
        ok + err
    );
    assert_small_allocations();
}
