//! `mamba_gguf._native`: the Rust runtime and converter as a Python
//! extension module. The Python package (`py_src/mamba_gguf`) only shapes
//! what this module returns into llama-cpp-python's and transformers'
//! interfaces; tokenizing, chat templates, sampling, stop strings,
//! log-probabilities, state files and conversion all happen here, through the
//! `mamba-gguf` and `convert` crates.
//!
//! # Ownership
//! A [`model::NativeModel`] holds an `Arc` of its shared part: the model, its
//! tokenizer and chat template, and ONE session (the model's running state)
//! behind a mutex. A `Session` borrows the `Model` it runs; the pair lives in
//! a [`self_cell`] cell ([`model::OwnedSession`]) that owns an
//! `Arc<Model>` and the session borrowing it, so no lifetime is extended by
//! hand and the session always drops before the model (no `unsafe` here).
//! A [`stream::Stream`] (one generation) holds another `Arc` of the same
//! shared part, so it stays valid even if the Python `Model` is dropped first.
//!
//! # Threads, the GIL and Ctrl-C
//! Every model call (a prefill chunk, one token step, a state copy) runs with
//! the GIL released (`Python::detach`, PyO3's name for `allow_threads`) and
//! only then takes the session's mutex, so a thread waiting for a model never
//! holds the GIL. Between steps the GIL is taken back and
//! `Python::check_signals` runs, so Ctrl-C (KeyboardInterrupt) stops a
//! prefill between chunks and a generation between tokens.
//!
//! A generation owns its model's session from its first step to its last
//! (the *lease*, [`model::Lease`]): another thread that starts one on the
//! same `Model` waits (GIL released, still interruptible) until it ends; the
//! same thread starting a second one while its first stream is unfinished
//! gets a `MambaGgufError` at once instead of waiting for itself forever.
//! Several `Model` objects never share a lock.
//!
//! # Errors
//! Nothing panics across the boundary on input-derived data: every failure is
//! a Python exception carrying the Rust message ([`error`]).

mod conversion;
mod error;
mod model;
mod stream;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MambaGgufError", m.py().get_type::<error::MambaGgufError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FILE_TYPES", conversion::file_type_names())?;
    m.add_class::<model::NativeModel>()?;
    m.add_class::<stream::Stream>()?;
    m.add_function(wrap_pyfunction!(conversion::convert, m)?)?;
    m.add_function(wrap_pyfunction!(conversion::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(conversion::cached_gguf, m)?)?;
    Ok(())
}
