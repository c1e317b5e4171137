//! Reading real files written by other tools.

use gguf::{GgufFile, Value};

const FALCON_VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/vocab/ggml-vocab-falcon.gguf"
);

/// llama.cpp's vocab-only Falcon GGUF (committed under tests/fixtures/vocab).
/// Expected values are from the Falcon tokenizer itself: 65024
/// tokens, `<|endoftext|>` at 11, ids 0.. `>>TITLE<<`, `>>ABSTRACT<<`.
#[test]
fn reads_llama_cpp_falcon_vocab() {
    let f = GgufFile::open(FALCON_VOCAB).unwrap();
    assert_eq!(f.version(), 3);
    assert!(f.tensors().is_empty());
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "falcon");
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
    let tokens = tokens.as_strings().unwrap();
    assert_eq!(tokens.len(), 65024);
    assert_eq!(tokens[0], ">>TITLE<<");
    assert_eq!(tokens[1], ">>ABSTRACT<<");
    assert_eq!(tokens[11], "<|endoftext|>");
    let types = f.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.as_i32s().unwrap().len(), 65024);
    assert!(f.get_array("tokenizer.ggml.merges").unwrap().len() > 60000);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 11);
    assert!(matches!(
        f.get_u32("tokenizer.ggml.model"),
        Err(gguf::GgufError::WrongType { .. })
    ));
    assert!(f.get("no.such.key").is_none());
    assert_eq!(f.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(11)));
}
