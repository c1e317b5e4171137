//! State files: a saved and reloaded state continues exactly as the
//! uninterrupted session; another model's state and damaged files are refused.

use std::path::PathBuf;

use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::state_file::{self, StateFileError};
use mamba_gguf::{Model, Session};

fn fixture(name: &str) -> PathBuf {
    llamacpp_gguf(name)
}

fn f32_model() -> Model {
    Model::load(fixture("falcon-mamba-tiny-f32.gguf")).expect("fixture model loads")
}

const A: [u32; 7] = [1000, 25, 7, 3001, 64, 9, 11];
const B: [u32; 5] = [42, 4242, 7, 300, 5];

#[test]
fn reloaded_state_continues_exactly() {
    let model = f32_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.state");

    let mut a = Session::new(&model);
    a.feed(&A).expect("feeds");
    state_file::save(&path, &mut a).expect("saves");
    let mut uninterrupted = Vec::new();
    for &t in &B {
        uninterrupted.push(a.feed(&[t]).expect("feeds").to_vec());
    }

    let mut b = Session::new(&model);
    b.feed(&[5, 6]).expect("feeds"); // something to overwrite
    state_file::load(&path, &mut b).expect("loads");
    assert_eq!(b.n_past(), A.len() as u64);
    for (i, &t) in B.iter().enumerate() {
        let l = b.feed(&[t]).expect("feeds");
        assert!(l == &uninterrupted[i][..], "logits differ after token {i}");
    }
    assert_eq!(a.state().expect("state"), b.state().expect("state"));
    // Only the file itself is left (the temporary was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("s.state")]);
}

#[test]
fn note_round_trips() {
    let model = f32_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("n.state");
    let mut a = Session::new(&model);
    a.feed(&A).expect("feeds");
    state_file::save_with_note(&path, &mut a, "{\"hello\": \"wörld\"}").expect("saves");
    let mut b = Session::new(&model);
    let note = state_file::load_with_note(&path, &mut b).expect("loads");
    assert_eq!(note, "{\"hello\": \"wörld\"}");
}

#[test]
fn other_model_refused() {
    let model = f32_model();
    // Same shapes, other weights (q4_k_m of the same checkpoint).
    let other = Model::load(fixture("falcon-mamba-tiny-q4_k_m.gguf")).expect("loads");
    assert_eq!(model.hp, other.hp);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.state");
    let mut a = Session::new(&model);
    a.feed(&A).expect("feeds");
    state_file::save(&path, &mut a).expect("saves");
    let mut b = Session::new(&other);
    let e = state_file::load(&path, &mut b).expect_err("refused");
    assert!(matches!(e, StateFileError::WrongModel { .. }), "{e}");
    assert!(e.to_string().contains("different model"), "{e}");
    assert_eq!(b.n_past(), 0, "session untouched");
}

#[test]
fn damaged_files_refused() {
    let model = f32_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.state");
    let mut a = Session::new(&model);
    a.feed(&A).expect("feeds");
    state_file::save(&path, &mut a).expect("saves");
    let good = std::fs::read(&path).expect("reads");

    let check = |bytes: Vec<u8>, want: &str| {
        let p = dir.path().join("bad.state");
        std::fs::write(&p, bytes).expect("writes");
        let mut s = Session::new(&model);
        let e = state_file::load(&p, &mut s).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains(want), "{msg} (wanted '{want}')");
        assert!(msg.contains("bad.state"), "names the file: {msg}");
        assert_eq!(s.n_past(), 0);
    };
    // A flipped bit in the SSM state.
    let mut b = good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    check(b, "checksum");
    // Truncated.
    check(good[..good.len() - 100].to_vec(), "checksum");
    check(good[..20].to_vec(), "shorter than its header");
    // Not a state file.
    check(
        b"GGUF and more bytes than a header would need, really".to_vec(),
        "bad magic",
    );
    // A future version.
    let mut b = good.clone();
    b[8] = 9;
    check(b, "version 9");
    // Missing file.
    let mut s = Session::new(&model);
    let e = state_file::load(dir.path().join("absent"), &mut s).expect_err("refused");
    assert!(e.to_string().contains("absent"), "{e}");
}
