//! convert's safetensors reading: arbitrary bytes as model.safetensors. An
//! error, or a checkpoint whose every tensor's bytes can be taken and
//! converted to f32.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use convert::checkpoint::{to_f32, Checkpoint};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mamba-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    std::fs::write(d.join("model.safetensors"), data).expect("scratch write");
    let Ok(ck) = Checkpoint::open(d) else {
        return;
    };
    let names: Vec<String> = ck.names().map(String::from).collect();
    for n in names.iter().take(8) {
        let e = ck.get(n).expect("a listed name has an entry");
        let b = ck.bytes(e);
        let n_el = e.n_elements().min(4096);
        let mut out = vec![0f32; n_el];
        let need = n_el * e.dtype.size();
        if b.len() >= need {
            to_f32(e.dtype, &b[..need], &mut out);
        }
    }
});
