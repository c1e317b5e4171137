//! The bitsandbytes quant-state JSON and the tensors it describes: a
//! checkpoint with one 4-bit Linear whose `quant_state` bytes are the input's
//! tail, dequantized by `convert::bnb::dequantize`. An error, or exactly
//! rows x cols values; never a panic or an allocation beyond the tensors.
//!
//! Input: [rows-1] [cols-1] [flags] [quant_state JSON ...]
//! flags: bit 0 double quantization (U8 absmax codes + nested tensors), bit 1
//! one absmax value too few, bit 2 the packed weight as F32 instead of U8,
//! bit 3 the nf4 state name (else fp4), bit 4 a huge config shape.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use convert::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mamba-fuzz-bnb-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
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
    (0..n).flat_map(|i| (v + i as f32 * 0.25).to_le_bytes()).collect()
}

fuzz_target!(|data: &[u8]| {
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
            (w.clone(), "F32", vec![n.div_ceil(8)], vec![0x5a; n.div_ceil(8) * 4])
        } else {
            (w.clone(), "U8", vec![n.div_ceil(2)], (0..n.div_ceil(2)).map(|i| i as u8).collect())
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
        t.push((format!("{w}.absmax"), "U8", vec![nblocks], (0..nblocks).map(|i| i as u8).collect()));
        t.push((format!("{w}.nested_quant_map"), "F32", vec![256], f32s(256, -8.0)));
        let nn = nblocks.div_ceil(256);
        t.push((format!("{w}.nested_absmax"), "F32", vec![nn], f32s(nn, 0.5)));
    } else {
        t.push((format!("{w}.absmax"), "F32", vec![nblocks], f32s(nblocks, 0.1)));
    }
    let d = dir();
    std::fs::write(d.join("model.safetensors"), safetensors(&t)).expect("scratch write");
    let Ok(ck) = Checkpoint::open(d) else {
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
});
