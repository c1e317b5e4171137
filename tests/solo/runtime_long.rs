//! 100,000 tokens through a small random Falcon Mamba: the logits stay finite
//! and the process's resident memory stays flat (the state is fixed-size and
//! the session allocates nothing per token). Memory is read from
//! /proc/self/status (VmRSS) inside the test; nothing is timed. It runs in
//! tests/solo, one test at a time, so no other test allocates in the
//! process meanwhile.

use crate::runtime_common::tempdir;
use gguf::{GgmlType, TensorSpec, Value};
use mamba_gguf::{procmem, Model, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D: usize = 32;
const E: usize = 64;
const N: usize = 16;
const R: usize = 4;
const K: usize = 4;
const V: usize = 256;
const LAYERS: usize = 2;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a random-weight Falcon Mamba GGUF with Mamba's usual init scales:
/// matrices N(0, 1/fan_in), A_log = ln(1..=N), dt bias giving dt in
/// [0.001, 0.1], D = 1.
fn write_model(path: &std::path::Path) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut mat = |rows: usize, cols: usize| -> Vec<f32> {
        let s = (3.0 / cols as f32).sqrt();
        (0..rows * cols).map(|_| rng.gen_range(-s..s)).collect()
    };
    let mut t: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, v: Vec<f32>| {
        t.push((TensorSpec::new(name, dims, GgmlType::F32), f32_bytes(&v)));
    };
    add(
        "token_embd.weight".into(),
        vec![D as u64, V as u64],
        mat(V, D),
    );
    for l in 0..LAYERS {
        let b = |s: &str| format!("blk.{l}.{s}");
        add(b("attn_norm.weight"), vec![D as u64], vec![1.0; D]);
        add(
            b("ssm_in.weight"),
            vec![D as u64, 2 * E as u64],
            mat(2 * E, D),
        );
        add(b("ssm_conv1d.weight"), vec![K as u64, E as u64], mat(E, K));
        add(b("ssm_conv1d.bias"), vec![E as u64], vec![0.0; E]);
        add(
            b("ssm_x.weight"),
            vec![E as u64, (R + 2 * N) as u64],
            mat(R + 2 * N, E),
        );
        add(b("ssm_dt.weight"), vec![R as u64, E as u64], mat(E, R));
        let dt_bias: Vec<f32> = (0..E)
            .map(|e| {
                let dt =
                    (0.001f32.ln() + (0.1f32.ln() - 0.001f32.ln()) * e as f32 / E as f32).exp();
                dt + (-(-dt).exp_m1()).ln() // inverse softplus
            })
            .collect();
        add(b("ssm_dt.bias"), vec![E as u64], dt_bias);
        let a: Vec<f32> = (0..E * N).map(|i| -((i % N + 1) as f32)).collect();
        add(b("ssm_a"), vec![N as u64, E as u64], a);
        add(b("ssm_d"), vec![E as u64], vec![1.0; E]);
        add(b("ssm_out.weight"), vec![E as u64, D as u64], mat(D, E));
    }
    add("output_norm.weight".into(), vec![D as u64], vec![1.0; D]);
    add("output.weight".into(), vec![D as u64, V as u64], mat(V, D));
    let u = |k: &str, v: usize| (format!("mamba.{k}"), Value::U32(v as u32));
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("mamba".into()),
        ),
        u("embedding_length", D),
        u("block_count", LAYERS),
        u("ssm.inner_size", E),
        u("ssm.state_size", N),
        u("ssm.conv_kernel", K),
        u("ssm.time_step_rank", R),
        (
            "mamba.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("mamba.ssm.dt_b_c_rms".into(), Value::Bool(true)),
        ("mamba.ssm.dt_b_c_rms_eps".into(), Value::F32(1e-6)),
    ];
    let refs: Vec<(TensorSpec, &[u8])> = t.iter().map(|(s, b)| (s.clone(), &b[..])).collect();
    gguf::write_file(path, &meta, &refs).expect("write model");
}

pub fn hundred_thousand_tokens_finite_logits_and_flat_memory() {
    let dir = tempdir();
    let path = dir.path().join("long.gguf");
    write_model(&path);
    let model = Model::load(&path).expect("load");
    let mut s = Session::new(&model);
    let state_bytes = s.state().expect("state").bytes();
    assert_eq!(state_bytes, LAYERS * ((K - 1) * E + E * N) * 4);
    let mut rng = StdRng::seed_from_u64(1);
    let mut ids = vec![0u32; 1000];
    let mut rss_after_warmup = 0;
    let mut max_abs = 0f32;
    for step in 0..100 {
        for x in ids.iter_mut() {
            *x = rng.gen_range(0..V as u32);
        }
        let logits = s.feed(&ids).expect("feed");
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "non-finite logits after {} tokens",
            s.n_past()
        );
        max_abs = logits.iter().fold(max_abs, |m, v| m.max(v.abs()));
        // Decode path too: a few single tokens.
        for &t in &ids[..8] {
            let l = s.feed(&[t]).expect("decode");
            assert!(l.iter().all(|v| v.is_finite()));
        }
        assert!(s
            .state()
            .expect("state")
            .layers
            .iter()
            .all(|l| l.ssm.iter().all(|v| v.is_finite())));
        if step == 9 {
            rss_after_warmup = procmem::rss_kib().expect("VmRSS");
        }
    }
    assert_eq!(s.n_past(), 100 * 1008);
    assert_eq!(s.state().expect("state").bytes(), state_bytes);
    let rss_end = procmem::rss_kib().expect("VmRSS");
    eprintln!(
        "{} tokens: VmRSS {rss_after_warmup} KiB after 10k, {rss_end} KiB at the end; max |logit| {max_abs}",
        s.n_past()
    );
    // Flat: growth over 90k tokens under 1 MiB (a per-token leak of even
    // 16 bytes would show 1.4 MiB).
    assert!(
        rss_end <= rss_after_warmup + 1024,
        "VmRSS grew from {rss_after_warmup} to {rss_end} KiB"
    );
}
