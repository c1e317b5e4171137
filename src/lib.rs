//! mamba-gguf: the runtime library (model, state, tokenizer, sampler, session).

pub mod tokenizer;
