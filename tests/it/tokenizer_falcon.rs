//! The tokenizer against llama.cpp's own tokenizer test data for the Falcon
//! vocabulary (tests/fixtures/vocab/ggml-vocab-falcon.gguf + .inp/.out, from the
//! llama.cpp repository): every case must give llama.cpp's ids, through the
//! GGUF vocabulary and through the HF tokenizer.json of the same vocabulary.

use mamba_gguf::tokenizer::Tokenizer;

const VOCAB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vocab/");

fn path(name: &str) -> String {
    format!("{VOCAB_DIR}{name}")
}

/// The cases as llama.cpp's test-tokenizer-0 reads them: the .inp text split
/// on "\n__ggml_vocab_test__\n" (texts not trimmed), the .out lines trimmed
/// and split on spaces.
fn cases() -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(path("ggml-vocab-falcon.gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(path("ggml-vocab-falcon.gguf.out")).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                texts.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                texts.push(rest.to_string());
                rest = "";
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id in .out"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        ".inp and .out disagree on the case count"
    );
    texts.into_iter().zip(ids).collect()
}

fn gguf_tokenizer() -> Tokenizer {
    let f = gguf::GgufFile::open(path("ggml-vocab-falcon.gguf")).expect("open vocab gguf");
    Tokenizer::from_gguf_vocab(&f).expect("tokenizer from tokenizer.ggml.*")
}

fn hf_tokenizer() -> Tokenizer {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hf/falcon-mamba-tiny/tokenizer.json"
    ))
    .expect("read json");
    Tokenizer::from_hf_json(&json).expect("tokenizer from tokenizer.json")
}

fn check_all(tok: &Tokenizer, what: &str) {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "expected llama.cpp's ~46 cases, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false).expect("encode");
        if &got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn gguf_vocab_matches_llama_cpp_on_every_case() {
    check_all(&gguf_tokenizer(), "GGUF vocabulary");
}

#[test]
fn from_gguf_without_hf_json_uses_the_vocab() {
    let f = gguf::GgufFile::open(path("ggml-vocab-falcon.gguf")).expect("open vocab gguf");
    let t = Tokenizer::from_gguf(&f).expect("tokenizer");
    assert!(!t.is_hf());
    assert_eq!(t.vocab_size(), 65024);
    assert_eq!(t.bos_id(), Some(11));
    assert_eq!(t.eos_ids(), [11]);
    assert!(!t.add_bos());
    assert_eq!(t.chat_template(), None);
}

#[test]
fn hf_json_matches_llama_cpp_on_every_case() {
    check_all(&hf_tokenizer(), "HF tokenizer.json");
}

#[test]
fn decode_inverts_encode() {
    for tok in [gguf_tokenizer(), hf_tokenizer()] {
        for (text, _) in cases() {
            let ids = tok.encode(&text, false).expect("encode");
            assert_eq!(tok.decode(&ids), text, "hf={}", tok.is_hf());
        }
    }
}

#[test]
fn special_tokens_in_text_agree_between_paths() {
    // HF matches added tokens in the text; the GGUF path must do the same
    // for control tokens.
    let text = ">>TITLE<<Hello<|endoftext|> world>>ABSTRACT<< 123456 ok\n\n";
    let (g, h) = (gguf_tokenizer(), hf_tokenizer());
    let a = g.encode(text, false).expect("encode");
    let b = h.encode(text, false).expect("encode");
    assert_eq!(a, b);
    assert_eq!(a.first(), Some(&0));
    assert!(a.contains(&11) && a.contains(&1));
    assert_eq!(g.decode(&a), text);
    assert_eq!(g.encode(text, true).expect("encode").first(), Some(&11));
    for id in [0u32, 11, 500, 65023] {
        assert_eq!(g.token_bytes(id), h.token_bytes(id), "token {id}");
    }
}
