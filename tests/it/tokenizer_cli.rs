//! `mamba-gguf tokenize` on the vocab-only Falcon GGUF, checked against
//! llama.cpp's tokenizer test data (tests/fixtures/vocab/ggml-vocab-falcon.gguf.*).

use std::process::Command;

const VOCAB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vocab/");

fn vocab() -> String {
    format!("{VOCAB_DIR}ggml-vocab-falcon.gguf")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
}

/// (text, llama.cpp ids) for the cases whose text satisfies `pick`.
fn llama_cases(pick: impl Fn(&str) -> bool) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{VOCAB_DIR}ggml-vocab-falcon.gguf.inp"))
        .expect("read .inp");
    let out = std::fs::read_to_string(format!("{VOCAB_DIR}ggml-vocab-falcon.gguf.out"))
        .expect("read .out");
    let inp = inp.strip_suffix("\n__ggml_vocab_test__\n").unwrap_or(&inp);
    inp.split("\n__ggml_vocab_test__\n")
        .zip(out.lines())
        .filter(|(t, _)| pick(t))
        .map(|(t, l)| {
            let ids = l
                .split_whitespace()
                .map(|x| x.parse().expect("id"))
                .collect();
            (t.to_string(), ids)
        })
        .collect()
}

fn json_ids(stdout: &[u8]) -> (Vec<u32>, Vec<String>) {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("stdout is JSON");
    let ids = v["ids"]
        .as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    let pieces = v["pieces"]
        .as_array()
        .expect("pieces array")
        .iter()
        .map(|x| x.as_str().expect("piece").to_string())
        .collect();
    (ids, pieces)
}

#[test]
fn file_input_keeps_exact_bytes() {
    // Cases with leading/trailing whitespace and newlines: trimming would
    // change their ids.
    let cases = llama_cases(|t| {
        !t.is_empty() && (t.starts_with(' ') || t.ends_with('\n') || t.contains("\n\n"))
    });
    assert!(cases.len() >= 3, "expected whitespace cases in the data");
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("case{i}.txt"));
        std::fs::write(&f, text).expect("write case");
        let out = bin()
            .args(["tokenize", "-m", &vocab(), "--json", "-f"])
            .arg(&f)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ids, pieces) = json_ids(&out.stdout);
        assert_eq!(&ids, want, "text {text:?}");
        // Pieces are the tokens' text, a split character's bytes as <0xAB>.
        assert_eq!(unescape(&pieces.concat()), text.as_bytes(), "text {text:?}");
    }
}

/// Turns `<0xAB>` escapes back into bytes.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("<0x") {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let hex = &rest[i + 3..i + 5];
        assert_eq!(&rest[i + 5..i + 6], ">");
        out.push(u8::from_str_radix(hex, 16).expect("hex byte"));
        rest = &rest[i + 6..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

#[test]
fn prompt_input_and_bos() {
    let (text, want) = llama_cases(|t| t == "Hello world")
        .into_iter()
        .next()
        .expect("the 'Hello world' case");
    let out = bin()
        .args(["tokenize", "-m", &vocab(), "-p", &text, "--json", "--bos"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ids, pieces) = json_ids(&out.stdout);
    // Falcon's BOS is <|endoftext|> (id 11).
    assert_eq!(ids[0], 11);
    assert_eq!(ids[1..], want[..]);
    assert_eq!(pieces[0], "<|endoftext|>");

    // Plain output: one line per token, starting with its id.
    let out = bin()
        .args(["tokenize", "-m", &vocab(), "-p", &text])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<u32> = stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .expect("id")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn non_utf8_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("latin1.txt");
    std::fs::write(&f, b"caf\xe9\n").expect("write");
    let out = bin()
        .args(["tokenize", "-m", &vocab(), "-f"])
        .arg(&f)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("latin1.txt") && err.contains("UTF-8"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_arguments_fail() {
    // Neither -p nor -f.
    let out = bin()
        .args(["tokenize", "-m", &vocab()])
        .output()
        .expect("run");
    assert!(!out.status.success());
    // A model file that does not exist is named in the error.
    let out = bin()
        .args(["tokenize", "-m", "/nonexistent/x.gguf", "-p", "hi"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.gguf"));
}
