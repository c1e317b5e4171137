//! The working buffers of a forward over up to `chunk` tokens, in the
//! memory of the model's backend. Sized once per session so prefill and
//! decode allocate nothing per token.

use super::Model;
use crate::backend::Workspace;

/// A backend workspace (see [`crate::backend`]); opaque to its users.
#[derive(Debug)]
pub struct Scratch {
    ws: Workspace,
}

impl Scratch {
    /// Buffers for forwards of up to `chunk` tokens (at least 1) on `model`'s
    /// backend.
    pub fn new(model: &Model, chunk: usize) -> Scratch {
        Scratch {
            ws: model.backend().workspace(chunk),
        }
    }

    /// The most tokens (or sequences) one forward takes.
    pub fn chunk(&self) -> usize {
        self.ws.rows()
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        self.ws.bytes()
    }

    pub(crate) fn ws(&mut self) -> &mut Workspace {
        &mut self.ws
    }
}
