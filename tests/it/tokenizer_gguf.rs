//! Building the tokenizer from GGUF keys: the HF JSON is preferred when
//! present, the special-id keys are read and checked, and bad tokenizer
//! metadata gives an error naming the key. Files are made from the real
//! Falcon vocabulary (tests/fixtures/vocab/ggml-vocab-falcon.gguf) with keys changed.

use gguf::{Array, GgufFile, Value};
use mamba_gguf::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

const VOCAB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vocab/");

fn base_metadata() -> Vec<(String, Value)> {
    let f = GgufFile::open(format!("{VOCAB_DIR}ggml-vocab-falcon.gguf")).expect("open vocab");
    f.metadata().to_vec()
}

fn set(md: &mut Vec<(String, Value)>, key: &str, v: Value) {
    md.retain(|(k, _)| k != key);
    md.push((key.to_string(), v));
}

fn remove(md: &mut Vec<(String, Value)>, key: &str) {
    md.retain(|(k, _)| k != key);
}

fn build(md: &[(String, Value)]) -> (tempfile::TempDir, GgufFile) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.gguf");
    gguf::write_file(&p, md, &[]).expect("write gguf");
    let f = GgufFile::open(&p).expect("reopen");
    (dir, f)
}

fn hf_json() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hf/falcon-mamba-tiny/tokenizer.json"
    ))
    .expect("read tokenizer.json")
}

fn err_text(md: &[(String, Value)]) -> String {
    let (_d, f) = build(md);
    match Tokenizer::from_gguf(&f) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hf_json_is_preferred_and_special_keys_are_read() {
    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.huggingface.json",
        Value::String(hf_json()),
    );
    set(
        &mut md,
        "tokenizer.chat_template",
        Value::String("{{ x }}".into()),
    );
    set(
        &mut md,
        "tokenizer.ggml.eos_token_ids",
        Value::Array(Array::U32(vec![5, 11])),
    );
    set(&mut md, "tokenizer.ggml.eot_token_id", Value::U32(6));
    set(&mut md, "tokenizer.ggml.add_bos_token", Value::Bool(true));
    let (_d, f) = build(&md);

    let hf = Tokenizer::from_gguf(&f).expect("tokenizer");
    assert!(hf.is_hf());
    let vocab = Tokenizer::from_gguf_vocab(&f).expect("tokenizer");
    assert!(!vocab.is_hf());
    for t in [&hf, &vocab] {
        assert_eq!(t.eos_ids(), [5, 11, 6]);
        assert_eq!(t.bos_id(), Some(11));
        assert!(t.add_bos());
        assert_eq!(t.chat_template(), Some("{{ x }}"));
        assert_eq!(t.vocab_size(), 65024);
    }
    // Same ids both ways, BOS first; "Hello world" is llama.cpp case 30
    // (ids 9856 1079 in its .out).
    let a = hf.encode("Hello world", true).expect("encode");
    assert_eq!(a, [11, 9856, 1079]);
    assert_eq!(vocab.encode("Hello world", true).expect("encode"), a);
}

#[test]
fn streaming_the_real_vocab_never_splits_a_character() {
    let f = GgufFile::open(format!("{VOCAB_DIR}ggml-vocab-falcon.gguf")).expect("open");
    let t = Tokenizer::from_gguf(&f).expect("tokenizer");
    let text = " this is 🦙.cpp 中文 🚀<|endoftext|>x";
    let ids = t.encode(text, false).expect("encode");
    let mut d = StreamDecoder::new();
    let mut parts: Vec<String> = ids.iter().map(|&id| d.push(&t, id)).collect();
    parts.push(d.flush());
    assert!(parts.iter().all(|p| !p.contains('\u{FFFD}')), "{parts:?}");
    assert_eq!(parts.concat(), text);
    // The llama is F0 9F A6 99 and comes in more than one token, so some
    // push returned nothing while the character was incomplete.
    assert!(parts.iter().any(String::is_empty));
}

#[test]
fn bad_metadata_names_the_key() {
    let mut md = base_metadata();
    remove(&mut md, "tokenizer.ggml.tokens");
    assert!(err_text(&md).contains("tokenizer.ggml.tokens"));

    let mut md = base_metadata();
    set(&mut md, "tokenizer.ggml.tokens", Value::U32(3));
    let e = err_text(&md);
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("array of strings"),
        "{e}"
    );

    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.ggml.model",
        Value::String("llama".into()),
    );
    assert!(err_text(&md).contains("'llama'"));

    let mut md = base_metadata();
    set(&mut md, "tokenizer.ggml.pre", Value::String("qwen2".into()));
    assert!(err_text(&md).contains("qwen2"));

    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; 10])),
    );
    let e = err_text(&md);
    assert!(
        e.contains("tokenizer.ggml.token_type") && e.contains("10 entries"),
        "{e}"
    );

    let mut md = base_metadata();
    set(&mut md, "tokenizer.ggml.bos_token_id", Value::U32(70_000));
    let e = err_text(&md);
    assert!(
        e.contains("tokenizer.ggml.bos_token_id") && e.contains("70000"),
        "{e}"
    );

    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.ggml.eom_token_id",
        Value::String("x".into()),
    );
    assert!(err_text(&md).contains("tokenizer.ggml.eom_token_id"));

    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.ggml.merges",
        Value::Array(Array::String(vec!["nospace".into()])),
    );
    assert!(err_text(&md).contains("tokenizer.ggml.merges[0]"));

    let mut md = base_metadata();
    set(
        &mut md,
        "tokenizer.huggingface.json",
        Value::String("{not json".into()),
    );
    let (_d, f) = build(&md);
    assert!(matches!(
        Tokenizer::from_gguf(&f),
        Err(TokenizerError::HfJson(_))
    ));
    // The vocabulary path ignores the broken JSON.
    assert!(Tokenizer::from_gguf_vocab(&f).is_ok());
}

/// A file models.toml knows (by general.name) gets the known stop ids and
/// chat template where it lacks them; an unknown one is left as it is.
#[test]
fn known_model_fills_in_stop_ids_and_template() {
    let mut md = base_metadata();
    set(
        &mut md,
        "general.architecture",
        Value::String("mamba".into()),
    );
    remove(&mut md, "tokenizer.chat_template");
    remove(&mut md, "tokenizer.ggml.eos_token_ids");
    set(&mut md, "tokenizer.ggml.eos_token_id", Value::U32(11));
    set(
        &mut md,
        "general.name",
        Value::String("Falcon Mamba 7B Instruct".into()),
    );
    let (_d, f) = build(&md);
    let plain = Tokenizer::from_gguf(&f).unwrap();
    assert!(plain.eos_ids().contains(&11) && !plain.eos_ids().contains(&10));
    assert!(plain.chat_template().is_none());
    let tok = Tokenizer::from_model_file(&f).unwrap();
    let mut want = plain.eos_ids().to_vec();
    want.push(10);
    assert_eq!(tok.eos_ids(), &want[..]);
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));

    set(
        &mut md,
        "general.name",
        Value::String("Some Other Model".into()),
    );
    let (_d, f) = build(&md);
    let tok = Tokenizer::from_model_file(&f).unwrap();
    assert_eq!(tok.eos_ids(), plain.eos_ids());
    assert!(tok.chat_template().is_none());
}
