//! Errors of the runtime library (model loading and inference). Every error
//! names what is wrong: the file, the tensor or the metadata key.

use gguf::GgmlType;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The container itself is unreadable or a needed key is missing or mistyped.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),

    /// `general.architecture` is not `mamba`.
    #[error("{file}: architecture is '{found}', this runtime runs only 'mamba' (Mamba-1 / Falcon Mamba)")]
    Architecture { file: String, found: String },

    /// A metadata value is present but unusable (zero, out of range, inconsistent).
    #[error("{file}: metadata '{key}': {what}")]
    Metadata {
        file: String,
        key: String,
        what: String,
    },

    /// A tensor the architecture needs is absent.
    #[error("{file}: missing tensor '{name}'")]
    MissingTensor { file: String, name: String },

    /// A tensor's dims do not match what the metadata implies.
    #[error("{file}: tensor '{name}' has dims {found}, expected {expected} (from the metadata)")]
    Shape {
        file: String,
        name: String,
        expected: String,
        found: String,
    },

    /// A tensor type this runtime cannot compute with (for that tensor's use).
    #[error("{file}: tensor '{name}' has type {ty}, which {what}")]
    TensorType {
        file: String,
        name: String,
        ty: GgmlType,
        what: String,
    },

    /// A tensor's bytes do not fit in the file.
    #[error(
        "{file}: tensor '{name}' data is {found} bytes, expected {expected} (truncated file?)"
    )]
    Data {
        file: String,
        name: String,
        expected: usize,
        found: usize,
    },

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab})")]
    Token { id: u32, vocab: usize },

    /// An empty token sequence was fed.
    #[error("no tokens to process (empty prompt)")]
    Empty,

    /// More tokens (or sequences) than a scratch was made for.
    #[error("{n} {what} exceed the scratch chunk {chunk}")]
    TooMany {
        n: usize,
        what: &'static str,
        chunk: usize,
    },

    /// A state, snapshot, slot or session of another model (or shape).
    #[error("{what} belongs to another model")]
    ForeignState { what: String },

    /// A batch whose parts do not fit together.
    #[error("bad batch: {what}")]
    Batch { what: String },

    /// A parameter out of its range (named in `what`).
    #[error("{what}")]
    Parameter { what: String },

    /// A caller's output buffer too small.
    #[error("{what} buffer of {have} values, {need} needed")]
    Buffer {
        what: &'static str,
        need: usize,
        have: usize,
    },

    /// NaN logits: the model's output is broken, no token can be chosen.
    #[error("the logits contain NaN (at id {id}); no token can be chosen")]
    NanLogits { id: u32 },

    /// `--device` named no backend this build has.
    #[error("unknown device '{requested}' (choices: {choices})")]
    Device { requested: String, choices: String },

    /// A backend refused an op (a slot outside its pool, a workspace of
    /// another backend): a bug in the caller of the backend, or a device
    /// failure.
    #[error("backend: {what}")]
    Backend { what: String },

    /// The CUDA backend: no driver, no device, too old a GPU, out of
    /// device memory, or a failed launch (each named by the message).
    #[cfg(feature = "cuda")]
    #[error("CUDA: {0}")]
    Cuda(mamba_cuda::CudaError),

    /// A quant-crate refusal (should not happen once a model validated).
    #[error("tensor '{name}': {source}")]
    Quant {
        name: String,
        #[source]
        source: quant::QuantError,
    },
}

/// Shorthand for results of this library.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
