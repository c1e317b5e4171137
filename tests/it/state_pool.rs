//! The backend's state pool: sessions hold slots; fork copies a slot on the
//! device; host reads and writes move states between sessions (and models of
//! the same shape); a failed feed changes nothing; a freed slot comes back
//! zeroed.

use std::path::PathBuf;

use crate::runtime_common::llamacpp_gguf;
use mamba_gguf::error::ModelError;
use mamba_gguf::state::State;
use mamba_gguf::{Model, Session};

fn fixture(name: &str) -> PathBuf {
    llamacpp_gguf(name)
}

fn model() -> Model {
    Model::load(fixture("falcon-mamba-tiny-f32.gguf")).expect("fixture loads")
}

#[test]
fn fork_continues_exactly_as_the_original() {
    let m = model();
    let mut a = Session::new(&m);
    a.feed(&[1, 2, 3, 4]).expect("feeds");
    let mut b = a.fork().expect("forks");
    assert_ne!(a.slot().index(), b.slot().index());
    assert_eq!(b.n_past(), 4);
    assert_eq!(a.logits().expect("logits"), b.logits().expect("logits"));
    let la = a.feed(&[7, 8]).expect("feeds").to_vec();
    let lb = b.feed(&[7, 8]).expect("feeds").to_vec();
    assert!(la == lb, "fork diverged");
    assert_eq!(a.state().expect("reads"), b.state().expect("reads"));
}

#[test]
fn a_bad_id_anywhere_changes_nothing() {
    let m = model();
    let v = m.hp.n_vocab as u32;
    let mut s = Session::with_chunk(&m, 2);
    s.feed(&[5, 6, 7]).expect("feeds");
    let before = s.snapshot().expect("snapshot");
    // The bad id is in the third chunk: the first two must not run.
    let e = s.feed(&[1, 2, 3, 4, v + 3]).expect_err("refused");
    assert!(
        matches!(e, ModelError::Token { id, .. } if id == v + 3),
        "{e}"
    );
    let mut rows = Vec::new();
    let e = s.feed_each(&[1, v], &mut rows, |_, _| {});
    assert!(e.is_err());
    assert_eq!(s.n_past(), 3);
    assert_eq!(s.state().expect("reads"), before.state);
    assert_eq!(s.logits().expect("logits"), &before.logits[..]);
}

#[test]
fn freed_slots_come_back_zeroed_and_foreign_states_are_refused() {
    let m = model();
    let zero = State::new(&m.hp);
    let index = {
        let mut s = Session::new(&m);
        s.feed(&[9, 10]).expect("feeds");
        assert_ne!(s.state().expect("reads"), zero);
        s.slot().index()
    };
    let s = Session::new(&m);
    assert_eq!(s.slot().index(), index, "the freed slot is reused");
    assert_eq!(s.state().expect("reads"), zero);

    // Host write of a state of another shape: refused, slot untouched.
    let other = Model::load(fixture("falcon-mamba-tiny-q4_k_m.gguf")).expect("loads another model");
    let mut wrong = State::new(&m.hp);
    wrong.layers.pop();
    let e = m.write_state(s.slot(), &wrong).expect_err("refused");
    assert!(matches!(e, ModelError::ForeignState { .. }), "{e}");
    // A slot of another model.
    let theirs = other.new_slot().expect("slot");
    let e = m.read_state(&theirs).expect_err("refused");
    assert!(e.to_string().contains("another model"), "{e}");
    assert_eq!(s.state().expect("reads"), zero);
}

#[test]
fn a_snapshot_moves_between_models_of_one_shape_through_the_host_form() {
    // The host form is what a state file or another backend gets.
    let m = model();
    let mut a = Session::new(&m);
    a.feed(&[11, 12, 13]).expect("feeds");
    let snap = a.snapshot().expect("snapshot");
    let m2 = model();
    let mut b = Session::new(&m2);
    b.restore(&snap).expect("restores");
    let la = a.feed(&[14]).expect("feeds").to_vec();
    assert!(b.feed(&[14]).expect("feeds") == &la[..]);
}
