//! `quantize`: an F32/F16/BF16 `mamba` GGUF (ours or llama.cpp's) to another
//! type, with llama-quantize's tensor mix. Metadata is copied, with
//! `general.file_type` and `general.quantization_version` set.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec, Value};

use crate::error::{ConvertError, Result};
use crate::mix::{tensor_type, FileType};
use crate::stream::{thread_pool, write_tensor, Clock, Progress, Source, Summary};

/// Options of a requantization.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub file_type: FileType,
    pub pure: bool,
    /// Accept an input whose matrices are already quantized.
    pub allow_requantize: bool,
    pub force: bool,
    pub threads: Option<usize>,
    /// `--imatrix`: quantize with this importance matrix, as
    /// `llama-quantize --imatrix` does.
    pub imatrix: Option<crate::imatrix::ImatrixInput>,
}

fn is_float(t: GgmlType) -> bool {
    matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Requantize `input` into `out`.
pub fn quantize(
    input: &Path,
    out: &Path,
    opts: &QuantizeOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    let clock = Clock::start();
    if out.exists() && !opts.force {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(ConvertError::Input {
            path: input.to_path_buf(),
            what: "input and output are the same file".into(),
        });
    }
    let f = GgufFile::open(input).map_err(|source| ConvertError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    let bad = |what: String| ConvertError::Input {
        path: input.to_path_buf(),
        what,
    };
    match f.architecture() {
        Some("mamba") => {}
        Some(a) => {
            return Err(bad(format!(
                "general.architecture is \"{a}\", not \"mamba\""
            )))
        }
        None => return Err(bad("no general.architecture".into())),
    }
    for t in f.tensors() {
        if !is_float(t.ty) && !opts.allow_requantize {
            return Err(bad(format!(
                "tensor '{}' is already quantized ({}); requantizing loses quality (pass --allow-requantize to do it anyway)",
                t.name,
                t.ty.name()
            )));
        }
        if !t.ty.is_supported() {
            return Err(bad(format!(
                "tensor '{}' has type {}, which we cannot read",
                t.name,
                t.ty.name()
            )));
        }
    }
    let tied = f.tensor("output.weight").is_none();
    let ft = opts.file_type;
    let mut specs = Vec::new();
    let mut importances = Vec::new();
    for t in f.tensors() {
        let ty = tensor_type(ft, opts.pure, &t.name, &t.dims, tied, Some(t.ty));
        let imp = match ty == t.ty {
            true => None, // copied as it is
            false => crate::imatrix::importance_for(opts.imatrix.as_ref(), &t.name, &t.dims, ty)?,
        };
        if ty != t.ty {
            crate::mix::check_imatrix(ft, &t.name, ty, imp.is_some()).map_err(bad)?;
        }
        specs.push(TensorSpec::new(t.name.clone(), t.dims.clone(), ty));
        importances.push(imp);
    }
    let mut meta: Vec<(String, Value)> = Vec::with_capacity(f.metadata().len() + 2);
    for (k, v) in f.metadata() {
        if k == "general.alignment" {
            continue; // we write with the default alignment
        }
        let v = match k.as_str() {
            "general.file_type" => Value::U32(ft.ftype_id()),
            "general.quantization_version" => Value::U32(2),
            _ => v.clone(),
        };
        meta.push((k.clone(), v));
    }
    for (k, v) in [
        ("general.file_type", Value::U32(ft.ftype_id())),
        ("general.quantization_version", Value::U32(2)),
    ] {
        if !meta.iter().any(|(m, _)| m == k) {
            meta.push((k.to_string(), v));
        }
    }
    if let Some(m) = &opts.imatrix {
        for (k, v) in m.metadata() {
            meta.retain(|(old, _)| *old != k);
            meta.push((k, v));
        }
    }
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes as u64).sum();
    progress(Progress::Start {
        tensors: specs.len(),
        total_bytes: total,
    });
    let mut w = GgufWriter::create(out, &meta, &specs).map_err(|source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let pool = thread_pool(opts.threads)?;
    let mut done = 0;
    let mut tensor_bytes = 0u64;
    let mut n_params = 0u64;
    for (i, ((t, spec), imp)) in f.tensors().iter().zip(&specs).zip(&importances).enumerate() {
        progress(Progress::Tensor {
            index: i,
            name: &t.name,
            ty: spec.ty,
            dims: &t.dims,
        });
        let n = t.row_len() as usize;
        let n_rows = t.n_rows() as usize;
        let src = Source::Gguf {
            ty: t.ty,
            bytes: f.tensor_data(t),
        };
        write_tensor(
            &mut w,
            &t.name,
            &src,
            n,
            n_rows,
            spec.ty,
            imp.as_deref(),
            pool.as_ref(),
            cancel,
            &mut done,
            progress,
        )?;
        tensor_bytes += spec.ty.row_bytes(n).unwrap_or(0) as u64 * n_rows as u64;
        n_params += t.n_elements;
    }
    let file_bytes = w.finish().map_err(|source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        path: PathBuf::from(out),
        tensors: specs.len(),
        file_bytes,
        tensor_bytes,
        n_params,
        seconds: clock.secs(),
        warnings: Vec::new(),
    })
}
