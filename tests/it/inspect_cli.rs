//! `mamba-gguf inspect` on a gguf-py-written fixture, on llama.cpp's Falcon
//! vocab GGUF (when present beside the repo) and on damaged files. Expected
//! values come from the fixture's JSON (written by make_fixture.py from what
//! it put in) and from the Falcon tokenizer, not from our own output.

use std::process::{Command, Output};

use crate::runtime_common::llamacpp_gguf;
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_mamba-gguf");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gguf/pywriter.gguf"
);
const FIXTURE_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gguf/pywriter.expected.json"
);
const FALCON_VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/vocab/ggml-vocab-falcon.gguf"
);

fn inspect(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("inspect")
        .args(args)
        .output()
        .expect("run mamba-gguf")
}

fn stdout_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn expected() -> Json {
    serde_json::from_str(&std::fs::read_to_string(FIXTURE_JSON).unwrap()).unwrap()
}

fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn text_output_of_gguf_py_fixture() {
    let out = stdout_ok(&inspect(&[FIXTURE]));
    let exp = expected();
    assert!(out.contains("GGUF v3"), "{out}");
    assert!(out.contains("alignment 32"), "{out}");
    assert!(out.contains("architecture: mamba"), "{out}");
    let n_keys = exp["metadata"].as_array().unwrap().len();
    assert!(out.contains(&format!("metadata ({n_keys} keys)")), "{out}");
    assert!(
        out.contains(r#"[string; 4]      ["<|endoftext|>", ">>ABSTRACT<<", "Ġthe", ""]"#),
        "{out}"
    );
    assert!(out.contains("18446744073709551615"), "{out}");
    assert!(out.contains(r#""héllo → 世界 🙂""#), "{out}");
    // The chat template is long: shown cut, with its full length.
    let template = exp["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "tokenizer.chat_template")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(template.chars().count() > 160);
    assert!(
        out.contains(&format!("({} bytes, 160 chars shown", template.len())),
        "{out}"
    );
    assert!(!out.contains(&template[..]));

    let tensors = exp["tensors"].as_array().unwrap();
    assert!(
        out.contains(&format!("tensors ({}):", tensors.len())),
        "{out}"
    );
    let (mut params, mut bytes) = (0u64, 0u64);
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let dims: Vec<String> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect();
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"));
        let dims = format!("{{{}}}", dims.join(", "));
        assert!(line.contains(&dims), "{line} lacks {dims}");
        assert!(line.contains(t["type"].as_str().unwrap()), "{line}");
        let n_bytes = t["n_bytes"].as_u64().unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[cols.len() - 2], grouped(n_bytes), "{line}");
        assert_eq!(
            cols[cols.len() - 1],
            grouped(t["offset"].as_u64().unwrap()),
            "{line}"
        );
        params += t["n_elements"].as_u64().unwrap();
        bytes += n_bytes;
    }
    let totals = format!(
        "totals: {} tensors, {} parameters, {} bytes of tensor data",
        tensors.len(),
        grouped(params),
        grouped(bytes)
    );
    assert!(out.contains(&totals), "{out}\nlacks {totals}");
    let bpw = format!("{:.2} bits per weight", bytes as f64 * 8.0 / params as f64);
    assert!(out.contains(&bpw), "{out}\nlacks {bpw}");
}

#[test]
fn json_output_of_gguf_py_fixture() {
    let out = stdout_ok(&inspect(&[FIXTURE, "--json"]));
    let j: Json = serde_json::from_str(&out).expect("one JSON object");
    let exp = expected();
    assert_eq!(j["version"], 3);
    assert_eq!(j["alignment"], exp["alignment"]);
    assert_eq!(j["architecture"], "mamba");
    let md = j["metadata"].as_array().unwrap();
    let emd = exp["metadata"].as_array().unwrap();
    assert_eq!(md.len(), emd.len());
    for (m, e) in md.iter().zip(emd) {
        assert_eq!(m["key"], e["key"]);
        assert_eq!(m["type"], e["type"], "{}", e["key"]);
    }
    let find = |k: &str| md.iter().find(|m| m["key"] == k).unwrap().clone();
    assert_eq!(find("t.u64")["value"], u64::MAX);
    assert_eq!(find("t.f32")["value"], 1e-5);
    assert_eq!(find("t.arr.string")["len"], 4);
    assert_eq!(find("t.arr.string")["items"][2], "Ġthe");
    let nested = find("t.arr.nested");
    assert_eq!(nested["elem_type"], "array");
    assert_eq!(nested["items"][1]["items"][1], "bc");
    let tmpl = find("tokenizer.chat_template");
    assert_eq!(tmpl["truncated"], true);
    let full_len = emd
        .iter()
        .find(|m| m["key"] == "tokenizer.chat_template")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(tmpl["len"], full_len);

    let ts = j["tensors"].as_array().unwrap();
    let ets = exp["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), ets.len());
    let mut params = 0;
    for (t, e) in ts.iter().zip(ets) {
        for k in ["name", "dims", "type", "n_elements", "n_bytes", "offset"] {
            assert_eq!(t[k], e[k], "{} {k}", e["name"]);
        }
        params += e["n_elements"].as_u64().unwrap();
    }
    assert_eq!(j["totals"]["n_parameters"], params);
    assert_eq!(j["totals"]["n_tensors"], ets.len());

    // --full shows everything.
    let out = stdout_ok(&inspect(&[FIXTURE, "--json", "--full"]));
    let j: Json = serde_json::from_str(&out).unwrap();
    let md = j["metadata"].as_array().unwrap();
    let tmpl = md
        .iter()
        .find(|m| m["key"] == "tokenizer.chat_template")
        .unwrap();
    assert!(tmpl.get("truncated").is_none());
    assert_eq!(tmpl["value"].as_str().unwrap().len(), full_len);
}

/// llama.cpp's vocab-only Falcon GGUF: 65024 tokens starting `>>TITLE<<`,
/// `>>ABSTRACT<<` (the Falcon tokenizer's special tokens), no tensors.
#[test]
fn falcon_vocab_file() {
    let out = stdout_ok(&inspect(&[FALCON_VOCAB]));
    let tokens_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("tokenizer.ggml.tokens "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(tokens_line.contains("[string; 65024]"), "{tokens_line}");
    assert!(
        tokens_line.contains(r#"[">>TITLE<<", ">>ABSTRACT<<","#),
        "{tokens_line}"
    );
    assert!(tokens_line.contains("... 65016 more]"), "{tokens_line}");
    assert!(tokens_line.len() < 400, "{tokens_line}");
    assert!(out.contains(r#""falcon""#), "{out}");
    assert!(out.contains("tensors (0):"), "{out}");
    assert!(out.contains("0 parameters"), "{out}");
    // No line is enormous: the merges are summarised too.
    assert!(out.lines().all(|l| l.len() < 1000));

    let j: Json = serde_json::from_str(&stdout_ok(&inspect(&[FALCON_VOCAB, "--json"]))).unwrap();
    let md = j["metadata"].as_array().unwrap();
    let tokens = md
        .iter()
        .find(|m| m["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens["len"], 65024);
    assert_eq!(tokens["items"][0], ">>TITLE<<");
    assert_eq!(tokens["items"].as_array().unwrap().len(), 8);
    assert_eq!(j["tensors"].as_array().unwrap().len(), 0);
}

#[test]
fn damaged_or_missing_file_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(FIXTURE).unwrap();
    let cut = dir.path().join("cut-short.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let o = inspect(&[cut.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("cut-short.gguf"), "{err}");
    assert!(
        err.contains("past the end") || err.contains("truncated"),
        "{err}"
    );

    let mut bad = full.clone();
    bad[4] = 9; // version 9
    let badv = dir.path().join("bad-version.gguf");
    std::fs::write(&badv, &bad).unwrap();
    let o = inspect(&[badv.to_str().unwrap(), "--json"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad-version.gguf") && err.contains("version 9"),
        "{err}"
    );

    let missing = dir.path().join("no-such.gguf");
    let o = inspect(&[missing.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such.gguf") && err.contains("cannot open"),
        "{err}"
    );
}

/// llama.cpp's own F32 file of the falcon-mamba-tiny fixture: Falcon Mamba by
/// its `mamba.ssm.dt_b_c_rms` key, no checkpoint of models.toml, and its 2^20
/// context placeholder is not a warning for an unknown model.
#[test]
fn names_the_family_of_a_llama_cpp_file() {
    let path = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let f = path.to_str().unwrap();
    let out = stdout_ok(&inspect(&[f]));
    assert!(
        out.contains("family: falcon-mamba (from mamba.ssm.dt_b_c_rms)"),
        "{out}"
    );
    assert!(out.contains("known model: none in models.toml"), "{out}");
    let j: Json = serde_json::from_str(&stdout_ok(&inspect(&[f, "--json"]))).unwrap();
    assert_eq!(j["model"]["family"], "falcon-mamba");
    assert_eq!(j["model"]["family_from_key"], true);
    assert!(j["model"]["known"].is_null());
    // A vocab-only file of another architecture has no model section.
    let j: Json = serde_json::from_str(&stdout_ok(&inspect(&[FALCON_VOCAB, "--json"]))).unwrap();
    assert!(j["model"].is_null(), "{}", j["model"]);
}
