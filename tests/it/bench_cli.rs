//! `mamba-gguf bench` on llama.cpp's own tiny Q4_K_M Falcon Mamba GGUF: the
//! JSON shape (llama-bench's field names), one pp and one tg record per depth,
//! positive finite figures consistent with their samples, the SVG plot, and
//! clear errors on bad arguments. No timing is asserted.

use std::process::{Command, Output};

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_mamba-gguf");
const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/llamacpp/falcon-mamba-tiny-q4_k_m.gguf"
);

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .expect("run mamba-gguf")
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn num(r: &Json, k: &str) -> f64 {
    r.get(k)
        .and_then(Json::as_f64)
        .unwrap_or_else(|| panic!("field {k} missing or not a number in {r}"))
}

fn check_record(r: &Json, reps: usize) {
    for k in ["model_filename", "model_type"] {
        assert!(
            r.get(k)
                .and_then(Json::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{k} in {r}"
        );
    }
    // llama.cpp wrote this file with general.file_type = MOSTLY_Q4_K_M.
    let ty = r["model_type"].as_str().unwrap_or_default();
    assert!(
        ty.starts_with("mamba ") && ty.ends_with("Q4_K - Medium"),
        "model_type {ty}"
    );
    assert_eq!(num(r, "n_threads"), 1.0);
    for k in [
        "avg_ts",
        "peak_rss_bytes",
        "model_size",
        "model_n_params",
        "avg_ns",
    ] {
        let v = num(r, k);
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    let sd = num(r, "stddev_ts");
    assert!(sd.is_finite() && sd >= 0.0);
    let samples: Vec<f64> = r["samples_ts"]
        .as_array()
        .expect("samples_ts array")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    assert_eq!(samples.len(), reps);
    assert!(samples.iter().all(|v| v.is_finite() && *v > 0.0));
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    assert!((mean - num(r, "avg_ts")).abs() <= 1e-9 * mean.max(1.0));
    let ns = r["samples_ns"].as_array().expect("samples_ns array");
    assert_eq!(ns.len(), reps);
    // tokens/s and ns agree: ts = tokens * 1e9 / ns for each sample, the
    // tokens of every parallel sequence counted.
    let tokens = num(r, "n_parallel") * (num(r, "n_prompt") + num(r, "n_gen"));
    for (t, n) in samples.iter().zip(ns) {
        let n = n.as_f64().expect("number");
        assert!((t - tokens * 1e9 / n).abs() <= 1e-6 * t, "{t} vs {n} ns");
    }
}

#[test]
fn json_records_have_llama_bench_fields() {
    let o = bench(&[
        "-m", TINY, "-p", "8", "-n", "4", "-r", "1", "-t", "1", "--json",
    ]);
    let v: Json = serde_json::from_str(&ok_stdout(&o)).expect("JSON output");
    let recs = v.as_array().expect("a JSON array");
    assert_eq!(recs.len(), 2, "one pp and one tg record: {v}");
    let (pp, tg) = (&recs[0], &recs[1]);
    for r in [pp, tg] {
        assert_eq!(r["backends"], "CPU", "{r}");
        assert!(r["devices"].as_str().is_some_and(|d| d.starts_with("CPU")));
    }
    assert_eq!(
        (num(pp, "n_prompt"), num(pp, "n_gen"), num(pp, "n_depth")),
        (8.0, 0.0, 0.0)
    );
    assert_eq!(
        (num(tg, "n_prompt"), num(tg, "n_gen"), num(tg, "n_depth")),
        (0.0, 4.0, 0.0)
    );
    for r in recs {
        check_record(r, 1);
        assert_eq!(r["model_filename"].as_str(), Some(TINY));
    }
}

#[test]
fn depths_repetitions_and_plot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("depth.svg");
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "4",
        "-n",
        "3",
        "-r",
        "2",
        "-t",
        "1",
        "--prefill-chunk",
        "3",
        "--depth",
        "0,5,20",
        "--real-depth-max",
        "5",
        "--json",
        "--plot",
        svg.to_str().expect("UTF-8 path"),
    ]);
    let v: Json = serde_json::from_str(&ok_stdout(&o)).expect("JSON output");
    let recs = v.as_array().expect("a JSON array");
    assert_eq!(recs.len(), 6);
    for (i, (d, fed)) in [(0.0, 0.0), (5.0, 5.0), (20.0, 5.0)]
        .into_iter()
        .enumerate()
    {
        for r in &recs[2 * i..2 * i + 2] {
            check_record(r, 2);
            assert_eq!(num(r, "n_depth"), d);
            assert_eq!(
                num(r, "depth_prefilled"),
                fed,
                "depth above --real-depth-max reuses 5 real tokens"
            );
            assert_eq!(num(r, "n_ubatch"), 3.0);
        }
    }
    let text = std::fs::read_to_string(&svg).expect("plot written");
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<polyline").count(), 2, "tg and RSS series");
    // three depth markers per series
    assert_eq!(text.matches("<circle").count(), 6);
}

#[test]
fn parallel_sequences_are_one_tg_record_each() {
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "4",
        "-n",
        "3",
        "-r",
        "2",
        "-t",
        "1",
        "--parallel",
        "1,3",
        "--json",
    ]);
    let v: Json = serde_json::from_str(&ok_stdout(&o)).expect("JSON output");
    let recs = v.as_array().expect("a JSON array");
    assert_eq!(recs.len(), 3, "pp, tg, tg x3: {v}");
    let shape: Vec<(f64, f64, f64)> = recs
        .iter()
        .map(|r| (num(r, "n_prompt"), num(r, "n_gen"), num(r, "n_parallel")))
        .collect();
    assert_eq!(shape, [(4.0, 0.0, 1.0), (0.0, 3.0, 1.0), (0.0, 3.0, 3.0)]);
    for r in recs {
        check_record(r, 2);
        assert_eq!(r["host_argmax"], false, "{r}");
    }
    // --host-argmax: the tg records say the logits came to the host.
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--parallel",
        "1,2",
        "--host-argmax",
        "--json",
    ]);
    let v: Json = serde_json::from_str(&ok_stdout(&o)).expect("JSON output");
    let recs = v.as_array().expect("a JSON array");
    assert_eq!(recs.len(), 2, "{v}");
    for r in recs {
        check_record(r, 1);
        assert_eq!(r["host_argmax"], true, "{r}");
    }
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--parallel",
        "2",
    ]);
    let out = ok_stdout(&o);
    assert!(out.lines().any(|l| l.contains("tg2 x2")), "{out}");
}

#[test]
fn table_output_lists_each_test() {
    let o = bench(&["-m", TINY, "-p", "4", "-n", "2", "-r", "1", "-t", "1"]);
    let out = ok_stdout(&o);
    assert!(out.contains("| model"), "{out}");
    assert!(out.lines().any(|l| l.contains("pp4")), "{out}");
    assert!(out.lines().any(|l| l.contains("tg2")), "{out}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    for (args, needle) in [
        (vec!["-m", TINY, "-t", "0"], "threads"),
        (vec!["-m", TINY, "-p", "0", "-n", "0"], "nothing to measure"),
        (vec!["-m", TINY, "-r", "0"], "repetitions"),
        (vec!["-m", TINY, "--prefill-chunk", "0"], "prefill-chunk"),
        (vec!["-m", TINY, "--parallel", "2,0"], "--parallel"),
        (vec!["-m", "/nonexistent/x.gguf"], "/nonexistent/x.gguf"),
    ] {
        let o = bench(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: stderr {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn profile_accounts_for_every_op_and_the_weights_read() {
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "0",
        "-n",
        "3",
        "-r",
        "2",
        "-t",
        "1",
        "--profile",
        "--json",
    ]);
    let recs: Vec<Json> = serde_json::from_str(&ok_stdout(&o)).expect("JSON array");
    let p = &recs[0]["profile"];
    assert_eq!(num(p, "tokens"), 6.0, "{p}");
    // The matmul weights, as the file holds them: what one decode step
    // must read (the head is output.weight, or the tied embedding).
    let f = gguf::GgufFile::open(TINY).expect("open the fixture");
    let bytes = |pred: &dyn Fn(&str) -> bool| -> f64 {
        f.tensors()
            .iter()
            .filter(|t| pred(&t.name))
            .map(|t| t.n_bytes as f64)
            .sum()
    };
    let n_layer = f
        .tensors()
        .iter()
        .filter(|t| t.name.ends_with(".ssm_in.weight"))
        .count() as f64;
    let mut head = bytes(&|n| n == "output.weight");
    if head == 0.0 {
        head = bytes(&|n| n == "token_embd.weight");
    }
    let matmuls = bytes(&|n| {
        [
            ".ssm_in.weight",
            ".ssm_x.weight",
            ".ssm_dt.weight",
            ".ssm_out.weight",
        ]
        .iter()
        .any(|s| n.ends_with(s))
    });
    assert_eq!(num(p, "weight_bytes_per_token"), matmuls + head, "{p}");
    let ops = p["ops"].as_array().expect("ops");
    let op = |name: &str| {
        ops.iter()
            .find(|o| o["op"] == name)
            .unwrap_or_else(|| panic!("no {name} in {p}"))
    };
    for name in [
        "rms_norm", "in_proj", "conv", "x_proj", "dt_proj", "scan", "out_proj",
    ] {
        assert_eq!(num(op(name), "calls_per_token"), n_layer, "{name}");
    }
    assert_eq!(num(op("head"), "calls_per_token"), 1.0);
    for name in ["in_proj", "x_proj", "dt_proj", "out_proj", "head"] {
        assert!(num(op(name), "weight_gbs") > 0.0, "{name} in {p}");
    }
    assert!(op("scan").get("weight_gbs").is_none(), "{p}");
    // The ops and what lies outside them make up the step.
    let inside: f64 = ops.iter().map(|o| num(o, "ns_per_token")).sum();
    let whole = num(p, "ns_per_token");
    let outside = num(p, "outside_ns_per_token");
    assert!(
        (inside + outside - whole).abs() <= 1e-6 * whole + 1.0,
        "{p}"
    );
    assert!(inside <= whole * 1.0001, "{p}");
    assert!(num(p, "read_loop_gbs") > 0.0, "{p}");

    // As a table under the results, and refused where ops are only queued.
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--profile",
    ]);
    let out = ok_stdout(&o);
    assert!(out.contains("| in_proj | "), "{out}");
    assert!(out.contains("% of the read loop's"), "{out}");
    let o = bench(&[
        "-m",
        TINY,
        "-p",
        "0",
        "-n",
        "2",
        "--profile",
        "--device",
        "cuda-emu",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--profile") && !err.contains("panicked"),
        "{err}"
    );
}
