//! `quantize`: requantizing an F32 GGUF gives what llama-quantize gives,
//! whether the F32 file is llama.cpp's own or ours; quantized inputs and other
//! architectures are refused with a clear message.

use std::sync::atomic::AtomicBool;

use crate::common::*;
use convert::{FileType, QuantizeOptions};
use gguf::GgufFile;

fn requant(
    input: &std::path::Path,
    out: &std::path::Path,
    ft: FileType,
    allow: bool,
) -> convert::Result<convert::Summary> {
    let opts = QuantizeOptions {
        file_type: ft,
        pure: false,
        allow_requantize: allow,
        force: false,
        threads: Some(2),
        imatrix: None,
    };
    convert::quantize(input, out, &opts, &AtomicBool::new(false), &mut |_| {})
}

fn manifest(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(llamacpp(&format!("{name}.json"))).unwrap())
        .unwrap()
}

#[test]
fn llama_cpp_f32_gguf_to_q4_k_m_matches_llama_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.gguf");
    requant(
        &llamacpp_gguf("falcon-mamba-tiny-f32.gguf"),
        &out,
        FileType::Q4_K_M,
        false,
    )
    .unwrap();
    let f = GgufFile::open(&out).unwrap();
    let d = diff_manifest(&f, &manifest("falcon-mamba-tiny.q4_k_m"), false);
    assert!(d.is_empty(), "{}", d.join("\n"));
    // llama.cpp's own context length is carried over untouched.
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 1 << 20);
}

#[test]
fn our_f32_to_every_quant_type_matches_llama_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let f32 = tmp.path().join("f32.gguf");
    convert_to(&hf("falcon-mamba-small-bf16"), &f32, FileType::F32, false).unwrap();
    for ty in [
        "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q5_k_m", "q6_k",
    ] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        requant(&f32, &out, FileType::parse(ty).unwrap(), false).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let d = diff_manifest(
            &f,
            &manifest(&format!("falcon-mamba-small-bf16.{ty}")),
            false,
        );
        assert!(d.is_empty(), "{ty}: {}", d.join("\n"));
    }
}

#[test]
fn refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q4.gguf");
    convert_to(&hf("mamba-tiny-tied"), &q, FileType::Q4_0, false).unwrap();
    let out = tmp.path().join("again.gguf");
    let e = requant(&q, &out, FileType::Q8_0, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q4.gguf")
            && e.contains("already quantized")
            && e.contains("--allow-requantize"),
        "{e}"
    );
    assert!(!out.exists());
    requant(&q, &out, FileType::Q8_0, true).unwrap();

    // Not a mamba GGUF.
    let other = tmp.path().join("llama.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        gguf::Value::String("llama".into()),
    )];
    let w = gguf::GgufWriter::create(&other, &meta, &[]).unwrap();
    w.finish().unwrap();
    let out2 = tmp.path().join("x.gguf");
    let e = requant(&other, &out2, FileType::Q8_0, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("llama.gguf") && e.contains("\"llama\""), "{e}");
    assert!(!out2.exists());

    // Not a GGUF at all.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let e = requant(&junk, &out2, FileType::Q8_0, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.gguf"), "{e}");
    assert!(!out2.exists());
}
