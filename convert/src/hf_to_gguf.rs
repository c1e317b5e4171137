//! `convert`: a Hugging Face (Falcon) Mamba checkpoint folder to one GGUF, in
//! one streaming pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gguf::{GgmlType, GgufWriter, TensorSpec, Value};

use crate::bnb;
use crate::checkpoint::{to_f32, Checkpoint, TensorEntry};
use crate::config::{read_config, FalconHints, HParams, Variant};
use crate::error::{ConvertError, Result};
use crate::known::Models;
use crate::layout::{plan, Planned, BNB_AUX};
use crate::metadata::model_metadata;
use crate::mix::{tensor_type, FileType};
use crate::stream::{thread_pool, write_tensor, Clock, Progress, Source, Summary};
use crate::vocab::{looks_like_falcon, read_vocab};

/// Options of a conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub file_type: FileType,
    /// Every matrix gets the one type (no Q6_K head).
    pub pure: bool,
    /// Overwrite an existing output.
    pub force: bool,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// `--arch`: convert as this variant whatever config.json says.
    pub arch: Option<Variant>,
    /// `--imatrix`: quantize with this importance matrix, as
    /// `llama-quantize --imatrix` does.
    pub imatrix: Option<crate::imatrix::ImatrixInput>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            file_type: FileType::Q4_K_M,
            pure: false,
            force: false,
            threads: None,
            arch: None,
            imatrix: None,
        }
    }
}

fn tensor_err(ck: &Checkpoint, e: Option<&TensorEntry>, name: &str, what: String) -> ConvertError {
    ConvertError::Tensor {
        file: e
            .map(|e| ck.file_of(e).to_path_buf())
            .unwrap_or_else(|| ck.listing()),
        tensor: name.to_string(),
        what,
    }
}

/// Fill d_inner / dt_rank from the tensor shapes where config.json lacks them,
/// and check them where it has them.
fn resolve_dims(hp: &mut HParams, ck: &Checkpoint) -> Result<()> {
    let d_name = "backbone.layers.0.mixer.D";
    let d = ck
        .get(d_name)
        .ok_or_else(|| tensor_err(ck, None, d_name, "missing".into()))?;
    let e = d.shape.first().copied().unwrap_or(0) as u64;
    if hp.d_inner == 0 {
        hp.d_inner = e;
    }
    if d.shape.len() != 1 || hp.d_inner != e || e == 0 {
        return Err(tensor_err(
            ck,
            Some(d),
            d_name,
            format!(
                "shape {:?}, but config.json intermediate_size says d_inner = {}",
                d.shape, hp.d_inner
            ),
        ));
    }
    Ok(())
}

/// Does the checkpoint's lm_head equal its embeddings (llama.cpp then omits
/// output.weight)? Compared value by value in f32, a chunk at a time, the
/// pages read dropped again so a tied 7B does not pull 1 GB into RSS.
fn head_equals_embeddings(ck: &Checkpoint, emb: &TensorEntry, head: &TensorEntry) -> bool {
    if emb.shape != head.shape {
        return false;
    }
    let n = emb.n_elements();
    let chunk = 1 << 20;
    let (ea, ha) = (ck.bytes(emb), ck.bytes(head));
    let (es, hs) = (emb.dtype.size(), head.dtype.size());
    let mut a = vec![0f32; chunk];
    let mut b = vec![0f32; chunk];
    let mut i = 0;
    while i < n {
        let m = chunk.min(n - i);
        let (Some(x), Some(y)) = (ea.get(i * es..(i + m) * es), ha.get(i * hs..(i + m) * hs))
        else {
            return false;
        };
        let same = if emb.dtype == head.dtype {
            x == y
        } else {
            to_f32(emb.dtype, x, &mut a[..m]);
            to_f32(head.dtype, y, &mut b[..m]);
            a[..m] == b[..m]
        };
        ck.release(emb, i * es, (i + m) * es);
        ck.release(head, i * hs, (i + m) * hs);
        if !same {
            return false;
        }
        i += m;
    }
    true
}

/// Check one planned tensor against the checkpoint.
fn check_planned(ck: &Checkpoint, p: &Planned, bnb_ok: bool) -> Result<()> {
    if bnb_ok && p.linear && bnb::is_quantized(ck, &p.hf_name) {
        return Ok(()); // shape checked against quant_state when dequantized
    }
    let e = ck
        .get(&p.hf_name)
        .ok_or_else(|| tensor_err(ck, None, &p.hf_name, "missing from the checkpoint".into()))?;
    let shape: Vec<u64> = e.shape.iter().map(|&x| x as u64).collect();
    if shape != p.hf_shape {
        return Err(tensor_err(
            ck,
            Some(e),
            &p.hf_name,
            format!("shape {shape:?}, but config.json implies {:?}", p.hf_shape),
        ));
    }
    if e.dtype == crate::checkpoint::SrcDtype::U8 {
        return Err(tensor_err(
            ck,
            Some(e),
            &p.hf_name,
            "unsupported dtype U8 (F32, F16 or BF16 expected)".into(),
        ));
    }
    Ok(())
}

/// Convert the checkpoint in `dir` to `out`.
///
/// `cancel` is polled between row batches (set it from a Ctrl-C handler);
/// `progress` receives [`Progress`] events. On any error the output is not
/// created (a partial temp file is removed).
pub fn convert(
    dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    let clock = Clock::start();
    if out.exists() && !opts.force {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(ConvertError::Input {
            path: dir.to_path_buf(),
            what: "not a folder (expected a Hugging Face checkpoint folder)".into(),
        });
    }
    let mut warnings: Vec<String> = Vec::new();
    let mut warn = |s: String, progress: &mut dyn FnMut(Progress<'_>)| {
        progress(Progress::Warning(s.clone()));
        warnings.push(s);
    };

    let known = Models::builtin();
    let hints = FalconHints {
        falcon_tokenizer: looks_like_falcon(dir),
    };
    let mut pending = Vec::new();
    let mut hp = read_config(dir, &known, &hints, opts.arch, &mut |s| pending.push(s))?;
    let ck = Checkpoint::open(dir)?;
    resolve_dims(&mut hp, &ck)?;
    hp.check_known(&mut |s| pending.push(s));
    for s in pending.drain(..) {
        warn(s, progress);
    }

    // Tied or untied head.
    let emb = ck.get("backbone.embeddings.weight").ok_or_else(|| {
        tensor_err(
            &ck,
            None,
            "backbone.embeddings.weight",
            "missing from the checkpoint".into(),
        )
    })?;
    let head = ck.get("lm_head.weight");
    let with_output = match head {
        Some(h) => !head_equals_embeddings(&ck, emb, h),
        None if !hp.tie_word_embeddings => {
            return Err(tensor_err(
                &ck,
                None,
                "lm_head.weight",
                "missing, and config.json says tie_word_embeddings false".into(),
            ))
        }
        None => false,
    };
    let tied = !with_output;
    let planned = plan(&hp, with_output);

    // Every expected tensor present and well-shaped; nothing unexpected.
    let mut expected: HashSet<String> = HashSet::new();
    for p in &planned {
        check_planned(&ck, p, hp.bnb_4bit)?;
        expected.insert(p.hf_name.clone());
        if p.linear && hp.bnb_4bit {
            for aux in BNB_AUX {
                expected.insert(format!("{}{aux}", p.hf_name));
            }
        }
    }
    if head.is_some() && !with_output {
        expected.insert("lm_head.weight".into()); // equal to the embeddings
    }
    for name in ck.names() {
        if !expected.contains(name) {
            let e = ck.get(name);
            return Err(tensor_err(
                &ck,
                e,
                name,
                format!(
                    "unexpected tensor: not part of a {}-layer Mamba as config.json describes it",
                    hp.n_layer
                ),
            ));
        }
    }

    let vocab = read_vocab(dir, &hp)?;

    // Types and specs.
    let ft = opts.file_type;
    let mut specs = Vec::with_capacity(planned.len());
    let mut importances = Vec::with_capacity(planned.len());
    for p in &planned {
        let ty = tensor_type(ft, opts.pure, &p.gguf_name, &p.dims, tied, None);
        let imp = crate::imatrix::importance_for(opts.imatrix.as_ref(), &p.gguf_name, &p.dims, ty)?;
        crate::mix::check_imatrix(ft, &p.gguf_name, ty, imp.is_some()).map_err(|what| {
            ConvertError::Input {
                path: dir.to_path_buf(),
                what,
            }
        })?;
        specs.push(TensorSpec::new(p.gguf_name.clone(), p.dims.clone(), ty));
        importances.push(imp);
    }
    let n_params: u64 = planned.iter().map(|p| p.n_elements()).sum();
    let mut meta: Vec<(String, Value)> = model_metadata(dir, &hp, &known, ft, n_params);
    meta.extend(vocab.metadata());
    if let Some(m) = &opts.imatrix {
        meta.extend(m.metadata());
    }
    drop(vocab);

    let total_in: u64 = planned
        .iter()
        .map(|p| match ck.get(&p.hf_name) {
            Some(e) if e.dtype != crate::checkpoint::SrcDtype::U8 => (e.end - e.start) as u64,
            _ => p.n_elements() / 2,
        })
        .sum();
    progress(Progress::Start {
        tensors: planned.len(),
        total_bytes: total_in,
    });

    let mut w = GgufWriter::create(out, &meta, &specs).map_err(|source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    drop(meta);
    let mut done = 0u64;
    let mut tensor_bytes = 0u64;
    let pool = thread_pool(opts.threads)?;
    {
        for (i, ((p, spec), imp)) in planned.iter().zip(&specs).zip(&importances).enumerate() {
            progress(Progress::Tensor {
                index: i,
                name: &p.gguf_name,
                ty: spec.ty,
                dims: &p.dims,
            });
            let n = p.row_len() as usize;
            let n_rows = (p.n_elements() / p.row_len().max(1)) as usize;
            let src = if hp.bnb_4bit && p.linear && bnb::is_quantized(&ck, &p.hf_name) {
                Source::Dense(bnb::dequantize(&ck, &p.hf_name, &p.hf_shape)?)
            } else {
                let entry = ck.get(&p.hf_name).ok_or_else(|| {
                    tensor_err(&ck, None, &p.hf_name, "missing from the checkpoint".into())
                })?;
                Source::Hf {
                    ck: &ck,
                    entry,
                    transform: p.transform,
                }
            };
            write_tensor(
                &mut w,
                &p.gguf_name,
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
        }
    }
    let file_bytes = w.finish().map_err(|source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        path: PathBuf::from(out),
        tensors: planned.len(),
        file_bytes,
        tensor_bytes,
        n_params,
        seconds: clock.secs(),
        warnings,
    })
}

/// The GGUF type names of a plan, for messages.
pub fn type_name(t: GgmlType) -> &'static str {
    t.name()
}
