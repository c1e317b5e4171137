//! A Hugging Face checkpoint's weights: `model.safetensors`, or shards named by
//! `model.safetensors.index.json`, each memory-mapped. Tensors are looked up
//! by name and read as slices of the mapping; nothing is copied until a
//! tensor is converted, one row batch at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{io_err, ConvertError, Result};

/// Element types we read from safetensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcDtype {
    F32,
    F16,
    BF16,
    U8,
}

impl SrcDtype {
    pub fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
            SrcDtype::U8 => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SrcDtype::F32 => "F32",
            SrcDtype::F16 => "F16",
            SrcDtype::BF16 => "BF16",
            SrcDtype::U8 => "U8",
        }
    }
}

/// Where one tensor lives.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: SrcDtype,
    /// Row-major shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    pub file: usize,
    /// Byte range inside the file (absolute).
    pub start: usize,
    pub end: usize,
}

impl TensorEntry {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// All shards of a checkpoint, memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorEntry>,
}

fn map_dtype(d: Dtype) -> Option<SrcDtype> {
    match d {
        Dtype::F32 => Some(SrcDtype::F32),
        Dtype::F16 => Some(SrcDtype::F16),
        Dtype::BF16 => Some(SrcDtype::BF16),
        Dtype::U8 => Some(SrcDtype::U8),
        _ => None,
    }
}

fn shards_err(path: &Path, what: impl Into<String>) -> ConvertError {
    ConvertError::Shards {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

impl Checkpoint {
    /// Open `dir/model.safetensors`, or the shards listed by
    /// `dir/model.safetensors.index.json` (checking that index and files agree).
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ConvertError::Json {
                    path: index_path.clone(),
                    source,
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| shards_err(&index_path, "no \"weight_map\" object"))?;
            let mut files: Vec<String> = Vec::new();
            let mut want: HashMap<String, String> = HashMap::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    shards_err(
                        &index_path,
                        format!("weight_map['{tensor}'] is not a string"),
                    )
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(shards_err(
                        &index_path,
                        format!("weight_map['{tensor}'] names a file outside the folder: '{file}'"),
                    ));
                }
                if !files.iter().any(|f| f == file) {
                    files.push(file.to_string());
                }
                want.insert(tensor.clone(), file.to_string());
            }
            files.sort();
            for f in &files {
                ck.add_shard(&dir.join(f))?;
            }
            // Index and files must agree exactly.
            for (tensor, file) in &want {
                match ck.tensors.get(tensor) {
                    None => {
                        return Err(shards_err(
                            &dir.join(file),
                            format!("tensor '{tensor}' is listed in model.safetensors.index.json but missing from the file"),
                        ))
                    }
                    Some(e) => {
                        let actual = &ck.shards[e.file].path;
                        if actual.file_name().and_then(|s| s.to_str()) != Some(file.as_str()) {
                            return Err(shards_err(
                                actual,
                                format!("tensor '{tensor}' is in this file, but model.safetensors.index.json puts it in '{file}'"),
                            ));
                        }
                    }
                }
            }
            for (name, e) in &ck.tensors {
                if !want.contains_key(name) {
                    return Err(shards_err(
                        &ck.shards[e.file].path,
                        format!("tensor '{name}' is not listed in model.safetensors.index.json"),
                    ));
                }
            }
        } else if single.is_file() {
            ck.add_shard(&single)?;
        } else {
            return Err(shards_err(
                dir,
                "no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)",
            ));
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(io_err(path))?;
        // SAFETY: the mapping is read-only; a checkpoint modified while we
        // convert it yields wrong numbers, never unsafety in our code (all
        // offsets are validated against the mapping's length below).
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        let _ = map.advise(memmap2::Advice::Sequential);
        let (header_len, meta) = SafeTensors::read_metadata(&map[..])
            .map_err(|e| shards_err(path, format!("not a valid safetensors file: {e}")))?;
        let base = 8usize
            .checked_add(header_len)
            .ok_or_else(|| shards_err(path, "header length overflows"))?;
        let idx = self.shards.len();
        for (name, info) in meta.tensors() {
            let dtype = map_dtype(info.dtype).ok_or_else(|| ConvertError::Tensor {
                file: path.to_path_buf(),
                tensor: name.clone(),
                what: format!(
                    "unsupported dtype {:?} (F32, F16, BF16 and bitsandbytes U8 are supported)",
                    info.dtype
                ),
            })?;
            let (s, e) = info.data_offsets;
            let start = base.checked_add(s);
            let end = base.checked_add(e);
            let (Some(start), Some(end)) = (start, end) else {
                return Err(shards_err(
                    path,
                    format!("tensor '{name}': offsets overflow"),
                ));
            };
            let n: Option<usize> = info
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.size()));
            if end > map.len() || start > end || n != Some(end - start) {
                return Err(ConvertError::Tensor {
                    file: path.to_path_buf(),
                    tensor: name.clone(),
                    what: format!(
                        "byte range {start}..{end} does not fit shape {:?} of {} in a {}-byte file",
                        info.shape,
                        dtype.name(),
                        map.len()
                    ),
                });
            }
            if let Some(prev) = self.tensors.get(&name) {
                return Err(shards_err(
                    path,
                    format!(
                        "tensor '{name}' appears in two shards (also in {})",
                        self.shards[prev.file].path.display()
                    ),
                ));
            }
            self.tensors.insert(
                name.clone(),
                TensorEntry {
                    name: name.clone(),
                    dtype,
                    shape: info.shape.clone(),
                    file: idx,
                    start,
                    end,
                },
            );
        }
        self.shards.push(Shard {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that lists the weights: the index for a sharded checkpoint,
    /// else model.safetensors (for messages about absent tensors).
    pub fn listing(&self) -> PathBuf {
        if self.shards.len() == 1 {
            self.shards[0].path.clone()
        } else {
            self.dir.join("model.safetensors.index.json")
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn file_of(&self, e: &TensorEntry) -> &Path {
        self.shards
            .get(e.file)
            .map(|s| s.path.as_path())
            .unwrap_or(&self.dir)
    }

    /// The raw bytes of a tensor (validated against the mapping at open).
    pub fn bytes(&self, e: &TensorEntry) -> &[u8] {
        self.shards
            .get(e.file)
            .and_then(|s| s.map.get(e.start..e.end))
            .unwrap_or(&[])
    }

    /// Drop the pages of a byte range of a tensor from our resident set once
    /// they are converted, so that peak RSS follows the batch size and not
    /// the checkpoint size. They are re-read from the file if touched again.
    pub fn release(&self, e: &TensorEntry, from: usize, to: usize) {
        const PAGE: usize = 4096;
        let Some(shard) = self.shards.get(e.file) else {
            return;
        };
        let start = (e.start + from).div_ceil(PAGE) * PAGE;
        let end = ((e.start + to.min(e.end - e.start)) / PAGE) * PAGE;
        if end > start && end <= shard.map.len() {
            // SAFETY: a read-only file mapping; DONTNEED only drops clean
            // pages, which the kernel re-reads from the file on access.
            unsafe {
                let _ =
                    shard
                        .map
                        .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start);
            }
        }
    }
}

/// Convert `n` values of `dtype` from little-endian bytes to f32.
pub fn to_f32(dtype: SrcDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        SrcDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        SrcDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = quant::fp16::f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        SrcDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = quant::fp16::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        SrcDtype::U8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = f32::from(b);
            }
        }
    }
}
