//! The GGUF reader on arbitrary bytes: an error or a file whose every
//! metadata value, tensor info and tensor data slice can be read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) {
        for (k, v) in f.metadata() {
            let _ = (k.len(), format!("{v:?}").len());
        }
        for t in f.tensors() {
            let d = f.tensor_data(t);
            assert_eq!(d.len() as u64, t.n_bytes as u64);
        }
    }
});
