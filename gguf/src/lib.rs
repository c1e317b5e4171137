//! The GGUF v3 container (v2 read too): a memory-mapped zero-copy reader that
//! validates every number against the file before using it, and a streaming
//! writer that never holds the whole model in memory.
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64
//! metadata count; the metadata (key string, u32 value type, value); the
//! tensor infos (name, u32 n_dims, u64 dims innermost first, u32 ggml type,
//! u64 offset into the data section); zero padding to the alignment; the data
//! section, each tensor at an aligned offset.
//!
//! ```no_run
//! use gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
//! # fn main() -> Result<(), gguf::GgufError> {
//! let f = GgufFile::open("model.gguf")?;
//! let n_layers = f.get_u32("mamba.block_count")?;
//! let (info, bytes) = f.tensor_by_name("token_embd.weight")?; // bytes: zero-copy
//! # let _ = (n_layers, info, bytes);
//!
//! let md = vec![("general.architecture".to_string(), Value::from("mamba"))];
//! let specs = [TensorSpec::new("output_norm.weight", vec![4096], GgmlType::F32)];
//! let mut w = GgufWriter::create("out.gguf", &md, &specs)?;
//! w.write_tensor_data(&[0u8; 4096 * 4])?; // any number of chunks per tensor
//! w.finish()?; // fsync + rename; dropping unfinished removes the temp file
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod reader;
pub mod tensor;
pub mod tmpfile;
pub mod value;
pub mod writer;

pub use error::GgufError;
/// Access-pattern hints for [`GgufFile::advise`].
#[cfg(unix)]
pub use memmap2::Advice;
pub use quant::GgmlType;
pub use reader::GgufFile;
pub use tensor::{TensorInfo, MAX_DIMS, MAX_NAME_LEN};
pub use value::{Array, Value, ValueType};
pub use writer::{write_file, GgufWriter, TensorSpec};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const VERSION: u32 = 3;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
