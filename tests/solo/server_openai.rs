//! The official `openai`, `anthropic` and `ollama` Python clients against
//! the server (scripts/openai_client/check.py,
//! scripts/anthropic_client/check.py, scripts/ollama_client/check.py), on
//! a server with the default settings. When `python3` cannot import the
//! client (set MAMBA_GGUF_PYTHON to use another interpreter) the test is
//! reported as ignored with the reason, and fails under CI=true (CI installs
//! both). Runs in tests/solo, on the harness that can say so
//! (tests/support/harness.rs).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{Ran, Skip};
use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::server::{self, ServerConfig};
use mamba_gguf::Model;

pub fn official_openai_client() -> Ran {
    python_client("openai", "scripts/openai_client/check.py", "/v1")
}

/// Tool calls (scripts/openai_client/tools.py): each tool_choice mode and a
/// full round trip.
pub fn official_openai_client_tools() -> Ran {
    python_client("openai", "scripts/openai_client/tools.py", "/v1")
}

pub fn official_anthropic_client() -> Ran {
    python_client("anthropic", "scripts/anthropic_client/check.py", "")
}

/// Ollama's API (scripts/ollama_client/check.py): list, show, generate and
/// chat, streamed and not, options, format and refusals.
pub fn official_ollama_client() -> Ran {
    python_client("ollama", "scripts/ollama_client/check.py", "")
}

/// Runs `script --base-url http://<server><base_path>` against a fresh
/// server with the default settings; it must exit 0.
fn python_client(module: &str, script: &str, base_path: &str) -> Ran {
    let py = std::env::var("MAMBA_GGUF_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err(Skip::needs(format!(
            "{py} cannot import {module} (pip install {module} to run this check)"
        )));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = Arc::new(
        Model::load(llamacpp_gguf("falcon-mamba-tiny-f32.gguf")).expect("fixture model loads"),
    );
    let h = server::spawn(
        model,
        ServerConfig {
            port: 0,
            timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .expect("server starts");
    let out = Command::new(&py)
        .arg(root.join(script))
        .arg("--base-url")
        .arg(format!("http://{}{base_path}", h.addr))
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("runs python");
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{so}\n{se}");
    eprintln!("{so}");
    Ok(())
}
