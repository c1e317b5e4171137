//! Session state files: a session's recurrent state, its last logits and its
//! token count, tied to the model that made them.
//!
//! Layout (little-endian), version 1:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `MAMBAST\0` |
//! | 4 | version (1) |
//! | 32 | model identity: [`model_id`] |
//! | 8 | n_past, tokens the state has seen |
//! | 4 | n_layer |
//! | 8, 8 | conv and ssm values per layer |
//! | 8 | logits (vocabulary size) |
//! | 4 x ... | per layer conv then ssm f32s, then the logits |
//! | 8 + n | a UTF-8 note of n bytes (e.g. the chat transcript as JSON; may be empty) |
//! | 32 | SHA-256 of everything before it |
//!
//! Files are written to a temporary file beside the target and renamed.
//!
//! ```no_run
//! use mamba_gguf::{Model, Session, state_file};
//! let model = Model::load("model.gguf")?;
//! let mut a = Session::new(&model);
//! a.feed(&[1, 2, 3])?;
//! state_file::save("chat.state", &mut a)?;
//! let mut b = Session::new(&model);
//! state_file::load("chat.state", &mut b)?;
//! assert_eq!(b.n_past(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::Model;
use crate::session::{Session, Snapshot};

const MAGIC: &[u8; 8] = b"MAMBAST\0";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 32 + 8 + 4 + 8 + 8 + 8;

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The backend could not read the session's state.
    #[error("{path}: {source}")]
    Model {
        path: String,
        #[source]
        source: crate::error::ModelError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a mamba-gguf state file (bad magic)")]
    Magic { path: String },
    #[error("{path}: state file version {found}, this build reads version {VERSION}")]
    Version { path: String, found: u32 },
    #[error("{path}: the state was saved from a different model (identity {found}, this model is {expected})")]
    WrongModel {
        path: String,
        found: String,
        expected: String,
    },
    #[error("{path}: state shape ({what}) does not match this model")]
    Shape { path: String, what: String },
    #[error("{path}: damaged state file: {what}")]
    Damaged { path: String, what: String },
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A model's identity: SHA-256 over the GGUF's metadata and tensor table (the
/// file's bytes up to the tensor data) and the first 4 KiB of every tensor's
/// data, so that two files differing only in weights differ too.
pub fn model_id(model: &Model) -> [u8; 32] {
    let g = model.gguf();
    let bytes = g.as_bytes();
    let head = usize::try_from(g.data_offset())
        .ok()
        .and_then(|n| bytes.get(..n))
        .unwrap_or(bytes);
    let mut h = Sha256::new();
    h.update(head);
    for t in g.tensors() {
        let d = g.tensor_data(t);
        h.update(&d[..d.len().min(4096)]);
    }
    h.finalize().into()
}

/// The identity as lowercase hex.
pub fn model_id_hex(model: &Model) -> String {
    hex(&model_id(model))
}

fn push_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// The bytes of a state file for `snap`, taken from a session of `model`.
pub fn encode(model: &Model, snap: &Snapshot, note: &str) -> Vec<u8> {
    encode_with_id(&model_id(model), snap, note)
}

/// [`encode`] with the model's identity ([`model_id`]) computed once by the
/// caller (the state store encodes many states of one model).
pub fn encode_with_id(id: &[u8; 32], snap: &Snapshot, note: &str) -> Vec<u8> {
    let layers = &snap.state.layers;
    let conv = layers.first().map(|l| l.conv.len()).unwrap_or(0);
    let ssm = layers.first().map(|l| l.ssm.len()).unwrap_or(0);
    let mut out =
        Vec::with_capacity(HEADER + 4 * (layers.len() * (conv + ssm) + snap.logits.len()) + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&snap.n_past.to_le_bytes());
    out.extend_from_slice(&(layers.len() as u32).to_le_bytes());
    out.extend_from_slice(&(conv as u64).to_le_bytes());
    out.extend_from_slice(&(ssm as u64).to_le_bytes());
    out.extend_from_slice(&(snap.logits.len() as u64).to_le_bytes());
    for l in layers {
        push_f32s(&mut out, &l.conv);
        push_f32s(&mut out, &l.ssm);
    }
    push_f32s(&mut out, &snap.logits);
    out.extend_from_slice(&(note.len() as u64).to_le_bytes());
    out.extend_from_slice(note.as_bytes());
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// Parses a state file's bytes into a snapshot for a session of `model`, and
/// its note. `path` only names the source in errors.
pub fn decode(
    model: &Model,
    bytes: &[u8],
    path: &str,
) -> Result<(Snapshot, String), StateFileError> {
    decode_with_id(model, &model_id(model), bytes, path)
}

/// [`decode`] with the model's identity ([`model_id`]) computed once by the
/// caller: `id` must be `model_id(model)`.
pub fn decode_with_id(
    model: &Model,
    id: &[u8; 32],
    bytes: &[u8],
    path: &str,
) -> Result<(Snapshot, String), StateFileError> {
    let damaged = |what: &str| StateFileError::Damaged {
        path: path.to_string(),
        what: what.to_string(),
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(StateFileError::Magic {
            path: path.to_string(),
        });
    }
    if bytes.len() < HEADER + 32 {
        return Err(damaged("shorter than its header"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(StateFileError::Version {
            path: path.to_string(),
            found: version,
        });
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    // The checksum on another thread while the payload is parsed (a 7B
    // state is ~38 MiB: ~28 ms of SHA-256 here, and about as long to
    // parse); a mismatch still wins over whatever the parse found.
    let (sum_ok, parsed) = std::thread::scope(|s| {
        let hash = s.spawn(|| <[u8; 32]>::from(Sha256::digest(body)).as_slice() == sum);
        let parsed = parse_payload(model, id, bytes, body, path);
        (hash.join().unwrap_or(false), parsed)
    });
    if !sum_ok {
        return Err(damaged("checksum mismatch (truncated or corrupted)"));
    }
    parsed
}

/// The payload of a state file whose header [`decode_with_id`] checked:
/// the model's identity, the shapes, the values and the note.
fn parse_payload(
    model: &Model,
    id: &[u8; 32],
    bytes: &[u8],
    body: &[u8],
    path: &str,
) -> Result<(Snapshot, String), StateFileError> {
    let damaged = |what: &str| StateFileError::Damaged {
        path: path.to_string(),
        what: what.to_string(),
    };
    let u32_at = |o: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[o..o + 4]);
        u32::from_le_bytes(b)
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let found = &bytes[12..44];
    if found != id.as_slice() {
        return Err(StateFileError::WrongModel {
            path: path.to_string(),
            found: hex(found),
            expected: hex(id),
        });
    }
    let n_past = u64_at(44);
    let n_layer = u32_at(52) as usize;
    let conv = u64_at(56);
    let ssm = u64_at(64);
    let n_logits = u64_at(72);
    let hp = &model.hp;
    let want_conv = (hp.d_conv.saturating_sub(1) * hp.d_inner) as u64;
    let want_ssm = (hp.d_inner * hp.d_state) as u64;
    if n_layer != hp.n_layer
        || conv != want_conv
        || ssm != want_ssm
        || n_logits != hp.n_vocab as u64
    {
        return Err(StateFileError::Shape {
            path: path.to_string(),
            what: format!("{n_layer} layers of conv {conv} + ssm {ssm}, {n_logits} logits"),
        });
    }
    let (conv, ssm, n_logits) = (conv as usize, ssm as usize, n_logits as usize);
    let floats = n_layer * (conv + ssm) + n_logits;
    let note_at = HEADER + 4 * floats;
    if body.len() < note_at + 8 {
        return Err(damaged("payload length does not match the header"));
    }
    let note_len = u64_at(note_at);
    if body.len() as u64 != note_at as u64 + 8 + note_len {
        return Err(damaged("payload length does not match the header"));
    }
    let note = std::str::from_utf8(&body[note_at + 8..])
        .map_err(|_| damaged("the note is not UTF-8"))?
        .to_string();
    let mut vals = body[HEADER..note_at]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let mut take = |n: usize| -> Vec<f32> { vals.by_ref().take(n).collect() };
    let mut state = crate::state::State::new(hp);
    for l in &mut state.layers {
        l.conv = take(conv);
        l.ssm = take(ssm);
    }
    let logits = take(n_logits);
    Ok((
        Snapshot {
            state,
            logits,
            n_past,
        },
        note,
    ))
}

fn io_err(path: &Path, source: std::io::Error) -> StateFileError {
    StateFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes the session's state to `path` (a temporary file beside it, then
/// renamed: a crash never leaves a partial file at `path`).
pub fn save(path: impl AsRef<Path>, session: &mut Session) -> Result<(), StateFileError> {
    save_with_note(path, session, "")
}

/// [`save`] with a note stored beside the state (returned by [`load_with_note`]).
pub fn save_with_note(
    path: impl AsRef<Path>,
    session: &mut Session,
    note: &str,
) -> Result<(), StateFileError> {
    let path = path.as_ref();
    let snap = session.snapshot().map_err(|source| StateFileError::Model {
        path: path.display().to_string(),
        source,
    })?;
    let bytes = encode(session.model(), &snap, note);
    // Temp file `.NAME.tmp-<pid>-<random>` beside it, renamed when whole;
    // orphans of killed runs are removed first (gguf::tmpfile).
    gguf::tmpfile::write_atomic(path, &bytes).map_err(|e| io_err(path, e))
}

/// Reads a state file into `session` (which must be of the same model). On
/// error the session is left as it was.
pub fn load(path: impl AsRef<Path>, session: &mut Session) -> Result<(), StateFileError> {
    load_with_note(path, session).map(|_| ())
}

/// [`load`], returning the file's note.
pub fn load_with_note(
    path: impl AsRef<Path>,
    session: &mut Session,
) -> Result<String, StateFileError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let name = path.display().to_string();
    let (snap, note) = decode(session.model(), &bytes, &name)?;
    session.restore(&snap).map_err(|e| StateFileError::Shape {
        path: name,
        what: e.to_string(),
    })?;
    Ok(note)
}
