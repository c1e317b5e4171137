//! The GGUF v3 container (v2 read too): a memory-mapped zero-copy reader that
//! validates every number against the file before using it, and a streaming
//! writer that never holds the whole model in memory.
