//! bitsandbytes 4-bit (FP4 / NF4, optionally double-quantized) weights,
//! dequantized to fp32 as bitsandbytes defines them.
//!
//! For a quantized Linear `P` the checkpoint holds:
//! - `P.weight`: u8, two 4-bit codes per byte, the HIGH nibble first (even
//!   element), over the flattened row-major tensor;
//! - `P.weight.quant_map`: f32[16], the code table;
//! - `P.weight.absmax`: f32 per block of `blocksize` values (blocks run over
//!   the flattened tensor, across row ends), or with double quantization u8
//!   codes into `nested_quant_map` (f32[256]) scaled by `nested_absmax` (f32 per
//!   `nested_blocksize` absmax values) plus `nested_offset`;
//! - `P.weight.quant_state.bitsandbytes__{fp4,nf4}`: u8 bytes of a JSON object
//!   with quant_type, blocksize, dtype, shape [, nested_blocksize, nested_offset].
//!
//! value[i] = quant_map[code(i)] * absmax[i / blocksize], in f32, where with
//! double quantization absmax[j] = nested_quant_map[a[j]] *
//! nested_absmax[j / nested_blocksize] + nested_offset (f32 product, then sum).

use crate::checkpoint::{Checkpoint, SrcDtype, TensorEntry};
use crate::error::{ConvertError, Result};

/// Whether `name` (a `.weight`) is stored bitsandbytes-quantized.
pub fn is_quantized(ck: &Checkpoint, name: &str) -> bool {
    state_entry(ck, name).is_some()
}

fn state_entry<'a>(ck: &'a Checkpoint, name: &str) -> Option<&'a TensorEntry> {
    ck.get(&format!("{name}.quant_state.bitsandbytes__fp4"))
        .or_else(|| ck.get(&format!("{name}.quant_state.bitsandbytes__nf4")))
}

/// Dequantize the whole tensor `name` to f32, checking it has `shape`.
pub fn dequantize(ck: &Checkpoint, name: &str, shape: &[u64]) -> Result<Vec<f32>> {
    let bad = |e: &TensorEntry, what: String| ConvertError::Tensor {
        file: ck.file_of(e).to_path_buf(),
        tensor: e.name.clone(),
        what,
    };
    let missing = |what: &str| ConvertError::Tensor {
        file: ck.listing(),
        tensor: format!("{name}{what}"),
        what: "missing (needed to dequantize the bitsandbytes weight)".into(),
    };
    let st = state_entry(ck, name).ok_or_else(|| missing(".quant_state.bitsandbytes__*"))?;
    let state: serde_json::Value = serde_json::from_slice(ck.bytes(st))
        .map_err(|e| bad(st, format!("quant_state is not JSON: {e}")))?;
    let quant_type = state
        .get("quant_type")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    if quant_type != "fp4" && quant_type != "nf4" {
        return Err(bad(
            st,
            format!("quant_type \"{quant_type}\" (fp4 or nf4 expected)"),
        ));
    }
    let blocksize = state
        .get("blocksize")
        .and_then(|b| b.as_u64())
        .filter(|&b| b > 0)
        .ok_or_else(|| bad(st, "no positive \"blocksize\"".into()))? as usize;
    let st_shape: Vec<u64> = state
        .get("shape")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    if st_shape != shape {
        return Err(bad(
            st,
            format!("quant_state shape {st_shape:?}, but config.json implies {shape:?}"),
        ));
    }
    let n = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad(st, format!("shape {shape:?} has more elements than memory")))?;
    let nblocks = n.div_ceil(blocksize);

    let w = ck.get(name).ok_or_else(|| missing(""))?;
    if w.dtype != SrcDtype::U8 || w.end - w.start != n.div_ceil(2) {
        return Err(bad(
            w,
            format!(
                "packed 4-bit data should be {} U8 bytes for shape {shape:?}, found {} {}",
                n.div_ceil(2),
                w.end - w.start,
                w.dtype.name()
            ),
        ));
    }
    let f32s = |e: &TensorEntry, want: usize| -> Result<Vec<f32>> {
        if e.dtype != SrcDtype::F32 || e.n_elements() != want {
            return Err(bad(
                e,
                format!(
                    "expected {want} F32 values, found {} {}",
                    e.n_elements(),
                    e.dtype.name()
                ),
            ));
        }
        Ok(ck
            .bytes(e)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let qm_e = ck
        .get(&format!("{name}.quant_map"))
        .ok_or_else(|| missing(".quant_map"))?;
    let qmap = f32s(qm_e, 16)?;
    let am_e = ck
        .get(&format!("{name}.absmax"))
        .ok_or_else(|| missing(".absmax"))?;
    let absmax: Vec<f32> = if let Some(nb) = state.get("nested_blocksize") {
        let nb = nb
            .as_u64()
            .filter(|&b| b > 0)
            .ok_or_else(|| bad(st, "bad \"nested_blocksize\"".into()))? as usize;
        let offset = state
            .get("nested_offset")
            .and_then(|o| o.as_f64())
            .ok_or_else(|| bad(st, "no \"nested_offset\"".into()))? as f32;
        if am_e.dtype != SrcDtype::U8 || am_e.n_elements() != nblocks {
            return Err(bad(
                am_e,
                format!(
                    "expected {nblocks} U8 codes (double quantization), found {} {}",
                    am_e.n_elements(),
                    am_e.dtype.name()
                ),
            ));
        }
        let nq_e = ck
            .get(&format!("{name}.nested_quant_map"))
            .ok_or_else(|| missing(".nested_quant_map"))?;
        let nqmap = f32s(nq_e, 256)?;
        let na_e = ck
            .get(&format!("{name}.nested_absmax"))
            .ok_or_else(|| missing(".nested_absmax"))?;
        let nabs = f32s(na_e, nblocks.div_ceil(nb))?;
        ck.bytes(am_e)
            .iter()
            .enumerate()
            .map(|(j, &c)| nqmap[c as usize] * nabs[j / nb] + offset)
            .collect()
    } else {
        f32s(am_e, nblocks)?
    };
    let packed = ck.bytes(w);
    let mut out = vec![0f32; n];
    for (i, o) in out.iter_mut().enumerate() {
        let b = packed[i / 2];
        let q = if i % 2 == 0 { b >> 4 } else { b & 0x0F };
        *o = qmap[q as usize] * absmax[i / blocksize];
    }
    Ok(out)
}
