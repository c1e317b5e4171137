//! Text <-> token ids: Hugging Face `tokenizer.json` when the GGUF carries it,
//! else a BPE built from `tokenizer.ggml.*`.
