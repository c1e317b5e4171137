//! GGUF files in the layouts older converters wrote for Mamba (no
//! `mamba.ssm.dt_b_c_rms` key, 3-D `ssm_conv1d`, a tied head stored anyway,
//! F16 `ssm_conv1d`, alignment 64), written by the `gguf` Python package
//! straight from the Hugging Face fixtures
//! (scripts/fixtures/make_gguf_layouts.py): each must load and compute what
//! transformers computes on the same weights.

use crate::runtime_common::*;
use mamba_gguf::Model;

/// fp32 in another summation order (as runtime_reference's F32 bound).
const F32_BOUND: f64 = 1e-4;
/// A Falcon Mamba file without `mamba.ssm.dt_b_c_rms_eps` normalises dt/B/C
/// with layer_norm_rms_epsilon (1e-5, as llama.cpp does) instead of the
/// checkpoint's mixer_rms_eps (1e-6): runtime_reference measured the gap at
/// 5.2e-5 against the true reference.
const EPS_GAP_BOUND: f64 = 2e-4;

#[test]
fn every_older_layout_matches_transformers() {
    let dir = root().join("tests/fixtures/gguf-layouts");
    let layouts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("layouts.json")).unwrap()).unwrap();
    let layouts = layouts.as_object().unwrap();
    assert_eq!(
        layouts.len(),
        6,
        "run scripts/fixtures/make_gguf_layouts.py"
    );
    for (name, spec) in layouts {
        let src = spec["src"].as_str().unwrap();
        let r = reference(src);
        let m =
            Model::load(dir.join(format!("{name}.gguf"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let falcon = spec["falcon_key"].as_bool() == Some(true);
        assert_eq!(m.hp.dt_b_c_rms, falcon, "{name}");
        assert_eq!(
            m.hp.tied,
            !spec["write_output"].as_bool().unwrap_or(false) && src.starts_with("mamba"),
            "{name}"
        );
        let ours = all_logits(&m, &r.prompt_ids, 64);
        let rel = rel_max_diff(&ours, &r.logits, r.std);
        let bound = if falcon { EPS_GAP_BOUND } else { F32_BOUND };
        eprintln!("{name} ({src}): rel {rel:.3e} (bound {bound:e})");
        assert!(rel <= bound, "{name}: rel {rel:e} > {bound:e}");
        if falcon {
            // Against the reference taken with eps 1e-5: fp32 reordering only.
            let (first, eps) = r.eps_logits.as_ref().expect("eps reference");
            let rel = rel_max_diff(&ours[first * r.vocab..], eps, r.std);
            eprintln!("{name} vs eps=1e-5 reference: rel {rel:.3e}");
            assert!(rel <= F32_BOUND, "{name}: eps-matched rel {rel:e}");
        }
    }
}
