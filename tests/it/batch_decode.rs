//! Batched decode (`Model::forward_batch`, `BatchDecoder`) against stepping
//! each sequence alone with `Session::feed(&[id])`: the logits must be bit for
//! bit the same, for B = 1, 3, 4, 5 sequences with different prompts (of
//! different lengths, one longer than a prefill chunk), over several steps, on
//! several weight types (F32, Q4_K_M from llama.cpp; Q8_0 with a tied head,
//! Q4_0, Q6_K and F16 from our converter), with rayon pools of 1 and 4 threads
//! (so both the serial and the row-split parallel matmuls run). Plus the
//! errors: mismatched lengths, too many sequences, a short logits buffer, a
//! state or session of another model, a token outside the vocabulary.
//!
//! The reference is the runtime's own single-sequence path, which the
//! runtime_reference tests check against transformers; this test checks that
//! batching changes nothing.

use std::path::PathBuf;

use crate::runtime_common::{argmax, llamacpp_gguf, ours_gguf};
use mamba_gguf::backend::TopK;
use mamba_gguf::error::ModelError;
use mamba_gguf::model::Scratch;
use mamba_gguf::session::BatchDecoder;
use mamba_gguf::state::{State, StateSlot};
use mamba_gguf::{Model, Session};

fn llamacpp(name: &str) -> PathBuf {
    llamacpp_gguf(name)
}

/// Deterministic pseudo-random token ids in [0, v).
fn ids(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % v as u64) as u32
        })
        .collect()
}

/// Prompt lengths: one token, short ones, one over the default chunk of 64.
const PROMPT_LENS: [usize; 5] = [9, 1, 70, 4, 23];
const STEPS: usize = 5;

/// The token sequence `j` gets at decode step `k`. At step 0 every sequence
/// gets the same token, so only their states tell them apart there: if two
/// sequences shared a state (or a batch row read another row's state), their
/// step-0 logits would be equal to each other and differ from the reference.
fn step_token(j: usize, k: usize, v: usize) -> u32 {
    if k == 0 {
        return 17 % v as u32;
    }
    ids(1000 + 31 * j as u64 + k as u64, 1, v)[0]
}

fn bits_equal(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{what}: logit {i}: batched {} vs alone {}", a[i], b[i]);
    }
}

/// Runs B = 1, 3, 4, 5 sequences (sequences `order[..b]`) batched and alone.
fn check_model(model: &Model, label: &str) {
    let v = model.hp.n_vocab;
    let prompts: Vec<Vec<u32>> = PROMPT_LENS
        .iter()
        .enumerate()
        .map(|(j, &n)| ids(j as u64 + 1, n, v))
        .collect();
    // Reference: each sequence alone, token by token after its prompt.
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let mut s = Session::new(model);
            s.feed(p).expect("prompt feeds");
            (0..STEPS)
                .map(|k| s.feed(&[step_token(j, k, v)]).expect("feeds").to_vec())
                .collect()
        })
        .collect();
    // The check means something only if the sequences' logits differ.
    for (a, b) in alone[0].iter().zip(&alone[1]) {
        assert_ne!(a, b, "{label}: sequences 0 and 1 agree");
    }
    for (b, order) in [
        (1, vec![2]),
        (3, vec![0, 1, 2]),
        (4, vec![3, 2, 1, 0]),
        (5, vec![4, 0, 3, 1, 2]),
    ] {
        let mut sessions: Vec<Session> = order
            .iter()
            .map(|&j| {
                let mut s = Session::new(model);
                s.feed(&prompts[j]).expect("prompt feeds");
                s
            })
            .collect();
        let mut dec = BatchDecoder::new(model, b);
        assert_eq!(dec.max_batch(), b);
        for k in 0..STEPS {
            let toks: Vec<u32> = order.iter().map(|&j| step_token(j, k, v)).collect();
            let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
            dec.step(&mut refs, &toks).expect("batched step");
            for (s, &j) in sessions.iter_mut().zip(&order) {
                bits_equal(
                    s.logits().expect("logits"),
                    alone[j].get(k).expect("reference step"),
                    &format!("{label}: B={b} sequence {j} step {k}"),
                );
                assert_eq!(s.n_past(), (PROMPT_LENS[j] + k + 1) as u64);
            }
        }
    }
    // forward_batch itself, into a [B][V] buffer, from fresh states.
    let states: Vec<StateSlot> = (0..3).map(|_| model.new_slot().expect("slot")).collect();
    let refs: Vec<&StateSlot> = states.iter().collect();
    let mut s = Scratch::new(model, 4);
    let mut logits = vec![0f32; 3 * v];
    let toks = [5u32, 6, 5];
    model
        .forward_batch(&toks, &refs, &mut s, &mut logits)
        .expect("forward_batch");
    for (j, &t) in toks.iter().enumerate() {
        let mut alone = Session::new(model);
        let want = alone.feed(&[t]).expect("feeds");
        bits_equal(
            &logits[j * v..(j + 1) * v],
            want,
            &format!("{label}: forward_batch row {j}"),
        );
    }
}

fn in_pools(model: &Model, label: &str) {
    for threads in [1, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| check_model(model, &format!("{label} ({threads} threads)")));
    }
}

#[test]
fn batched_equals_alone_llamacpp_f32_and_q4_k_m() {
    for f in [
        "falcon-mamba-tiny-f32.gguf",
        "falcon-mamba-tiny-q4_k_m.gguf",
    ] {
        let model = Model::load(llamacpp(f)).expect("fixture loads");
        in_pools(&model, f);
    }
}

#[test]
fn batched_equals_alone_our_conversions() {
    use convert::FileType;
    for (fixture, ft) in [
        ("mamba-tiny-tied", FileType::Q8_0),
        ("falcon-mamba-small-bf16", FileType::Q4_0),
        ("falcon-mamba-small-bf16", FileType::Q6_K),
        ("falcon-mamba-small-bf16", FileType::F16),
    ] {
        let model = Model::load(ours_gguf(fixture, ft)).expect("converted model loads");
        in_pools(&model, &format!("{fixture} {ft:?}"));
    }
}

#[test]
fn bad_batches_are_errors() {
    let model = Model::load(llamacpp("falcon-mamba-tiny-f32.gguf")).expect("loads");
    let other = Model::load(ours_gguf("mamba-tiny-tied", convert::FileType::F32)).expect("loads");
    let v = model.hp.n_vocab;
    let mut s = Scratch::new(&model, 2);
    let mut logits = vec![0f32; 3 * v];
    let a = model.new_slot().expect("slot");
    let b = model.new_slot().expect("slot");
    let c = model.new_slot().expect("slot");

    // Empty.
    let r = model.forward_batch(&[], &[], &mut s, &mut logits);
    assert!(matches!(r, Err(ModelError::Empty)), "{r:?}");
    // Two tokens, one state.
    let r = model.forward_batch(&[1, 2], &[&a], &mut s, &mut logits);
    assert!(r.is_err_and(|e| e.to_string().contains("2 tokens but 1 states")));
    // More sequences than the scratch holds.
    let r = model.forward_batch(&[1, 2, 3], &[&a, &b, &c], &mut s, &mut logits);
    assert!(r.is_err_and(|e| e.to_string().contains("exceed the scratch chunk 2")));
    // Logits buffer for one sequence only.
    let r = model.forward_batch(&[1, 2], &[&a, &b], &mut s, &mut logits[..v]);
    assert!(r.is_err_and(|e| e.to_string().contains("logits buffer")));
    // A state of another model (other d_inner).
    let foreign = other.new_slot().expect("slot");
    let r = model.forward_batch(&[1, 2], &[&a, &foreign], &mut s, &mut logits);
    assert!(r.is_err_and(|e| e.to_string().contains("state 1 belongs to another model")));
    // A token outside the vocabulary.
    let r = model.forward_batch(&[1, v as u32], &[&a, &b], &mut s, &mut logits);
    assert!(
        matches!(r, Err(ModelError::Token { id, .. }) if id == v as u32),
        "{r:?}"
    );
    // None of the failures touched the states.
    let fresh = State::new(&model.hp);
    let read = |x: &StateSlot| model.read_state(x).expect("reads");
    assert!(read(&a) == fresh && read(&b) == fresh && read(&c) == fresh);

    // BatchDecoder: a session of another model, too many sessions.
    let mut dec = BatchDecoder::new(&model, 2);
    let mut mine = Session::new(&model);
    let mut theirs = Session::new(&other);
    let r = dec.step(&mut [&mut mine, &mut theirs], &[1, 2]);
    assert!(r.is_err_and(|e| e.to_string().contains("another model")));
    let mut m2 = Session::new(&model);
    let mut m3 = Session::new(&model);
    let r = dec.step(&mut [&mut mine, &mut m2, &mut m3], &[1, 2, 3]);
    assert!(r.is_err());
    assert_eq!(mine.n_past(), 0);
    // And a good step still works after them.
    dec.step(&mut [&mut mine, &mut m2], &[1, 2]).expect("steps");
    assert_eq!(mine.n_past(), 1);
}

/// The greedy and top-k forms on the CPU, where the logits are host memory
/// anyway: `feed_greedy`, `step_greedy`, `feed_top_k` and `step_top_k` leave
/// each session as `feed` and `step` do (logits bit for bit, on the host)
/// and choose the argmax, or the k largest, of those logits; bad input is
/// refused before anything changes.
#[test]
fn greedy_feeds_and_steps_choose_the_argmax_on_the_cpu() {
    let model = Model::load(llamacpp("falcon-mamba-tiny-f32.gguf")).expect("loads");
    let v = model.hp.n_vocab;
    let mut host: Vec<Session> = Vec::new();
    let mut greedy: Vec<Session> = Vec::new();
    let mut next = Vec::new();
    for (j, n) in [9, 70, 1].into_iter().enumerate() {
        let p = ids(j as u64 + 7, n, v);
        let (mut h, mut g) = (Session::new(&model), Session::new(&model));
        let want = argmax(h.feed(&p).expect("feeds")) as u32;
        assert_eq!(g.feed_greedy(&p).expect("feeds"), want, "prompt {j}");
        assert_eq!(g.host_logits(), Some(h.logits().expect("logits")));
        next.push(want);
        host.push(h);
        greedy.push(g);
    }
    let (mut dh, mut dg) = (BatchDecoder::new(&model, 3), BatchDecoder::new(&model, 3));
    for k in 0..3 {
        let mut refs: Vec<&mut Session> = host.iter_mut().collect();
        dh.step(&mut refs, &next).expect("step");
        let mut refs: Vec<&mut Session> = greedy.iter_mut().collect();
        if k == 1 {
            dg.step_top_k(&mut refs, &next, 40).expect("top-k step");
        } else {
            dg.step_greedy(&mut refs, &next).expect("greedy step");
        }
        for (j, (h, g)) in host.iter_mut().zip(greedy.iter_mut()).enumerate() {
            let want = h.logits().expect("logits").to_vec();
            bits_equal(
                g.host_logits().expect("on the host"),
                &want,
                &format!("step {k} sequence {j}"),
            );
            next[j] = g.greedy().expect("pick");
            assert_eq!(next[j] as usize, argmax(&want), "step {k} sequence {j}");
            let top = TopK::of(&want, 40);
            assert_eq!(g.top_k(40).expect("top-k"), &top.cands[..]);
            assert_eq!(g.top_k(3).expect("top-k"), &top.cands[..3]);
            assert_eq!(g.n_past(), h.n_past());
        }
    }
    let s = &mut greedy[0];
    let before = s.n_past();
    assert!(matches!(s.feed_greedy(&[]), Err(ModelError::Empty)));
    assert!(s.feed_top_k(&[1], 0).is_err());
    assert!(s.feed_top_k(&[1], 257).is_err());
    assert!(matches!(
        s.feed_greedy(&[1, v as u32]),
        Err(ModelError::Token { .. })
    ));
    assert_eq!(s.n_past(), before);
}
