//! bitsandbytes 4-bit checkpoints (FP4, NF4, NF4 with double quantization):
//! every quantized Linear, converted to F32, equals bitsandbytes' own fp32
//! dequantization (sha256 recorded by scripts/fixtures/make_hf_fixtures.py,
//! plus the raw values of layer 0's x_proj).

use crate::common::*;
use convert::FileType;
use gguf::GgufFile;

fn gguf_name(hf: &str) -> String {
    let rest = hf.strip_prefix("backbone.layers.").unwrap();
    let (i, t) = rest.split_once('.').unwrap();
    let g = match t {
        "mixer.in_proj.weight" => "ssm_in.weight",
        "mixer.x_proj.weight" => "ssm_x.weight",
        "mixer.dt_proj.weight" => "ssm_dt.weight",
        "mixer.out_proj.weight" => "ssm_out.weight",
        other => panic!("{other}"),
    };
    format!("blk.{i}.{g}")
}

fn check(fixture: &str, quant_type: &str, double: bool) {
    let dir = hf(fixture);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected-dequant.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f32.gguf");
    convert_to(&dir, &out, FileType::F32, false).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let exp = expected.as_object().unwrap();
    assert_eq!(exp.len(), 8, "4 Linear weights x 2 layers");
    for (name, e) in exp {
        assert_eq!(e["quant_type"], quant_type);
        assert_eq!(e["double_quant"], double);
        let t = f.tensor(&gguf_name(name)).unwrap();
        assert_eq!(t.ty, gguf::GgmlType::F32);
        assert_eq!(
            sha256(f.tensor_data(t)),
            e["sha256_f32"].as_str().unwrap(),
            "{fixture} {name}"
        );
    }
    let sample = std::fs::read(dir.join("expected-x_proj-l0.f32")).unwrap();
    let t = f.tensor("blk.0.ssm_x.weight").unwrap();
    assert_eq!(f.tensor_data(t), &sample[..]);
    // The unquantized parts (fp16) are still there and Falcon's norm is kept.
    assert!(f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert!(f.tensor("output.weight").is_some());

    // And straight to Q4_K_M in the same pass.
    let q = tmp.path().join("q4.gguf");
    convert_to(&dir, &q, FileType::Q4_K_M, false).unwrap();
    let g = GgufFile::open(&q).unwrap();
    assert_eq!(
        g.tensor("blk.0.ssm_in.weight").unwrap().ty,
        gguf::GgmlType::Q4_K
    );
}

#[test]
fn fp4() {
    check("falcon-mamba-small-fp4", "fp4", false);
}

#[test]
fn nf4() {
    check("falcon-mamba-small-nf4", "nf4", false);
}

#[test]
fn nf4_double_quant() {
    check("falcon-mamba-small-nf4-dq", "nf4", true);
}

/// A quant_state whose shape (matching the config's) has more elements than
/// any memory: an error naming the tensor, not an overflow panic (found by
/// the `bnb_quant_state` fuzz target's seeds).
#[test]
fn a_shape_that_overflows_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let state = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [1099511627776, 1099511627776]}"#;
    let tensors: [(&str, &str, usize, Vec<u8>); 4] = [
        ("w.weight", "U8", 2, vec![0x12, 0x34]),
        ("w.weight.quant_map", "F32", 16, vec![0; 64]),
        ("w.weight.absmax", "F32", 1, vec![0; 4]),
        (
            "w.weight.quant_state.bitsandbytes__nf4",
            "U8",
            state.len(),
            state.to_vec(),
        ),
    ];
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, dtype, n, raw) in tensors {
        header.insert(
            name.into(),
            serde_json::json!({"dtype": dtype, "shape": [n],
                               "data_offsets": [data.len(), data.len() + raw.len()]}),
        );
        data.extend_from_slice(&raw);
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(h.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(tmp.path().join("model.safetensors"), file).unwrap();
    let ck = convert::checkpoint::Checkpoint::open(tmp.path()).unwrap();
    let err = convert::bnb::dequantize(&ck, "w.weight", &[1 << 40, 1 << 40])
        .expect_err("no tensor has 2^80 elements");
    let msg = err.to_string();
    assert!(
        msg.contains("quant_state") && msg.contains("more elements"),
        "{msg}"
    );
}
