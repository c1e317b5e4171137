//! Errors reported by the public entry points. Kernels themselves never fail:
//! every size is checked here first.

use crate::GgmlType;

/// Why a quantize/dequantize/matvec call was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// The type exists in ggml but this crate has no arithmetic for it.
    #[error("ggml type {ty} (id {id}) is not supported by the quant crate", id = ty.id())]
    Unsupported { ty: GgmlType },

    /// A type this crate reads (dequantize, dot) but cannot write.
    #[error("quantizing to {ty} is not implemented (files of this type are read, not written)")]
    NoQuantizer { ty: GgmlType },

    /// A type ggml quantizes only with an importance matrix (IQ2_XXS,
    /// IQ2_XS, IQ1_S): [`crate::quantize_row_weighted`] with one.
    #[error("quantizing to {ty} needs an importance matrix, as in ggml (give one: --imatrix)")]
    NeedsImatrix { ty: GgmlType },

    /// A row length that does not fill whole blocks.
    #[error("{n} values is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block: usize,
    },

    /// A buffer whose length does not match what the row length requires.
    #[error("{what} buffer for {ty} has length {got}, expected {expected}")]
    BufferSize {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// A size whose byte count overflows `usize`.
    #[error("size of {count} x {n} values of {ty} overflows")]
    Overflow {
        ty: GgmlType,
        count: usize,
        n: usize,
    },
}
