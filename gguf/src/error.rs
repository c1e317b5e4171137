//! The one error type of the crate. Every format error names what is wrong
//! (the key or tensor involved) and the byte offset where it was found.

use std::path::PathBuf;

/// Errors from reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped, written, synced or renamed.
    /// The OS error is the `source` (shown by `{:#}` in anyhow chains).
    #[error("{}: {op}", path.display())]
    Io {
        path: PathBuf,
        op: String,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a valid GGUF file. `offset` is the byte offset (from
    /// the start of the file) of the field that is wrong.
    #[error("{}invalid GGUF at byte {offset}: {what}", path_prefix(path))]
    Invalid {
        path: Option<PathBuf>,
        offset: u64,
        what: String,
    },

    /// A metadata key a caller needs is absent.
    #[error("missing metadata key '{key}'")]
    MissingKey { key: String },

    /// A metadata key holds a value of another type (or out of range).
    #[error("metadata key '{key}' holds {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A tensor a caller needs is absent.
    #[error("missing tensor '{name}'")]
    MissingTensor { name: String },

    /// The writer was given something it cannot write (bad name, shape,
    /// metadata) or was used out of order (too many or too few bytes).
    #[error("{}: {what}", path.display())]
    Write { path: PathBuf, what: String },
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl GgufError {
    /// The byte offset of a format error, if this is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            GgufError::Invalid { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}
