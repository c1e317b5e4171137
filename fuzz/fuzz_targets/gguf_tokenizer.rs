//! The tokenizer loader on the metadata of arbitrary GGUF bytes; when it
//! loads, encoding and decoding a short text must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mamba_gguf::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    if let Ok(tok) = Tokenizer::from_gguf(&f) {
        if let Ok(ids) = tok.encode("Hello, world! 123 é", tok.add_bos()) {
            let _ = tok.decode(&ids);
        }
    }
});
