//! mamba-gguf: the runtime library (model, state, tokenizer, sampler, session).

pub mod backend;
pub mod chat_template;
pub mod error;
pub mod generate;
pub mod model;
pub mod procmem;
pub mod sampler;
pub mod server;
pub mod session;
pub mod state;
pub mod state_file;
pub mod tokenizer;

pub use error::ModelError;
pub use model::Model;
pub use sampler::{Sampler, SamplerConfig};
pub use session::Session;
