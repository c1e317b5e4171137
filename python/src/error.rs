//! Rust errors as Python exceptions, each carrying the Rust message (with
//! its causes): `FileNotFoundError` for a missing file, `FileExistsError` for
//! an output that exists, `ValueError` for bad input (parameters, token ids,
//! state bytes, messages a chat template refuses), `KeyboardInterrupt` for a
//! conversion stopped by Ctrl-C, and [`MambaGgufError`] for everything else.

use std::error::Error;
use std::io::ErrorKind;
use std::path::Path;

use mamba_gguf::chat_template::TemplateError;
use mamba_gguf::state_file::StateFileError;
use mamba_gguf::ModelError;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyValueError,
};
use pyo3::PyErr;

pyo3::create_exception!(
    mamba_gguf,
    MambaGgufError,
    PyException,
    "A failure of the mamba-gguf runtime or converter that is not bad input (a damaged or unsupported model file, a backend error, a busy model); the message is the Rust error's."
);

/// The error's message followed by those of its causes that it does not
/// already include.
pub fn message(e: &(dyn Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cause = c.source();
    }
    msg
}

pub fn other(msg: impl Into<String>) -> PyErr {
    MambaGgufError::new_err(msg.into())
}

pub fn value(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn io_kind(e: &(dyn Error + 'static)) -> Option<ErrorKind> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

/// An error whose cause may be an I/O error: `FileNotFoundError` /
/// `FileExistsError` / `OSError` by its kind, else `otherwise(message)`.
fn by_io(e: &(dyn Error + 'static), otherwise: fn(String) -> PyErr) -> PyErr {
    let msg = message(e);
    match io_kind(e) {
        Some(ErrorKind::NotFound) => PyFileNotFoundError::new_err(msg),
        Some(ErrorKind::AlreadyExists) => PyFileExistsError::new_err(msg),
        Some(_) => PyOSError::new_err(msg),
        None => otherwise(msg),
    }
}

/// `FileNotFoundError` naming `path` when it does not exist.
pub fn require_exists(path: &Path, what: &str) -> Result<(), PyErr> {
    if path.exists() {
        Ok(())
    } else {
        Err(PyFileNotFoundError::new_err(format!(
            "{}: no such {what}",
            path.display()
        )))
    }
}

/// Errors of the model and its sessions.
pub fn model(e: ModelError) -> PyErr {
    match e {
        ModelError::Token { .. } | ModelError::Empty | ModelError::Device { .. } => {
            value(message(&e))
        }
        e => by_io(&e, other),
    }
}

/// Errors of state files and state bytes: damaged, foreign or mismatched
/// states are bad input.
pub fn state(e: StateFileError) -> PyErr {
    match e {
        StateFileError::Io { .. } => by_io(&e, other),
        StateFileError::Model { source, .. } => model(source),
        e => value(message(&e)),
    }
}

/// Chat template errors: a template that refuses the messages (its
/// `raise_exception`) is bad input; one that does not compile is the file's.
pub fn template(e: TemplateError) -> PyErr {
    match e {
        TemplateError::Render(_) => value(message(&e)),
        TemplateError::Compile(_) => other(message(&e)),
    }
}

/// Conversion errors.
pub fn convert(e: convert::ConvertError) -> PyErr {
    match e {
        convert::ConvertError::OutputExists(_) => PyFileExistsError::new_err(message(&e)),
        e => by_io(&e, other),
    }
}
