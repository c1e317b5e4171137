//! convert's JSON inputs: the first byte picks the file, the rest is its text.
//! Even: config.json (read_config, then the checks on the result). Odd:
//! tokenizer_config.json beside the small fixture's config.json and
//! tokenizer.json (read_vocab). Errors are fine; panics are not.
#![no_main]
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use convert::config::{read_config, FalconHints};
use convert::known::Models;
use libfuzzer_sys::fuzz_target;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/falcon-mamba-small-bf16")
}

/// Two scratch folders for this process: one for config.json, one with the
/// fixture's config.json and tokenizer.json for tokenizer_config.json.
fn dirs() -> &'static (PathBuf, PathBuf) {
    static D: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    D.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("mamba-fuzz-config-{}", std::process::id()));
        let (a, b) = (base.join("cfg"), base.join("tok"));
        std::fs::create_dir_all(&a).expect("scratch folder");
        std::fs::create_dir_all(&b).expect("scratch folder");
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(fixture().join(f), b.join(f)).expect("fixture copy");
        }
        (a, b)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let (cfg_dir, tok_dir) = dirs();
    // Parsed once: models.toml is ours, not input.
    static KNOWN: OnceLock<Models> = OnceLock::new();
    let known = KNOWN.get_or_init(Models::builtin);
    let hints = FalconHints::default();
    if sel % 2 == 0 {
        std::fs::write(cfg_dir.join("config.json"), text).expect("scratch write");
        if let Ok(hp) = read_config(cfg_dir, known, &hints, None, &mut |_| {}) {
            hp.check_known(&mut |_| {});
            let _ = hp.padded_vocab();
        }
    } else {
        std::fs::write(tok_dir.join("tokenizer_config.json"), text).expect("scratch write");
        let hp = read_config(tok_dir, known, &hints, None, &mut |_| {})
            .expect("the fixture's config.json reads");
        let _ = convert::vocab::read_vocab(tok_dir, &hp);
    }
});
