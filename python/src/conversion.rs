//! `convert`, `quantize` and `cached_gguf` (what `from_pretrained` converts
//! through): the `convert` crate's library calls, as the CLI makes them, with
//! a progress bar on stderr, warnings as Python warnings, and Ctrl-C
//! stopping the conversion (its temporary file removed, KeyboardInterrupt
//! raised).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ::convert::{ConvertOptions, FileType, Progress, QuantizeOptions, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pyo3::exceptions::{PyFileNotFoundError, PyUserWarning};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error;

/// The output types `convert` and `quantize` accept.
pub fn file_type_names() -> Vec<&'static str> {
    ::convert::mix::ALL_TYPES.iter().map(|t| t.name()).collect()
}

fn parse_type(s: &str) -> PyResult<FileType> {
    FileType::parse(s).ok_or_else(|| {
        error::value(format!(
            "unknown type '{s}' (one of: {})",
            file_type_names().join(", ")
        ))
    })
}

fn threads(n: Option<i64>) -> PyResult<Option<usize>> {
    match n {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as usize)),
        Some(n) => Err(error::value(format!("threads must be at least 1, not {n}"))),
    }
}

/// The library's progress events as a bar on stderr, and a Ctrl-C check
/// every 100 ms (the conversion runs with the GIL released).
struct Watch<'a> {
    bar: ProgressBar,
    tensors: usize,
    cancel: &'a AtomicBool,
    interrupt: Option<PyErr>,
    checked: Instant,
}

impl<'a> Watch<'a> {
    fn new(show: bool, cancel: &'a AtomicBool) -> Watch<'a> {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Watch {
            bar,
            tensors: 0,
            cancel,
            interrupt: None,
            checked: Instant::now(),
        }
    }

    fn on(&mut self, p: Progress<'_>) {
        match p {
            Progress::Start {
                tensors,
                total_bytes,
            } => {
                self.tensors = tensors;
                self.bar.set_length(total_bytes);
            }
            Progress::Tensor {
                index, name, ty, ..
            } => self.bar.set_message(format!(
                "[{}/{}] {name} {}",
                index + 1,
                self.tensors,
                ty.name()
            )),
            Progress::Bytes { done } => self.bar.set_position(done),
            // Raised as Python warnings afterwards (Summary::warnings).
            Progress::Warning(_) => {}
        }
        if self.interrupt.is_none() && self.checked.elapsed() > Duration::from_millis(100) {
            self.checked = Instant::now();
            if let Err(e) = Python::attach(|py| py.check_signals()) {
                self.interrupt = Some(e);
                self.cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Runs a conversion with the GIL released; its summary as a dict, its
/// warnings as `UserWarning`s.
fn run<'py>(
    py: Python<'py>,
    show: bool,
    f: impl FnOnce(&AtomicBool, &mut dyn FnMut(Progress<'_>)) -> ::convert::Result<Summary> + Send,
) -> PyResult<Bound<'py, PyDict>> {
    let cancel = AtomicBool::new(false);
    let mut watch = Watch::new(show, &cancel);
    let res = py.detach(|| f(&cancel, &mut |p| watch.on(p)));
    watch.bar.finish_and_clear();
    if let Some(e) = watch.interrupt {
        return Err(e);
    }
    let s = res.map_err(error::convert)?;
    for w in &s.warnings {
        let msg = CString::new(w.replace('\0', " ")).unwrap_or_default();
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 2)?;
    }
    if show {
        eprintln!(
            "wrote {}: {} tensors, {:.2} MiB, {:.2} bits per weight ({} weights), {:.1} s",
            s.path.display(),
            s.tensors,
            s.file_bytes as f64 / (1024.0 * 1024.0),
            s.bits_per_weight(),
            s.n_params,
            s.seconds
        );
    }
    let d = PyDict::new(py);
    d.set_item("path", s.path.display().to_string())?;
    d.set_item("tensors", s.tensors)?;
    d.set_item("file_bytes", s.file_bytes)?;
    d.set_item("tensor_bytes", s.tensor_bytes)?;
    d.set_item("n_params", s.n_params)?;
    d.set_item("bits_per_weight", s.bits_per_weight())?;
    d.set_item("seconds", s.seconds)?;
    d.set_item("warnings", s.warnings.clone())?;
    Ok(d)
}

/// The importance matrix at `path` (`imatrix=`), if one is given.
fn load_imatrix(path: Option<PathBuf>) -> PyResult<Option<::convert::imatrix::ImatrixInput>> {
    match path {
        None => Ok(None),
        Some(p) => {
            error::require_exists(&p, "importance matrix")?;
            ::convert::imatrix::ImatrixInput::load(&p)
                .map(Some)
                .map_err(error::convert)
        }
    }
}

/// Converts a Hugging Face checkpoint folder to a GGUF file.
#[pyfunction]
#[pyo3(signature = (hf_dir, out, r#type="q4_k_m", progress=true, force=false, pure=false, threads=None, imatrix=None))]
#[allow(clippy::too_many_arguments)]
pub fn convert<'py>(
    py: Python<'py>,
    hf_dir: PathBuf,
    out: PathBuf,
    r#type: &str,
    progress: bool,
    force: bool,
    pure: bool,
    threads: Option<i64>,
    imatrix: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    error::require_exists(&hf_dir, "checkpoint folder")?;
    let imatrix = load_imatrix(imatrix)?;
    let opts = ConvertOptions {
        file_type: parse_type(r#type)?,
        pure,
        force,
        threads: self::threads(threads)?,
        arch: None,
        imatrix,
    };
    run(py, progress, |cancel, cb| {
        ::convert::convert(&hf_dir, &out, &opts, cancel, cb)
    })
}

/// Requantizes an F32/F16/BF16 GGUF to another type.
#[pyfunction]
#[pyo3(signature = (src, dst, r#type, progress=true, force=false, pure=false, allow_requantize=false, threads=None, imatrix=None))]
#[allow(clippy::too_many_arguments)]
pub fn quantize<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    r#type: &str,
    progress: bool,
    force: bool,
    pure: bool,
    allow_requantize: bool,
    threads: Option<i64>,
    imatrix: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    error::require_exists(&src, "GGUF file")?;
    let imatrix = load_imatrix(imatrix)?;
    let opts = QuantizeOptions {
        file_type: parse_type(r#type)?,
        pure,
        allow_requantize,
        force,
        threads: self::threads(threads)?,
        imatrix,
    };
    run(py, progress, |cancel, cb| {
        ::convert::quantize(&src, &dst, &opts, cancel, cb)
    })
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files in a checkpoint folder.
fn newest_source(dir: &Path) -> PyResult<Option<SystemTime>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| error::other(format!("cannot list {}: {e}", dir.display())))?;
    Ok(rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| mtime(&e.path()))
        .max())
}

/// The GGUF to load for `path`: the path itself when it is a file; for a
/// Hugging Face checkpoint folder, its conversion to `quant` in
/// `cache_dir` (default `<folder>/.mamba-gguf/`), made now if missing or
/// older than a file of the folder. Returns the file and whether it was
/// converted now.
#[pyfunction]
#[pyo3(signature = (path, quant="q4_k_m", cache_dir=None, progress=true))]
pub fn cached_gguf(
    py: Python<'_>,
    path: PathBuf,
    quant: &str,
    cache_dir: Option<PathBuf>,
    progress: bool,
) -> PyResult<(String, bool)> {
    if !path.exists() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{}: no such GGUF file or checkpoint folder (nothing is downloaded: fetch a \
             checkpoint first, e.g. `hf download REPO --local-dir DIR`)",
            path.display()
        )));
    }
    if path.is_file() {
        return Ok((path.display().to_string(), false));
    }
    if !path.join("config.json").is_file() {
        return Err(error::value(format!(
            "{}: neither a GGUF file nor a Hugging Face checkpoint folder (no config.json)",
            path.display()
        )));
    }
    let ft = parse_type(quant)?;
    let abs = path
        .canonicalize()
        .map_err(|e| error::other(format!("cannot resolve {}: {e}", path.display())))?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let dir = cache_dir.unwrap_or_else(|| abs.join(".mamba-gguf"));
    let out = dir.join(format!("{name}-{}.gguf", ft.name()));
    if let (Some(made), Some(src)) = (mtime(&out), newest_source(&abs)?) {
        if made >= src {
            return Ok((out.display().to_string(), false));
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        error::other(format!(
            "cannot create the cache folder {}: {e}",
            dir.display()
        ))
    })?;
    if progress {
        eprintln!(
            "mamba_gguf: converting {} to {} (once; later calls reuse it)",
            abs.display(),
            out.display()
        );
    }
    let opts = ConvertOptions {
        file_type: ft,
        force: true,
        ..ConvertOptions::default()
    };
    run(py, progress, |cancel, cb| {
        ::convert::convert(&abs, &out, &opts, cancel, cb)
    })?;
    Ok((out.display().to_string(), true))
}
