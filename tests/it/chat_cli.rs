//! `mamba-gguf chat` driven through stdin: follow-up turns start from the
//! cached state; /save then /load in a new process continues exactly as the
//! uninterrupted conversation; bad commands and files are reported, not fatal.

use crate::runtime_common::llamacpp_gguf;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture() -> PathBuf {
    llamacpp_gguf("falcon-mamba-tiny-f32.gguf")
}

fn chat(input: &str) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
        .args(["chat", "--temp", "0", "-n", "8", "--verbose", "-m"])
        .arg(fixture())
        .args(["--system", "Be brief."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("runs");
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{so}\n{se}");
    (so, se)
}

/// (prompt tokens, tokens from the cache) of each reply's verbose line.
fn figures(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("[prompt "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].parse().expect("count"), w[2].parse().expect("count"))
        })
        .collect()
}

#[test]
fn turns_use_the_cache_and_saved_state_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("c.state");
    let (out1, err1) = chat(&format!(
        "Hello there\n/save {}\nWhat next?\n/quit\n",
        state.display()
    ));
    let f1 = figures(&err1);
    assert_eq!(f1.len(), 2, "{err1}");
    assert_eq!(f1[0].1, 0, "first turn is cold");
    // The second turn starts from the state after the first prompt and reply.
    assert!(f1[1].1 > f1[0].0, "{f1:?}");
    assert!(f1[1].0 > f1[1].1, "{f1:?}");

    let (out2, err2) = chat(&format!("/load {}\nWhat next?\n/quit\n", state.display()));
    assert!(err2.contains("(loaded"), "{err2}");
    let f2 = figures(&err2);
    assert_eq!(f2, [f1[1]], "{err2}");
    // The reply after /load is the uninterrupted conversation's second reply.
    assert!(
        out1.ends_with(&out2) && out1.len() > out2.len(),
        "{out1:?}\n{out2:?}"
    );

    // /reset, unknown commands and bad files are reported and the chat goes on.
    let bad = dir.path().join("bad.state");
    std::fs::write(&bad, b"nonsense").expect("writes");
    let (_, err3) = chat(&format!(
        "/load {}\n/frobnicate\n/reset\nHi\n/quit\n",
        bad.display()
    ));
    assert!(
        err3.contains("bad.state") && err3.contains("not a mamba-gguf state file"),
        "{err3}"
    );
    assert!(err3.contains("unknown command /frobnicate"), "{err3}");
    assert_eq!(figures(&err3).len(), 1, "{err3}");
}
