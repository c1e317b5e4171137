//! mamba-gguf: the runtime library (model, state, tokenizer, sampler, session).

pub mod error;
pub mod model;
pub mod procmem;
pub mod sampler;
pub mod session;
pub mod state;
pub mod tokenizer;
pub mod server;
pub mod chat_template;
pub mod state_file;
pub mod generate;

pub use error::ModelError;
pub use model::Model;
pub use sampler::{Sampler, SamplerConfig};
pub use session::Session;
