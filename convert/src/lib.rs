//! Hugging Face Falcon Mamba / Mamba-1 checkpoints to GGUF in one streaming
//! pass (`convert`), and F32/F16/BF16 GGUFs to quantized ones (`quantize`),
//! with llama.cpp's tensor names, layouts, metadata and tensor-type mix, so
//! that for the same checkpoint and type every tensor is byte-identical to
//! what `convert_hf_to_gguf.py` + `llama-quantize` produce.
//!
//! Streaming: safetensors shards are memory-mapped; one tensor at a time is
//! decoded in row batches, quantized in parallel and written (see
//! [`stream`] for the memory bound). Progress goes to a callback.

pub mod bnb;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod hf_to_gguf;
pub mod identify;
pub mod imatrix;
pub mod known;
pub mod layout;
pub mod metadata;
pub mod mix;
pub mod requantize;
pub mod stream;
pub mod vocab;

pub use error::{ConvertError, Result};
pub use hf_to_gguf::{convert, ConvertOptions};
pub use mix::FileType;
pub use requantize::{quantize, QuantizeOptions};
pub use stream::{Progress, Summary};
