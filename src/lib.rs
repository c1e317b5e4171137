//! mamba-gguf: the runtime library (model, state, tokenizer, sampler, session).
//!
//! The `server` feature (on by default) adds the HTTP server and the chat
//! templates; without it the crate builds without axum, tokio and minijinja.
//! The `chat` feature (part of `server`) adds the chat templates alone.

pub mod backend;
#[cfg(feature = "chat")]
pub mod chat_template;
#[cfg(feature = "constrain")]
pub mod constrain;
pub mod error;
pub mod generate;
pub mod imatrix;
pub mod model;
pub mod prefill;
pub mod prefix_cache;
pub mod procmem;
pub mod sampler;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod state;
pub mod state_file;
pub mod tokenizer;

/// llama.cpp's GGUFs of the tiny fixture, rebuilt for the unit tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/support/llamacpp_gguf.rs"]
pub(crate) mod llamacpp_fixture;

pub use error::ModelError;
pub use model::Model;
pub use sampler::{Sampler, SamplerConfig};
pub use session::Session;
