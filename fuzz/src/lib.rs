//! The bodies of the fuzz targets, one function per target, so that the
//! same code is fuzzed by `fuzz_targets/<target>.rs` (cargo-fuzz, nightly)
//! and replayed over the committed seeds by the workspace's own tests
//! (`tests/it/fuzz_seeds.rs`, which includes this file by `#[path]`; so no
//! inner attributes here, and every path it needs comes from the caller).
//! A body returns on an error the input deserves and panics (the finding)
//! on a broken promise.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every target, by the name of its binary and of its seed folder
/// (`fuzz/seeds/<name>`).
pub const TARGETS: [&str; 8] = [
    "gguf_reader",
    "gguf_tokenizer",
    "state_file",
    "convert_config",
    "safetensors_header",
    "chat_template",
    "openai_request",
    "bnb_quant_state",
];

/// A scratch folder of this process for the targets that write their input
/// to a file: `<tmp>/mamba-fuzz-<tag>-<pid>`, made on the first call.
fn scratch(cell: &'static OnceLock<PathBuf>, tag: &str) -> &'static Path {
    cell.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mamba-fuzz-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

/// The GGUF reader on arbitrary bytes: an error or a file whose every
/// metadata value, tensor info and tensor data slice can be read.
pub fn gguf_reader(data: &[u8]) {
    if let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) {
        for (k, v) in f.metadata() {
            let _ = (k.len(), format!("{v:?}").len());
        }
        for t in f.tensors() {
            let d = f.tensor_data(t);
            assert_eq!(d.len() as u64, t.n_bytes as u64);
        }
    }
}

/// The tokenizer loader on the metadata of arbitrary GGUF bytes; when it
/// loads, encoding and decoding a short text must not panic.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    if let Ok(tok) = mamba_gguf::tokenizer::Tokenizer::from_gguf(&f) {
        if let Ok(ids) = tok.encode("Hello, world! 123 é", tok.add_bos()) {
            let _ = tok.decode(&ids);
        }
    }
}

/// The state-file reader on arbitrary bytes, for model `m` (the fuzz target
/// and the seeds use llama.cpp's falcon-mamba-tiny F32 file): an error, or
/// a snapshot a session of that model accepts.
pub fn state_file(m: &mamba_gguf::Model, data: &[u8]) {
    if let Ok((snap, _note)) = mamba_gguf::state_file::decode(m, data, "fuzz") {
        let mut s = mamba_gguf::Session::new(m);
        s.restore(&snap).expect("a decoded snapshot restores");
    }
}

/// convert's JSON inputs: the first byte picks the file, the rest is its
/// text. Even: config.json (read_config, then the checks on the result).
/// Odd: tokenizer_config.json beside `fixture`'s config.json and
/// tokenizer.json (read_vocab; the fuzz target and the seeds use
/// tests/fixtures/hf/falcon-mamba-small-bf16). Errors are fine; panics are
/// not.
pub fn convert_config(fixture: &Path, data: &[u8]) {
    use convert::config::{read_config, FalconHints};
    use convert::known::Models;

    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    // Made once per process: models.toml is ours, not input.
    static KNOWN: OnceLock<Models> = OnceLock::new();
    let known = KNOWN.get_or_init(Models::builtin);
    let hints = FalconHints::default();
    // Two folders: one for config.json, one with the fixture's config.json
    // and tokenizer.json (copied once) for tokenizer_config.json.
    static CFG: OnceLock<PathBuf> = OnceLock::new();
    static TOK: OnceLock<PathBuf> = OnceLock::new();
    if sel % 2 == 0 {
        let cfg_dir = scratch(&CFG, "config-cfg");
        std::fs::write(cfg_dir.join("config.json"), text).expect("scratch write");
        if let Ok(hp) = read_config(cfg_dir, known, &hints, None, &mut |_| {}) {
            hp.check_known(&mut |_| {});
            let _ = hp.padded_vocab();
        }
    } else {
        let fresh = TOK.get().is_none();
        let tok_dir = scratch(&TOK, "config-tok");
        if fresh {
            for f in ["config.json", "tokenizer.json"] {
                std::fs::copy(fixture.join(f), tok_dir.join(f)).expect("fixture copy");
            }
        }
        std::fs::write(tok_dir.join("tokenizer_config.json"), text).expect("scratch write");
        let hp = read_config(tok_dir, known, &hints, None, &mut |_| {})
            .expect("the fixture's config.json reads");
        let _ = convert::vocab::read_vocab(tok_dir, &hp);
    }
}

/// convert's safetensors reading: arbitrary bytes as model.safetensors. An
/// error, or a checkpoint whose every tensor's bytes can be taken and
/// converted to f32.
pub fn safetensors_header(data: &[u8]) {
    use convert::checkpoint::{to_f32, Checkpoint};

    static D: OnceLock<PathBuf> = OnceLock::new();
    let d = scratch(&D, "st");
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
}

/// Hostile chat templates: the input up to the first NUL is the template,
/// the rest are messages, one per line, `role<TAB>content`. Rendering must
/// end (fuel, recursion limit) with text or an error, never hang or panic.
pub fn chat_template(data: &[u8]) {
    use mamba_gguf::chat_template::{ChatTemplate, Message};

    let text = String::from_utf8_lossy(data);
    let (src, rest) = text.split_once('\0').unwrap_or((&text, "user\thello"));
    let msgs: Vec<Message> = rest
        .lines()
        .take(64)
        .map(|l| {
            let (r, c) = l.split_once('\t').unwrap_or(("user", l));
            Message::new(r, c)
        })
        .collect();
    if let Ok(t) = ChatTemplate::new(src, "<s>", "</s>") {
        let _ = t.render_with_boundaries(&msgs);
    }
}

/// The OpenAI request parser on arbitrary bodies: every field parser the
/// server runs (both endpoints), then ChatML rendering of parsed messages.
pub fn openai_request(data: &[u8]) {
    use mamba_gguf::chat_template::{ChatTemplate, CHATML};
    use mamba_gguf::server::api::{self, Limits, PromptIn};

    let Ok(m) = api::parse_object(data) else {
        return;
    };
    let limits = Limits {
        max_tokens: 4096,
        default_max_tokens: 128,
        vocab: 65024,
        max_n: 4,
    };
    for chat in [false, true] {
        let _ = api::check_fields(&m, chat);
        if let Ok(lp) = api::logprobs(&m, chat) {
            if let Ok(p) = api::gen_params(&m, &limits, lp) {
                assert!(p.max_tokens <= limits.max_tokens);
                assert!((1..=limits.max_n).contains(&p.n));
                assert!(p
                    .sampler
                    .logit_bias
                    .iter()
                    .all(|&(id, _)| (id as usize) < limits.vocab));
            }
        }
    }
    let _ = api::stream(&m);
    let _ = api::output_spec(&m);
    let _ = api::get_bool(&m, "return_tokens");
    if let Ok(ps) = api::prompts(&m, limits.vocab) {
        assert!(!ps.is_empty() && ps.len() <= api::MAX_PROMPTS);
        for p in &ps {
            if let PromptIn::Ids(ids) = p {
                assert!(!ids.is_empty());
                assert!(ids.iter().all(|&id| (id as usize) < limits.vocab));
            }
        }
    }
    if let Ok(msgs) = api::messages(&m) {
        let t = ChatTemplate::new(CHATML, "", "").expect("ChatML compiles");
        let _ = t.render_with_boundaries(&msgs);
    }
}

/// A safetensors file of (name, dtype, shape, bytes).
fn safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, raw) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                               "data_offsets": [data.len(), data.len() + raw.len()]}),
        );
        data.extend_from_slice(raw);
    }
    let h = serde_json::Value::Object(header).to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

fn f32s(n: usize, v: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (v + i as f32 * 0.25).to_le_bytes())
        .collect()
}

/// The bitsandbytes quant-state JSON and the tensors it describes: a
/// checkpoint with one 4-bit Linear whose `quant_state` bytes are the
/// input's tail, dequantized by `convert::bnb::dequantize`. An error, or
/// exactly rows x cols values; never a panic or an allocation beyond the
/// tensors.
///
/// Input: [rows-1] [cols-1] [flags] [quant_state JSON ...]
/// flags: bit 0 double quantization (U8 absmax codes + nested tensors),
/// bit 1 one absmax value too few, bit 2 the packed weight as F32 instead
/// of U8, bit 3 the nf4 state name (else fp4), bit 4 a huge config shape.
pub fn bnb_quant_state(data: &[u8]) {
    let [r, c, flags, state @ ..] = data else {
        return;
    };
    let (rows, cols) = (*r as usize + 1, *c as usize + 1);
    let n = rows * cols;
    // The tensors are laid out for blocksize 64 (and nested blocksize 256);
    // the JSON may say anything.
    let nblocks = n.div_ceil(64) - usize::from(flags & 2 != 0 && n > 64);
    let w = "w.weight".to_string();
    let kind = if flags & 8 != 0 { "nf4" } else { "fp4" };
    let mut t = vec![
        if flags & 4 != 0 {
            (
                w.clone(),
                "F32",
                vec![n.div_ceil(8)],
                vec![0x5a; n.div_ceil(8) * 4],
            )
        } else {
            (
                w.clone(),
                "U8",
                vec![n.div_ceil(2)],
                (0..n.div_ceil(2)).map(|i| i as u8).collect(),
            )
        },
        (format!("{w}.quant_map"), "F32", vec![16], f32s(16, -1.0)),
        (
            format!("{w}.quant_state.bitsandbytes__{kind}"),
            "U8",
            vec![state.len()],
            state.to_vec(),
        ),
    ];
    if flags & 1 != 0 {
        t.push((
            format!("{w}.absmax"),
            "U8",
            vec![nblocks],
            (0..nblocks).map(|i| i as u8).collect(),
        ));
        t.push((
            format!("{w}.nested_quant_map"),
            "F32",
            vec![256],
            f32s(256, -8.0),
        ));
        let nn = nblocks.div_ceil(256);
        t.push((format!("{w}.nested_absmax"), "F32", vec![nn], f32s(nn, 0.5)));
    } else {
        t.push((
            format!("{w}.absmax"),
            "F32",
            vec![nblocks],
            f32s(nblocks, 0.1),
        ));
    }
    static D: OnceLock<PathBuf> = OnceLock::new();
    let d = scratch(&D, "bnb");
    std::fs::write(d.join("model.safetensors"), safetensors(&t)).expect("scratch write");
    let Ok(ck) = convert::checkpoint::Checkpoint::open(d) else {
        return;
    };
    let shape: Vec<u64> = if flags & 16 != 0 {
        vec![1 << 40, 1 << 40]
    } else {
        vec![rows as u64, cols as u64]
    };
    if let Ok(v) = convert::bnb::dequantize(&ck, &w, &shape) {
        assert_eq!(v.len(), n, "one value per element");
    }
}
