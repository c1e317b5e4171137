//! Everything that can go wrong while converting, each naming the file (and
//! tensor or field) at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A field of config.json / tokenizer files / models.toml is missing or wrong.
    #[error("{path}: {what}")]
    Field { path: PathBuf, what: String },

    /// The checkpoint is not a (Falcon) Mamba we can convert.
    #[error("{path}: unsupported architecture: {what}")]
    Architecture { path: PathBuf, what: String },

    /// A tensor is missing, unexpected, mis-shaped, of an unsupported dtype,
    /// or its bytes do not fit.
    #[error("{file}: tensor '{tensor}': {what}")]
    Tensor {
        file: PathBuf,
        tensor: String,
        what: String,
    },

    /// The shard files and their index disagree, or no weights were found.
    #[error("{path}: {what}")]
    Shards { path: PathBuf, what: String },

    #[error("{0}: already exists (pass --force to overwrite it)")]
    OutputExists(PathBuf),

    #[error("{path}: {what}")]
    Input { path: PathBuf, what: String },

    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: gguf::GgufError,
    },

    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: gguf::GgufError,
    },

    #[error("tensor '{tensor}': {source}")]
    Quant {
        tensor: String,
        #[source]
        source: quant::QuantError,
    },

    #[error("interrupted while writing tensor '{tensor}'; {path} was not written")]
    Interrupted { path: PathBuf, tensor: String },

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ConvertError {
    let path = path.into();
    move |source| ConvertError::Io { path, source }
}
