//! Hugging Face Falcon Mamba / Mamba checkpoints to GGUF.
