//! llama.cpp's slot API: `GET /slots` lists the slots, and
//! `POST /slots/{id}?action=save|restore|erase` with `{"filename": NAME}`
//! saves a slot's state to `--slot-save-path`/NAME, puts a saved state back,
//! or clears the slot.
//!
//! A slot's saveable state is the one after its last request, when that
//! request ended cleanly (every token of the reply fed, no stop string
//! cutting the text): the state then covers exactly the prompt text plus the
//! reply, and that text and its tokens are stored with it (in the
//! checksummed state-file format, as the `--cache-dir` entries are). A
//! restore puts the state into the slot and into the prompt cache, so any
//! request whose prompt starts with that text (the conversation's next turn)
//! continues from it, whichever slot serves it: requests here are not pinned
//! to slots, the prompt cache is what makes a state reusable. So a restore
//! needs the prompt cache (`--cache-mb` > 0). An operation on a slot that is
//! serving a request waits until the request ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::api::ApiError;
use super::engine::{SlotError, SlotHeld, SlotOp, SlotReply};
use super::{body_bytes, error_response, AppState};
use crate::state_file;

/// What the state file's note holds: the text and tokens the state covers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    text: String,
    tokens: Vec<u32>,
}

#[derive(serde::Deserialize)]
pub(super) struct ActionQuery {
    action: Option<String>,
}

/// A file name in the save directory: no path, no hidden or special names
/// (as llama.cpp's filename check).
fn check_filename(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad(
            "filename",
            format!("filename {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 255 {
        return bad("is longer than 255 bytes");
    }
    if name.starts_with('.') || name.starts_with(' ') || name.ends_with(' ') {
        return bad("may not start with '.' or start or end with a space");
    }
    if let Some(c) = name.chars().find(|&c| {
        c.is_control() || matches!(c, '/' | '\\' | ':' | '"' | '|' | '?' | '*' | '<' | '>')
    }) {
        return bad(&format!("may not hold {c:?} (a plain file name, no path)"));
    }
    Ok(())
}

fn slot_error(e: SlotError) -> Response {
    let kind = match e.status {
        404 => "not_found_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    error_response(&ApiError::new(e.status, kind, e.message))
}

/// The file a save or restore names: `{"filename": NAME}` in the save
/// directory.
fn target(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, PathBuf), ApiError> {
    let Some(dir) = st.cfg.slot_save_path.as_deref() else {
        return Err(ApiError::new(
            501,
            "not_supported_error",
            "this server does not save slots: start it with --slot-save-path DIR",
        ));
    };
    let body = body_bytes(body)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request_error",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let name = match v.get("filename") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad("filename", "filename must be a string")),
        None => return Err(ApiError::bad("filename", "filename is required")),
    };
    if let Some(k) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "filename"))
    {
        return Err(ApiError::bad(
            k,
            format!("unknown field {k:?} (a slot action takes only filename)"),
        ));
    }
    check_filename(&name)?;
    Ok((name.clone(), Path::new(dir).join(name)))
}

/// `GET /slots`.
pub(super) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let slots: Vec<Value> = st
        .engine
        .slots()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "is_processing": s.is_processing,
                "n_past": s.n_held,
            })
        })
        .collect();
    Json(Value::Array(slots)).into_response()
}

/// `POST /slots/{id}?action=save|restore|erase`.
pub(super) async fn action(
    State(st): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ActionQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match run(&st, &id, q.action.as_deref(), body).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn run(
    st: &Arc<AppState>,
    id: &str,
    action: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Response> {
    let api = |e: ApiError| error_response(&e);
    let slot: usize = id.parse().map_err(|_| {
        api(ApiError::new(
            400,
            "invalid_request_error",
            format!("slot id {id:?} is not a number"),
        ))
    })?;
    let started = Instant::now();
    let ms = || started.elapsed().as_secs_f64() * 1e3;
    let ask = |op: SlotOp| async move {
        let rx = st.engine.slot_op(slot, op).map_err(slot_error)?;
        match rx.await {
            Ok(r) => r.map_err(slot_error),
            Err(_) => Err(slot_error(SlotError {
                status: 503,
                message: "the scheduler stopped".into(),
            })),
        }
    };
    match action {
        Some("save") => {
            let (name, path) = target(st, body).map_err(api)?;
            let SlotReply::Saved { held, snap } = ask(SlotOp::Save).await? else {
                return Err(slot_error(unexpected()));
            };
            let note = serde_json::to_string(&Note {
                text: held.text,
                tokens: held.tokens.clone(),
            })
            .map_err(|e| api(ApiError::new(500, "server_error", e.to_string())))?;
            let model = st.model.clone();
            let written = tokio::task::spawn_blocking(move || {
                let bytes = state_file::encode(&model, &snap, &note);
                gguf::tmpfile::write_atomic(&path, &bytes)
                    .map(|()| bytes.len())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|m| api(ApiError::new(500, "server_error", m)))?;
            Ok(json!({
                "id_slot": slot,
                "filename": name,
                "n_saved": held.tokens.len(),
                "n_written": written,
                "timings": {"save_ms": ms()},
            }))
        }
        Some("restore") => {
            let (name, path) = target(st, body).map_err(api)?;
            if st.cfg.cache_mb == 0 {
                return Err(api(ApiError::new(
                    400,
                    "invalid_request_error",
                    "a restored slot state is reused through the prompt cache, which is off \
                     (--cache-mb 0)",
                )));
            }
            let model = st.model.clone();
            let (held, snap, read) = tokio::task::spawn_blocking(move || {
                let bytes = std::fs::read(&path).map_err(|e| {
                    let status = if e.kind() == std::io::ErrorKind::NotFound {
                        404
                    } else {
                        500
                    };
                    (status, format!("cannot read {}: {e}", path.display()))
                })?;
                let shown = path.display().to_string();
                let (snap, note) =
                    state_file::decode(&model, &bytes, &shown).map_err(|e| (400, e.to_string()))?;
                let note: Note = serde_json::from_str(&note).map_err(|e| {
                    (
                        400,
                        format!(
                            "{shown}: not a slot state (its note says no text and tokens: {e})"
                        ),
                    )
                })?;
                let held = SlotHeld {
                    text: note.text,
                    tokens: note.tokens,
                };
                Ok::<_, (u16, String)>((held, snap, bytes.len()))
            })
            .await
            .map_err(|e| api(ApiError::new(500, "server_error", e.to_string())))?
            .map_err(|(status, message)| slot_error(SlotError { status, message }))?;
            let SlotReply::Restored { tokens } = ask(SlotOp::Restore { held, snap }).await? else {
                return Err(slot_error(unexpected()));
            };
            Ok(json!({
                "id_slot": slot,
                "filename": name,
                "n_restored": tokens,
                "n_read": read,
                "timings": {"restore_ms": ms()},
            }))
        }
        Some("erase") => {
            let SlotReply::Erased { tokens } = ask(SlotOp::Erase).await? else {
                return Err(slot_error(unexpected()));
            };
            Ok(json!({"id_slot": slot, "n_erased": tokens}))
        }
        Some(other) => Err(api(ApiError::bad(
            "action",
            format!("unknown slot action {other:?} (save, restore or erase)"),
        ))),
        None => Err(api(ApiError::bad(
            "action",
            "?action= is required (save, restore or erase)",
        ))),
    }
}

fn unexpected() -> SlotError {
    SlotError {
        status: 500,
        message: "the scheduler answered another operation".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::check_filename;

    #[test]
    fn only_plain_file_names() {
        for ok in ["slot.bin", "conv-1.mgstate", "a b.state", "ünïcode"] {
            assert!(check_filename(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", ".hidden", " x", "x ", "a:b", "a\nb", "a\0b",
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert!(check_filename(&"x".repeat(256)).is_err());
    }
}
