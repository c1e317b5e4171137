//! IQ3_XXS and IQ3_S files made by llama.cpp (scripts/fixtures/
//! make_quant_manifests.py: llama-imatrix, then llama-quantize --pure
//! --imatrix on mamba-tiny-tied) load and run: the model on each file gives
//! what the same weights dequantized to F32 give (our dequantizers match
//! ggml's bit for bit, quant/tests/it/goldens.rs), up to the rounding of the
//! Q8_K activations: no further than a Q4_K file of the same model is from
//! its own dequantized weights (the same activation rounding, a kernel
//! proven against its reference).

use crate::runtime_common::{argmax, dequantize_all, kl, ours_gguf, root, tempdir};
use gguf::{GgmlType, GgufFile};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::Model;

fn logits(path: &std::path::Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = Model::load_on(path, DeviceRequest::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s = mamba_gguf::Session::with_chunk(&m, 4);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    s.feed_each(ids, &mut buf, |_, row| out.push(row.to_vec()))
        .expect("forward");
    out
}

/// (mean KL over positions, positions with the same argmax) of `p`'s
/// logits against those of its weights dequantized to F32.
fn against_dequantized(p: &std::path::Path, ids: &[u32], dir: &std::path::Path) -> (f64, usize) {
    let exact = dir.join("dequantized.gguf");
    dequantize_all(p, &exact);
    let (ours, want) = (logits(p, ids), logits(&exact, ids));
    let mut total = 0f64;
    let mut same_top = 0;
    for (o, w) in ours.iter().zip(&want) {
        total += kl(w, o);
        same_top += usize::from(argmax(o) == argmax(w));
    }
    (total / ids.len() as f64, same_top)
}

#[test]
fn llama_cpp_iq3_files_run_like_their_dequantized_weights() {
    let dir = tempdir();
    let ids: Vec<u32> = vec![5, 300, 17, 900, 44, 2, 610, 77, 123, 1000, 8, 9];
    let q4k = ours_gguf("mamba-tiny-tied", convert::FileType::Q4_K_M);
    let (yard, _) = against_dequantized(&q4k, &ids, dir.path());
    for ty in [GgmlType::IQ3_S, GgmlType::IQ3_XXS] {
        let name = format!("mamba-tiny-tied.{}.pure.gguf", ty.name().to_lowercase());
        let p = root().join("tests/fixtures/llamacpp-quant").join(&name);
        let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n_ty = f.tensors().iter().filter(|t| t.ty == ty).count();
        assert!(n_ty >= 7, "{name}: only {n_ty} {ty} tensors");
        let (mean, same_top) = against_dequantized(&p, &ids, dir.path());
        eprintln!(
            "{ty}: mean KL from the dequantized model {mean:.2e} (Q4_K_M file: {yard:.2e}), same argmax {same_top}/{}",
            ids.len()
        );
        assert!(
            mean <= 2.0 * yard + 1e-3,
            "{ty}: KL {mean} vs Q4_K_M's {yard}"
        );
        assert!(
            same_top >= ids.len() - 1,
            "{ty}: argmax agrees at {same_top} of {}",
            ids.len()
        );
    }
}
