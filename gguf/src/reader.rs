//! The reader: memory-maps a GGUF file and validates every number in it
//! against the file's size before using it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use quant::GgmlType;

use crate::error::GgufError;
use crate::tensor::{check_name, shown, tensor_size, TensorInfo, MAX_DIMS};
use crate::value::{Array, Value, ValueType};
use crate::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};

/// Arrays nested deeper than this are refused (a crafted file could nest
/// millions of levels and overflow the stack).
pub const MAX_ARRAY_DEPTH: usize = 16;

/// A key takes at least 8 (length) + 1 (one byte: empty keys are refused) +
/// 4 (type) + 1 (smallest value) bytes.
const MIN_KV_SIZE: u64 = 14;
/// A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8
/// (offset) bytes.
const MIN_TENSOR_INFO_SIZE: u64 = 24;

/// An opened GGUF file: parsed metadata and tensor table plus the bytes.
pub struct GgufFile {
    backing: Backing,
    path: Option<PathBuf>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("n_keys", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(AlignedBytes),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(b) => b.as_slice(),
        }
    }
}

/// Bytes copied into 64-byte aligned storage, so that tensor data from
/// [`GgufFile::from_bytes`] is as aligned in memory as from a mapped file
/// (every tensor starts at a multiple of the file's alignment).
struct AlignedBytes {
    chunks: Vec<Chunk>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

impl AlignedBytes {
    fn new(bytes: &[u8]) -> Self {
        let mut chunks = vec![Chunk([0; 64]); bytes.len().div_ceil(64)];
        for (c, src) in chunks.iter_mut().zip(bytes.chunks(64)) {
            c.0[..src.len()].copy_from_slice(src);
        }
        AlignedBytes {
            chunks,
            len: bytes.len(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `Chunk` is a plain 64-byte array with no padding
        // (repr(C), size 64), so `chunks` is `chunks.len() * 64` initialized
        // contiguous bytes, and `len <= chunks.len() * 64` by construction.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Fills `buf` (the file's length) with the file, then (Linux) tells the
/// kernel the file's cached pages are not needed, so the page cache does not
/// keep a second copy of the weights. A buffered read takes the pages from
/// the cache when they are there (a second load is fast); O_DIRECT, tried
/// first, re-read the whole file from disk every time (3 s more for 0.9 GB
/// here) for no gain in decode speed.
fn read_whole(path: &Path, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = File::open(path)?;
    f.read_exact(buf)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only drops clean cached
        // pages of the file (a hint, its result does not matter).
        let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file. Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |op: &str, source| GgufError::Io {
            path: path.to_path_buf(),
            op: op.to_string(),
            source,
        };
        let file = File::open(path).map_err(|e| io("cannot open", e))?;
        let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        let backing = if len == 0 {
            // Mapping an empty file fails on some systems; it is too short anyway.
            Backing::Owned(AlignedBytes::new(&[]))
        } else {
            // SAFETY: the map is read-only. Like every mmap-based reader we rely
            // on nobody truncating or rewriting the file while it is open; our
            // own writer never modifies a file in place (it renames a new one
            // over it), which leaves this mapping intact.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("cannot mmap", e))?;
            Backing::Mmap(map)
        };
        Self::from_backing(backing, Some(path.to_path_buf()))
    }

    /// Reads the whole file into anonymous memory instead of mapping it
    /// (`--no-mmap`): transparent huge pages requested with
    /// `MADV_HUGEPAGE` (fewer TLB misses when every token streams all the
    /// weights), the file's page-cache copy dropped after the read, then
    /// made read-only.
    /// Errors name the file.
    pub fn open_in_memory(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |op: &str, source| GgufError::Io {
            path: path.to_path_buf(),
            op: op.to_string(),
            source,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| io("cannot stat", e))?
            .len();
        let len = usize::try_from(len).map_err(|_| {
            io(
                "cannot hold in memory",
                std::io::Error::other("file larger than the address space"),
            )
        })?;
        if len == 0 {
            return Self::from_backing(Backing::Owned(AlignedBytes::new(&[])), Some(path.into()));
        }
        let mut mem =
            memmap2::MmapMut::map_anon(len).map_err(|e| io("cannot allocate memory for", e))?;
        #[cfg(target_os = "linux")]
        {
            // A hint: without THP the pages are 4 KiB, which still works.
            let _ = mem.advise(memmap2::Advice::HugePage);
        }
        read_whole(path, &mut mem).map_err(|e| io("cannot read", e))?;
        let ro = mem
            .make_read_only()
            .map_err(|e| io("cannot protect the memory of", e))?;
        Self::from_backing(Backing::Mmap(ro), Some(path.to_path_buf()))
    }

    /// Parses a GGUF held in memory (handy for tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_backing(Backing::Owned(AlignedBytes::new(&bytes)), None)
    }

    fn from_backing(backing: Backing, path: Option<PathBuf>) -> Result<GgufFile, GgufError> {
        let p = parse(backing.bytes(), path.as_deref())?;
        let key_index = p
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = p
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            backing,
            path,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            key_index,
            tensors: p.tensors,
            tensor_index,
        })
    }

    /// The path given to [`GgufFile::open`], `None` for [`GgufFile::from_bytes`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// Every metadata key and value, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: describe(v),
        }
    }

    /// An integer key (any integer type) whose value fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_u32()
            .ok_or_else(|| Self::wrong_type(key, "an integer in u32 range", v))
    }

    /// An integer key (any integer type) whose value is non-negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v))
    }

    /// An integer key (any integer type) whose value fits in i64.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.require(key)?;
        v.as_i64()
            .ok_or_else(|| Self::wrong_type(key, "an integer in i64 range", v))
    }

    /// An f32 key (an f64 is rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::wrong_type(key, "f32", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong_type(key, "bool", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong_type(key, "string", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| Self::wrong_type(key, "array", v))
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The tensor's bytes, borrowed from the mapped file (zero copy). They
    /// start at a multiple of `min(alignment, 64)` bytes in memory. `t` must
    /// come from this file; for a foreign `TensorInfo` whose range does not
    /// fit this file the slice is empty.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_offset.checked_add(t.offset);
        let range = start.and_then(|s| {
            let s = usize::try_from(s).ok()?;
            Some(s..s.checked_add(t.n_bytes)?)
        });
        range
            .and_then(|r| self.backing.bytes().get(r))
            .unwrap_or(&[])
    }

    /// The named tensor's info and bytes.
    pub fn tensor_by_name(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_string(),
        })?;
        Ok((t, self.tensor_data(t)))
    }

    /// The whole file's bytes (mapped, not copied).
    pub fn as_bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Passes an access-pattern hint for the mapped file to the kernel
    /// (e.g. `Advice::WillNeed` before a first pass over every weight). A
    /// no-op for files made with [`GgufFile::from_bytes`].
    #[cfg(unix)]
    pub fn advise(&self, advice: memmap2::Advice) -> std::io::Result<()> {
        match &self.backing {
            Backing::Mmap(m) => m.advise(advice),
            Backing::Owned(_) => Ok(()),
        }
    }

    /// `general.architecture` ("mamba"), if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }
}

/// "u32" or "i32 (-1)": a value's type, with its value for a scalar number.
fn describe(v: &Value) -> String {
    match v {
        Value::String(_) | Value::Array(_) => v.type_description(),
        Value::Bool(b) => format!("bool ({b})"),
        Value::U8(x) => format!("u8 ({x})"),
        Value::I8(x) => format!("i8 ({x})"),
        Value::U16(x) => format!("u16 ({x})"),
        Value::I16(x) => format!("i16 ({x})"),
        Value::U32(x) => format!("u32 ({x})"),
        Value::I32(x) => format!("i32 ({x})"),
        Value::U64(x) => format!("u64 ({x})"),
        Value::I64(x) => format!("i64 ({x})"),
        Value::F32(x) => format!("f32 ({x})"),
        Value::F64(x) => format!("f64 ({x})"),
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: Option<&'a Path>,
}

impl<'a> Cursor<'a> {
    fn err_at(&self, offset: usize, what: impl Into<String>) -> GgufError {
        GgufError::Invalid {
            path: self.path.map(Path::to_path_buf),
            offset: offset as u64,
            what: what.into(),
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos.min(self.buf.len())) as u64
    }

    /// Takes `n` bytes, or reports that `ctx` is truncated.
    fn take(&mut self, n: u64, ctx: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err_at(
                self.pos,
                format!(
                    "{}: needs {n} bytes but the file ends after {} (file truncated?)",
                    ctx(),
                    self.remaining()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so this fits
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, ctx: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, ctx)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, ctx: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(ctx).map(u32::from_le_bytes)
    }

    fn u64(&mut self, ctx: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(ctx).map(u64::from_le_bytes)
    }

    /// A u64 count of items each at least `min_size` bytes, checked against
    /// the bytes left so nothing is ever allocated from an unchecked number.
    fn count(&mut self, min_size: u64, ctx: &dyn Fn() -> String) -> Result<u64, GgufError> {
        let at = self.pos;
        let n = self.u64(ctx)?;
        if n > self.remaining() / min_size.max(1) {
            return Err(self.err_at(
                at,
                format!(
                    "{}: count {n} (at least {min_size} bytes each) cannot fit in the {} bytes left",
                    ctx(),
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// A u64 length then that many bytes of UTF-8.
    fn string(&mut self, ctx: &dyn Fn() -> String) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64(ctx)?;
        if len > self.remaining() {
            return Err(self.err_at(
                at,
                format!(
                    "{}: string length {len} exceeds the {} bytes left (file truncated?)",
                    ctx(),
                    self.remaining()
                ),
            ));
        }
        let bytes_at = self.pos;
        let bytes = self.take(len, ctx)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.err_at(
                bytes_at + e.valid_up_to(),
                format!("{}: string is not valid UTF-8", ctx()),
            )),
        }
    }

    fn value_type(&mut self, ctx: &dyn Fn() -> String) -> Result<ValueType, GgufError> {
        let at = self.pos;
        let id = self.u32(ctx)?;
        ValueType::from_id(id)
            .ok_or_else(|| self.err_at(at, format!("{}: unknown value type id {id}", ctx())))
    }

    fn value(&mut self, ty: ValueType, ctx: &dyn Fn() -> String) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(ctx)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(ctx)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(ctx)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(ctx)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(ctx)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(ctx)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(ctx)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(ctx)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(ctx)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(ctx)?)),
            ValueType::Bool => Value::Bool(self.bool(ctx)?),
            ValueType::String => Value::String(self.string(ctx)?),
            ValueType::Array => Value::Array(self.array_value(0, ctx)?),
        })
    }

    fn bool(&mut self, ctx: &dyn Fn() -> String) -> Result<bool, GgufError> {
        let at = self.pos;
        match self.array::<1>(ctx)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err_at(at, format!("{}: bool byte is {b}, not 0 or 1", ctx()))),
        }
    }

    /// An array body: element type, count, elements.
    fn array_value(&mut self, depth: usize, ctx: &dyn Fn() -> String) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err_at(
                self.pos,
                format!("{}: arrays nested more than {MAX_ARRAY_DEPTH} deep", ctx()),
            ));
        }
        let ty = self.value_type(ctx)?;
        let n = self.count(ty.min_size(), ctx)?;
        // n * min_size <= remaining bytes, so n is a sane allocation size.
        let n = n as usize;
        fn fixed<const N: usize, T>(
            c: &mut Cursor<'_>,
            n: usize,
            ctx: &dyn Fn() -> String,
            f: fn([u8; N]) -> T,
        ) -> Result<Vec<T>, GgufError> {
            let bytes = c.take((n * N) as u64, ctx)?;
            Ok(bytes
                .chunks_exact(N)
                .map(|ch| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(ch);
                    f(a)
                })
                .collect())
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(fixed(self, n, ctx, u8::from_le_bytes)?),
            ValueType::I8 => Array::I8(fixed(self, n, ctx, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(fixed(self, n, ctx, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(fixed(self, n, ctx, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(fixed(self, n, ctx, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(fixed(self, n, ctx, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(fixed(self, n, ctx, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(fixed(self, n, ctx, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(fixed(self, n, ctx, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(fixed(self, n, ctx, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.bool(&|| format!("{} element {i}", ctx()))?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&|| format!("{} element {i}", ctx()))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(depth + 1, &|| format!("{} element {i}", ctx()))?);
                }
                Array::Array(v)
            }
        })
    }
}

fn parse(buf: &[u8], path: Option<&Path>) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    let header = || "header".to_string();

    // Header: magic, version, tensor count, kv count.
    if buf.len() < 4 || buf[..4] != MAGIC {
        let found: Vec<String> = buf.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(c.err_at(
            0,
            format!(
                "not a GGUF file: magic is [{}], expected 'GGUF' (47 47 55 46)",
                found.join(" ")
            ),
        ));
    }
    c.pos = 4;
    let version = c.u32(&header)?;
    if version != 2 && version != 3 {
        let swapped = version.swap_bytes();
        let what = if version & 0xffff == 0 && (swapped == 2 || swapped == 3) {
            format!("big-endian GGUF v{swapped} is not supported")
        } else {
            format!("GGUF version {version} is not supported (only 2 and 3)")
        };
        return Err(c.err_at(4, what));
    }
    let n_tensors_at = c.pos;
    let n_tensors = c.u64(&header)?;
    let n_kv_at = c.pos;
    let n_kv = c.u64(&header)?;
    if n_kv > c.remaining() / MIN_KV_SIZE {
        return Err(c.err_at(
            n_kv_at,
            format!(
                "metadata count {n_kv} cannot fit in the {} bytes left",
                c.remaining()
            ),
        ));
    }
    if n_tensors > c.remaining() / MIN_TENSOR_INFO_SIZE {
        return Err(c.err_at(
            n_tensors_at,
            format!(
                "tensor count {n_tensors} cannot fit in the {} bytes left",
                c.remaining()
            ),
        ));
    }

    // Metadata.
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
    let mut value_offsets: HashMap<String, usize> = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(&|| format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(c.err_at(key_at, format!("metadata key #{i} is empty")));
        }
        if value_offsets.contains_key(&key) {
            return Err(c.err_at(key_at, format!("duplicate metadata key '{}'", shown(&key))));
        }
        let key_shown = shown(&key);
        let ctx = || format!("metadata key '{key_shown}'");
        let ty = c.value_type(&ctx)?;
        let value_at = c.pos;
        let value = c.value(ty, &ctx)?;
        value_offsets.insert(key.clone(), value_at);
        metadata.push((key, value));
    }

    // Alignment, as llama.cpp: a u32 power of two.
    let mut alignment = DEFAULT_ALIGNMENT;
    if let Some((_, v)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        let at = value_offsets.get(ALIGNMENT_KEY).copied().unwrap_or(0);
        match v {
            Value::U32(a) if a.is_power_of_two() => alignment = u64::from(*a),
            Value::U32(a) => {
                return Err(c.err_at(
                    at,
                    format!("metadata key '{ALIGNMENT_KEY}' is {a}, not a nonzero power of two"),
                ))
            }
            other => {
                return Err(c.err_at(
                    at,
                    format!(
                        "metadata key '{ALIGNMENT_KEY}' must be u32, found {}",
                        other.type_description()
                    ),
                ))
            }
        }
    }

    // Tensor infos.
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    let mut offset_fields: Vec<usize> = Vec::with_capacity(n_tensors as usize);
    let mut names: HashSet<String> = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name_at = c.pos;
        let name = c.string(&|| format!("tensor #{i} name"))?;
        check_name(&name).map_err(|e| c.err_at(name_at, format!("tensor #{i}: {e}")))?;
        if names.contains(&name) {
            return Err(c.err_at(name_at, format!("duplicate tensor name '{name}'")));
        }
        let ctx = || format!("tensor '{name}'");
        let n_dims_at = c.pos;
        let n_dims = c.u32(&ctx)?;
        if n_dims as usize > MAX_DIMS {
            return Err(c.err_at(
                n_dims_at,
                format!("tensor '{name}' has {n_dims} dimensions, ggml allows at most {MAX_DIMS}"),
            ));
        }
        let dims_at = c.pos;
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&ctx)?);
        }
        let type_at = c.pos;
        let type_id = c.u32(&ctx)?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| {
            c.err_at(
                type_at,
                format!("tensor '{name}' has unknown ggml type id {type_id}"),
            )
        })?;
        let (n_elements, n_bytes) = tensor_size(&dims, ty)
            .map_err(|e| c.err_at(dims_at, format!("tensor '{name}' ({}): {e}", ty.name())))?;
        let offset_at = c.pos;
        let offset = c.u64(&ctx)?;
        if offset % alignment != 0 {
            return Err(c.err_at(
                offset_at,
                format!("tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        names.insert(name.clone());
        offset_fields.push(offset_at);
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    // Data section: aligned after the tensor infos (llama.cpp does not pad
    // when there are no tensors, and then nothing depends on it).
    let end_of_infos = c.pos as u64;
    let data_offset = if tensors.is_empty() {
        end_of_infos
    } else {
        let padded = end_of_infos
            .checked_next_multiple_of(alignment)
            .filter(|&p| p <= buf.len() as u64)
            .ok_or_else(|| {
                c.err_at(
                    c.pos,
                    format!(
                        "data section (aligned to {alignment} after the tensor infos) starts past the end of the file ({} bytes)",
                        buf.len()
                    ),
                )
            })?;
        padded
    };

    let file_size = buf.len() as u64;
    for (t, &at) in tensors.iter().zip(&offset_fields) {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes as u64));
        match end {
            Some(end) if end <= file_size => {}
            _ => {
                return Err(c.err_at(
                    at,
                    format!(
                        "tensor '{}' data ({} bytes at data offset {}) runs past the end of the file ({file_size} bytes, data section at {data_offset})",
                        t.name, t.n_bytes, t.offset
                    ),
                ))
            }
        }
    }

    // No two tensors may share bytes.
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        // Both ranges were checked to lie inside the file, so no overflow.
        if a.offset + a.n_bytes as u64 > b.offset {
            return Err(c.err_at(
                offset_fields[w[1]],
                format!(
                    "tensor '{}' (data offset {}) overlaps tensor '{}' (data offset {}, {} bytes)",
                    b.name, b.offset, a.name, a.offset, a.n_bytes
                ),
            ));
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}
