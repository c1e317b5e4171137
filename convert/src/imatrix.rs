//! Importance matrices ("imatrix"), in the two forms llama.cpp reads: the
//! GGUF form current llama-imatrix writes, and the older `.dat` form.
//!
//! What one holds, per weight matrix that some matmul reads (named as the
//! model's tensor, `blk.3.ssm_in.weight`): the sum over every token seen of
//! the square of each input column, `in_sum2` (`[n_in]` per matrix), and how
//! many tokens were summed, `counts` (one per matrix; several for the
//! experts of a MoE tensor, which Mamba has none of). llama-quantize turns
//! them into one importance per column, `in_sum2 / count`
//! ([`Imatrix::importance`]), and fits each block's scale with it.
//!
//! The GGUF form (llama.cpp's tools/imatrix/imatrix.cpp, save_imatrix):
//!
//! ```text
//! general.type        = "imatrix"
//! imatrix.datasets    = [string]   the text files it was computed on
//! imatrix.chunk_count = u32        chunks processed
//! imatrix.chunk_size  = u32        tokens per chunk
//! <name>.in_sum2      F32 [n_in, n_mat]
//! <name>.counts       F32 [1, n_mat]
//! ```
//!
//! tensors in name order. The `.dat` form (common/imatrix-loader.cpp):
//! i32 entries; per entry i32 name length, the name, i32 ncall, i32 nval,
//! f32[nval] values (already averaged: sum / count * ncall); then optionally
//! i32 chunks and i32 length + the dataset's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gguf::{GgmlType, GgufFile, TensorSpec, Value};

use crate::error::{ConvertError, Result};

/// One matrix's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `[n_mat][n_in]` sums of squared inputs (GGUF form); in the `.dat`
    /// form, the stored averages times ncall.
    pub in_sum2: Vec<f32>,
    /// `[n_mat]` tokens summed (GGUF form); `[ncall]` in the `.dat` form.
    pub counts: Vec<f32>,
}

/// An importance matrix, as read from a file or collected by `imatrix`.
#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    /// Entries by matrix name.
    pub entries: BTreeMap<String, Entry>,
    /// The text files it was computed on.
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// Read from the `.dat` form (averages, not sums).
    pub legacy: bool,
}

const IN_SUM2: &str = ".in_sum2";
const COUNTS: &str = ".counts";

impl Imatrix {
    /// An empty matrix for chunks of `chunk_size` tokens of `datasets`.
    pub fn new(datasets: Vec<String>, chunk_size: u32) -> Imatrix {
        Imatrix {
            entries: BTreeMap::new(),
            datasets,
            chunk_count: 0,
            chunk_size,
            legacy: false,
        }
    }

    /// Reads either form (GGUF first, as llama.cpp does).
    pub fn load(path: &Path) -> Result<Imatrix> {
        let bytes = std::fs::read(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.starts_with(b"GGUF") {
            let f = GgufFile::from_bytes(bytes).map_err(|source| ConvertError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Self::from_gguf(&f, path)
        } else {
            Self::from_dat(&bytes, path)
        }
    }

    fn from_gguf(f: &GgufFile, path: &Path) -> Result<Imatrix> {
        let bad = |what: String| ConvertError::Input {
            path: path.to_path_buf(),
            what,
        };
        if f.tensors().is_empty() {
            return Err(bad("an imatrix GGUF with no tensors".into()));
        }
        let u32_of = |key: &str| -> Result<u32> {
            match f.get(key) {
                None => Err(bad(format!(
                    "no {key}: not an imatrix file (llama-quantize refuses it too)"
                ))),
                Some(v) => v
                    .as_u32()
                    .ok_or_else(|| bad(format!("{key} is a {}, not a u32", v.type_name()))),
            }
        };
        let datasets = match f.get("imatrix.datasets") {
            Some(Value::Array(gguf::Array::String(s))) => s.clone(),
            Some(v) => {
                return Err(bad(format!(
                    "imatrix.datasets is a {}, not an array of strings",
                    v.type_name()
                )))
            }
            None => return Err(bad("no imatrix.datasets: not an imatrix file".into())),
        };
        let mut m = Imatrix {
            entries: BTreeMap::new(),
            datasets,
            chunk_count: u32_of("imatrix.chunk_count")?,
            chunk_size: u32_of("imatrix.chunk_size")?,
            legacy: false,
        };
        let mut sums: BTreeMap<String, (Vec<u64>, Vec<f32>)> = BTreeMap::new();
        let mut counts: BTreeMap<String, (Vec<u64>, Vec<f32>)> = BTreeMap::new();
        for t in f.tensors() {
            let (map, name) = if let Some(n) = t.name.strip_suffix(IN_SUM2) {
                (&mut sums, n)
            } else if let Some(n) = t.name.strip_suffix(COUNTS) {
                (&mut counts, n)
            } else {
                continue;
            };
            if t.ty != GgmlType::F32 {
                return Err(ConvertError::Tensor {
                    file: path.to_path_buf(),
                    tensor: t.name.clone(),
                    what: format!("is {}, must be F32", t.ty.name()),
                });
            }
            let vals = f
                .tensor_data(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            map.insert(name.to_string(), (t.dims.clone(), vals));
        }
        for (name, (dims, in_sum2)) in sums {
            let Some((_, c)) = counts.remove(&name) else {
                return Err(bad(format!("{name}{IN_SUM2} has no {name}{COUNTS}")));
            };
            let n_mat = dims.get(1).copied().unwrap_or(1) as usize;
            if c.len() != n_mat || n_mat == 0 || in_sum2.len() % n_mat != 0 {
                return Err(ConvertError::Tensor {
                    file: path.to_path_buf(),
                    tensor: format!("{name}{COUNTS}"),
                    what: format!(
                        "{} counts for {} matrices of {name}{IN_SUM2}",
                        c.len(),
                        n_mat
                    ),
                });
            }
            m.entries.insert(name, Entry { in_sum2, counts: c });
        }
        if let Some(name) = counts.keys().next() {
            return Err(bad(format!("{name}{COUNTS} has no {name}{IN_SUM2}")));
        }
        Ok(m)
    }

    fn from_dat(b: &[u8], path: &Path) -> Result<Imatrix> {
        let bad = |what: String| ConvertError::Input {
            path: path.to_path_buf(),
            what: format!("neither a GGUF nor a .dat imatrix: {what}"),
        };
        let mut at = 0usize;
        let i32_at = |at: &mut usize| -> Option<i32> {
            let v = b.get(*at..*at + 4)?;
            *at += 4;
            Some(i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
        };
        let n = i32_at(&mut at).ok_or_else(|| bad("shorter than 4 bytes".into()))?;
        if n < 1 {
            return Err(bad(format!("{n} entries")));
        }
        let mut m = Imatrix::new(Vec::new(), 0);
        m.legacy = true;
        for i in 0..n {
            let cut = |what: &str| bad(format!("entry {i}: {what} cut short"));
            let len = i32_at(&mut at).ok_or_else(|| cut("name length"))?;
            let name = usize::try_from(len)
                .ok()
                .and_then(|l| b.get(at..at + l))
                .ok_or_else(|| cut("name"))?;
            at += name.len();
            let name = String::from_utf8_lossy(name).into_owned();
            let ncall = i32_at(&mut at).ok_or_else(|| cut("ncall"))?;
            let nval = i32_at(&mut at).ok_or_else(|| cut("value count"))?;
            let nval = usize::try_from(nval)
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| bad(format!("entry {i} ({name}): {nval} values")))?;
            let vals = b
                .get(at..at + 4 * nval)
                .ok_or_else(|| cut("values"))?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            at += 4 * nval;
            m.entries.insert(
                name,
                Entry {
                    in_sum2: vals,
                    counts: vec![ncall as f32],
                },
            );
        }
        // Optional trailer: chunks, then the dataset's name.
        if let Some(chunks) = i32_at(&mut at) {
            m.chunk_count = chunks.max(0) as u32;
            if let Some(len) = i32_at(&mut at) {
                if let Some(d) = usize::try_from(len).ok().and_then(|l| b.get(at..at + l)) {
                    if !d.is_empty() {
                        m.datasets.push(String::from_utf8_lossy(d).into_owned());
                    }
                }
            }
        }
        Ok(m)
    }

    /// One importance per input column of matrix `name`, as llama-quantize
    /// derives it (tools/quantize/quantize.cpp, load_imatrix): GGUF form,
    /// `in_sum2 / count` per matrix (all ones where the count is 0); `.dat`
    /// form, the stored values divided by ncall (as stored if ncall is 0).
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        if self.legacy {
            let ncall = e.counts.first().copied().unwrap_or(0.0) as i32;
            return Some(if ncall > 0 {
                e.in_sum2.iter().map(|&s| s / ncall as f32).collect()
            } else {
                e.in_sum2.clone()
            });
        }
        let n_mat = e.counts.len().max(1);
        let ne0 = e.in_sum2.len() / n_mat;
        let mut out = vec![0f32; e.in_sum2.len()];
        for (j, &count) in e.counts.iter().enumerate() {
            let (src, dst) = (
                &e.in_sum2[j * ne0..(j + 1) * ne0],
                &mut out[j * ne0..(j + 1) * ne0],
            );
            for (o, &s) in dst.iter_mut().zip(src) {
                *o = if count > 0.0 { s / count } else { 1.0 };
            }
        }
        Some(out)
    }

    /// Adds the squares of `rows` (`[t][n_in]`) to matrix `name`'s sums and
    /// `t` to its count, in row order (llama-imatrix's summation order).
    pub fn accumulate(&mut self, name: &str, rows: &[f32], n_in: usize) {
        let e = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| Entry {
                in_sum2: vec![0.0; n_in],
                counts: vec![0.0],
            });
        if n_in == 0 || e.in_sum2.len() != n_in {
            return;
        }
        for row in rows.chunks_exact(n_in) {
            for (acc, &x) in e.in_sum2.iter_mut().zip(row) {
                *acc += x * x;
            }
        }
        e.counts[0] += (rows.len() / n_in) as f32;
    }

    /// Writes the GGUF form, tensors in name order, as llama-imatrix does.
    pub fn save(&self, path: &Path) -> Result<u64> {
        if self.legacy {
            return Err(ConvertError::Other(
                "a .dat imatrix holds averages, not sums: it cannot be written as GGUF".into(),
            ));
        }
        let meta = vec![
            ("general.type".to_string(), Value::String("imatrix".into())),
            (
                "imatrix.datasets".to_string(),
                Value::Array(gguf::Array::String(self.datasets.clone())),
            ),
            (
                "imatrix.chunk_count".to_string(),
                Value::U32(self.chunk_count),
            ),
            (
                "imatrix.chunk_size".to_string(),
                Value::U32(self.chunk_size),
            ),
        ];
        let mut bufs: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len().max(1) as u64;
            let ne0 = e.in_sum2.len() as u64 / n_mat;
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            bufs.push((
                TensorSpec::new(format!("{name}{IN_SUM2}"), vec![ne0, n_mat], GgmlType::F32),
                le(&e.in_sum2),
            ));
            bufs.push((
                TensorSpec::new(format!("{name}{COUNTS}"), vec![1, n_mat], GgmlType::F32),
                le(&e.counts),
            ));
        }
        let tensors: Vec<(TensorSpec, &[u8])> =
            bufs.iter().map(|(s, b)| (s.clone(), &b[..])).collect();
        gguf::write_file(path, &meta, &tensors).map_err(|source| ConvertError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// An importance matrix as `quantize --imatrix` / `convert --imatrix`
/// use it: the matrix, and the path as the user gave it (llama-quantize
/// records that string in the output's metadata).
#[derive(Clone, Debug)]
pub struct ImatrixInput {
    pub path: PathBuf,
    /// `quantize.imatrix.file` in the output: the path as typed.
    pub given_as: String,
    pub matrix: Imatrix,
}

impl ImatrixInput {
    /// Loads `path`, recording it as typed. A file with no metadata (a GGUF
    /// without the `imatrix.*` keys) is refused, as by llama-quantize.
    pub fn load(path: &Path) -> Result<ImatrixInput> {
        Ok(ImatrixInput {
            path: path.to_path_buf(),
            given_as: path.to_string_lossy().into_owned(),
            matrix: Imatrix::load(path)?,
        })
    }

    /// The metadata llama-quantize adds to a file quantized with this
    /// matrix, in its order: the file as given, the first dataset (if
    /// any), the number of entries, the chunks (if more than 0). Strings
    /// are cut to 127 bytes as llama.cpp's override buffer does.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let cut = |s: &str| {
            let b = s.as_bytes();
            String::from_utf8_lossy(&b[..b.len().min(127)]).into_owned()
        };
        let m = &self.matrix;
        let mut out = vec![(
            "quantize.imatrix.file".to_string(),
            Value::String(cut(&self.given_as)),
        )];
        if let Some(d) = m.datasets.first() {
            out.push((
                "quantize.imatrix.dataset".to_string(),
                Value::String(cut(d)),
            ));
        }
        out.push((
            "quantize.imatrix.entries_count".to_string(),
            Value::U32(m.entries.len() as u32),
        ));
        if m.chunk_count > 0 {
            out.push((
                "quantize.imatrix.chunks_count".to_string(),
                Value::U32(m.chunk_count),
            ));
        }
        out
    }

    /// The importances for tensor `name` of `n_per_row` columns, or None
    /// when the matrix has no entry for it. An entry of another size is an
    /// error (llama-quantize aborts on it), except for the token embedding,
    /// which it quantizes without one.
    pub fn for_tensor(&self, name: &str, n_per_row: usize) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.matrix.importance(name) else {
            return Ok(None);
        };
        if v.len() == n_per_row {
            return Ok(Some(v));
        }
        if name == "token_embd.weight" {
            return Ok(None);
        }
        Err(ConvertError::Tensor {
            file: self.path.clone(),
            tensor: name.to_string(),
            what: format!(
                "the imatrix has {} values for it, the tensor {n_per_row} columns",
                v.len()
            ),
        })
    }
}

/// The importances a tensor `name` of `dims` is quantized to `ty` with:
/// None without a matrix, for a tensor the matrix has no entry for, and
/// for a 1-D tensor (never quantized).
pub(crate) fn importance_for(
    m: Option<&ImatrixInput>,
    name: &str,
    dims: &[u64],
    ty: GgmlType,
) -> Result<Option<Vec<f32>>> {
    let Some(m) = m else { return Ok(None) };
    if dims.len() < 2 || matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Ok(None);
    }
    m.for_tensor(name, dims[0] as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_round_trip_and_importance() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Imatrix::new(vec!["text.txt".into()], 4);
        m.accumulate("blk.0.ssm_in.weight", &[1.0, 2.0, 3.0, -1.0, 0.0, 2.0], 3);
        m.chunk_count = 1;
        let p = dir.path().join("m.gguf");
        m.save(&p).unwrap();
        let back = Imatrix::load(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.importance("blk.0.ssm_in.weight").unwrap(),
            vec![1.0, 2.0, 6.5]
        );
        assert!(back.importance("blk.1.ssm_in.weight").is_none());
    }

    #[test]
    fn dat_form_is_read_and_divided_by_ncall() {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        let name = b"blk.0.ssm_x.weight";
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name);
        b.extend(4i32.to_le_bytes()); // ncall
        b.extend(2i32.to_le_bytes()); // nval
        b.extend(8f32.to_le_bytes());
        b.extend(2f32.to_le_bytes());
        b.extend(10i32.to_le_bytes()); // chunks
        b.extend(3i32.to_le_bytes());
        b.extend(b"abc");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.dat");
        std::fs::write(&p, &b).unwrap();
        let m = Imatrix::load(&p).unwrap();
        assert!(m.legacy);
        assert_eq!(m.chunk_count, 10);
        assert_eq!(m.datasets, vec!["abc".to_string()]);
        assert_eq!(m.importance("blk.0.ssm_x.weight").unwrap(), vec![2.0, 0.5]);
        // Cut short: an error naming the file, no panic.
        std::fs::write(&p, &b[..20]).unwrap();
        let e = Imatrix::load(&p).unwrap_err().to_string();
        assert!(e.contains("m.dat") && e.contains("cut short"), "{e}");
    }
}
