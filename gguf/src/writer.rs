//! The streaming writer: header, metadata and tensor infos first, then each
//! tensor's bytes as the caller produces them, into a temp file in the target
//! folder that is renamed over the target only when complete.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use quant::GgmlType;

use crate::error::GgufError;
use crate::reader::MAX_ARRAY_DEPTH;
use crate::tensor::{check_name, tensor_size};
use crate::value::{Array, Value};
use crate::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, VERSION};

/// A tensor to be written: its byte size follows from the dims and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// Innermost first, as in the file: a [rows, cols] matrix is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: impl Into<Vec<u64>>, ty: GgmlType) -> Self {
        TensorSpec {
            name: name.into(),
            dims: dims.into(),
            ty,
        }
    }

    /// The tensor's byte size, or what is wrong with its shape.
    pub fn n_bytes(&self) -> Result<usize, String> {
        tensor_size(&self.dims, self.ty).map(|(_, b)| b)
    }
}

struct Planned {
    name: String,
    n_bytes: usize,
}

/// Writes one GGUF v3 file. Create it with the full metadata and tensor list,
/// feed each tensor's bytes in order with [`GgufWriter::write_tensor_data`]
/// (in as many chunks as convenient), then call [`GgufWriter::finish`].
/// Dropping it unfinished deletes the temp file and leaves the target as it was.
///
/// Files are laid out as llama.cpp writes them (tensors in the given order,
/// each at the previous one's padded end), which its loader requires. Note
/// that llama.cpp's loader refuses arrays of arrays in metadata although the
/// format (and gguf-py) allows them: keep them out of model files.
pub struct GgufWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    tensors: Vec<Planned>,
    alignment: u64,
    /// Index of the tensor being filled (== tensors.len() once all are full).
    current: usize,
    /// Bytes of the current tensor written so far.
    filled: usize,
    /// Bytes written to the file so far.
    written: u64,
    finished: bool,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.path)
            .field("current", &self.current)
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

fn array_depth(a: &Array) -> usize {
    match a {
        Array::Array(v) => 1 + v.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

impl GgufWriter {
    /// Validates the metadata and tensor list, computes every tensor's offset
    /// and writes the header to a new temp file `<dir>/.<file name>.tmp-<pid>-<random>`
    /// (removing those of processes that died mid-write).
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, Value)],
        tensors: &[TensorSpec],
    ) -> Result<GgufWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let bad = |what: String| GgufError::Write {
            path: path.clone(),
            what,
        };

        // Metadata: non-empty unique keys, a valid alignment, sane nesting.
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for (k, v) in metadata {
            if k.is_empty() {
                return Err(bad("empty metadata key".into()));
            }
            if !keys.insert(k.as_str()) {
                return Err(bad(format!("duplicate metadata key '{k}'")));
            }
            if let Value::Array(a) = v {
                if array_depth(a) > MAX_ARRAY_DEPTH {
                    return Err(bad(format!(
                        "metadata key '{k}': arrays nested more than {MAX_ARRAY_DEPTH} deep"
                    )));
                }
            }
            if k == ALIGNMENT_KEY {
                match v {
                    Value::U32(a) if a.is_power_of_two() => alignment = u64::from(*a),
                    other => {
                        return Err(bad(format!(
                            "metadata key '{ALIGNMENT_KEY}' must be a u32 power of two, found {other:?}"
                        )))
                    }
                }
            }
        }

        // Tensors: valid unique names and shapes; offsets follow one another.
        let mut names = HashSet::new();
        let mut planned = Vec::with_capacity(tensors.len());
        let mut infos = Vec::new();
        let mut offset: u64 = 0;
        for t in tensors {
            if t.name.is_empty() {
                return Err(bad("empty tensor name".into()));
            }
            check_name(&t.name).map_err(&bad)?;
            if !names.insert(t.name.as_str()) {
                return Err(bad(format!("duplicate tensor name '{}'", t.name)));
            }
            let n_bytes = t
                .n_bytes()
                .map_err(|e| bad(format!("tensor '{}' ({}): {e}", t.name, t.ty.name())))?;
            put_string(&mut infos, &t.name);
            infos.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                infos.extend_from_slice(&d.to_le_bytes());
            }
            infos.extend_from_slice(&t.ty.id().to_le_bytes());
            infos.extend_from_slice(&offset.to_le_bytes());
            offset = (n_bytes as u64)
                .checked_next_multiple_of(alignment)
                .and_then(|n| offset.checked_add(n))
                .ok_or_else(|| bad(format!("tensor '{}': data section overflows u64", t.name)))?;
            planned.push(Planned {
                name: t.name.clone(),
                n_bytes,
            });
        }

        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_string(&mut head, k);
            head.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut head, v);
        }
        head.extend_from_slice(&infos);
        pad(&mut head, alignment);

        if path.file_name().is_none() {
            return Err(bad("the output path has no file name".into()));
        }
        // A temp file `.NAME.tmp-<pid>-<random>` beside the target; orphans
        // of killed runs are removed first (see crate::tmpfile).
        let (tmp_path, file) = crate::tmpfile::create_temp(&path).map_err(|e| GgufError::Io {
            path: crate::tmpfile::parent_dir(&path),
            op: format!(
                "cannot create a temp file for {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            source: e,
        })?;
        let mut w = GgufWriter {
            path,
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tensors: planned,
            alignment,
            current: 0,
            filled: 0,
            written: 0,
            finished: false,
        };
        w.emit(&head, "writing the header")?;
        w.skip_empty_tensors();
        Ok(w)
    }

    /// The output path (the temp file is renamed onto it by `finish`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The name of the tensor the next bytes go to, `None` once all are full.
    pub fn current_tensor(&self) -> Option<&str> {
        self.tensors.get(self.current).map(|t| t.name.as_str())
    }

    fn io_err(&self, op: String, e: std::io::Error) -> GgufError {
        GgufError::Io {
            path: self.tmp_path.clone(),
            op,
            source: e,
        }
    }

    fn emit(&mut self, bytes: &[u8], op: &str) -> Result<(), GgufError> {
        let res = match self.out.as_mut() {
            Some(out) => out.write_all(bytes),
            None => Err(std::io::Error::other("writer already closed")),
        };
        res.map_err(|e| self.io_err(op.to_string(), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn skip_empty_tensors(&mut self) {
        while self
            .tensors
            .get(self.current)
            .is_some_and(|t| t.n_bytes == 0)
        {
            self.current += 1;
        }
    }

    /// Appends bytes to the current tensor. A call may fill part of a tensor
    /// but never runs past its end: a size mistake is reported at the tensor
    /// it happens in. Padding is written when a tensor is complete.
    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(t) = self.tensors.get(self.current) else {
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "{} more bytes of tensor data after all {} tensors were complete",
                    bytes.len(),
                    self.tensors.len()
                ),
            });
        };
        let left = t.n_bytes - self.filled;
        if bytes.len() > left {
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "{} bytes given for tensor '{}', which has only {left} of its {} bytes left",
                    bytes.len(),
                    t.name,
                    t.n_bytes
                ),
            });
        }
        let (name, total) = (t.name.clone(), t.n_bytes);
        self.emit(bytes, &format!("writing tensor '{name}'"))?;
        self.filled += bytes.len();
        if self.filled == total {
            let padding = self.written.next_multiple_of(self.alignment) - self.written;
            self.emit(&vec![0u8; padding as usize], "writing padding")?;
            self.current += 1;
            self.filled = 0;
            self.skip_empty_tensors();
        }
        Ok(())
    }

    /// Writes a whole tensor at once, checking it is the one expected next.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let expected = self.tensors.get(self.current);
        match expected {
            Some(t) if t.name == name && self.filled == 0 && t.n_bytes == bytes.len() => {
                self.write_tensor_data(bytes)
            }
            Some(t) if t.name == name => Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "tensor '{name}' needs {} bytes ({} already written), got {}",
                    t.n_bytes,
                    self.filled,
                    bytes.len()
                ),
            }),
            _ => Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "tensor '{name}' written out of order: expected {}",
                    expected.map_or("no more tensors".to_string(), |t| format!("'{}'", t.name))
                ),
            }),
        }
    }

    /// Checks every tensor got all its bytes, flushes, fsyncs and renames the
    /// temp file onto the target. Returns the file's size in bytes.
    pub fn finish(mut self) -> Result<u64, GgufError> {
        if let Some(t) = self.tensors.get(self.current) {
            let missing: Vec<&str> = self.tensors[self.current..]
                .iter()
                .filter(|t| t.n_bytes > 0)
                .map(|t| t.name.as_str())
                .collect();
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "finished early: tensor '{}' has {} of {} bytes, {} tensor(s) incomplete",
                    t.name,
                    self.filled,
                    t.n_bytes,
                    missing.len()
                ),
            });
        }
        let out = self.out.take();
        let file = match out {
            Some(out) => out
                .into_inner()
                .map_err(|e| self.io_err("cannot flush".into(), e.into_error()))?,
            None => return Err(self.io_err("finish".into(), std::io::Error::other("closed"))),
        };
        file.sync_all()
            .map_err(|e| self.io_err("cannot fsync".into(), e))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.path).map_err(|e| GgufError::Io {
            path: self.path.clone(),
            op: format!("cannot rename {} onto it", self.tmp_path.display()),
            source: e,
        })?;
        self.finished = true;
        crate::tmpfile::sync_dir(&self.path);
        Ok(self.written)
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.out.take());
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Writes a whole GGUF file from tensors held in memory (small files, tests).
pub fn write_file(
    path: impl AsRef<Path>,
    metadata: &[(String, Value)],
    tensors: &[(TensorSpec, &[u8])],
) -> Result<u64, GgufError> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut w = GgufWriter::create(path, metadata, &specs)?;
    for (s, data) in tensors {
        w.write_tensor(&s.name, data)?;
    }
    w.finish()
}

fn pad(buf: &mut Vec<u8>, alignment: u64) {
    let len = buf.len() as u64;
    let target = len.next_multiple_of(alignment);
    buf.resize(target as usize, 0);
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_string(buf, s),
        Value::Array(a) => put_array(buf, a),
    }
}

/// Element type, count, elements (an inner array repeats this without a
/// leading type, as gguf-py and llama.cpp lay it out).
fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&a.elem_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(buf: &mut Vec<u8>, v: &[T], f: fn(T) -> [u8; N]) {
        for &x in v {
            buf.extend_from_slice(&f(x));
        }
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => each(buf, v, i8::to_le_bytes),
        Array::U16(v) => each(buf, v, u16::to_le_bytes),
        Array::I16(v) => each(buf, v, i16::to_le_bytes),
        Array::U32(v) => each(buf, v, u32::to_le_bytes),
        Array::I32(v) => each(buf, v, i32::to_le_bytes),
        Array::F32(v) => each(buf, v, f32::to_le_bytes),
        Array::U64(v) => each(buf, v, u64::to_le_bytes),
        Array::I64(v) => each(buf, v, i64::to_le_bytes),
        Array::F64(v) => each(buf, v, f64::to_le_bytes),
        Array::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_string(buf, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(buf, inner)),
    }
}
