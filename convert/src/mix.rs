//! Which ggml type each tensor gets for a requested output type: the rules of
//! llama.cpp's convert_hf_to_gguf.py (float types) and llama-quantize's
//! defaults (quantized types) for the `mamba` architecture, restated.
//!
//! Float outputs (f32/f16/bf16), as the converter writes them: 1-D tensors,
//! `*_norm.weight`, `ssm_conv1d.*` and names not ending in `.weight`
//! (`ssm_a`, `ssm_d`) are F32; every other matrix takes the type.
//!
//! Quantized outputs, as llama-quantize makes them from an F32 GGUF: only
//! 2-D tensors whose name ends in `weight` (not norms, not `ssm_conv1d`) are
//! quantized, the rest stay F32. Without `--pure`, `output.weight` (and
//! `token_embd.weight` when the head is tied) becomes Q6_K unless the type is
//! Q8_0 (then Q8_0) or IQ3_XXS, IQ2 or IQ1 (then Q5_K), or Q8_0 when its
//! rows do not fill the type's blocks; an untied `token_embd.weight` of a
//! TQ1_0/TQ2_0 file becomes Q4_K, of an IQ3_XXS, IQ2_S or IQ2_M file
//! IQ3_S, of an IQ2_XXS, IQ2_XS, IQ1_S or IQ1_M file Q2_K. IQ3_XS, IQ3_S and IQ3_M files
//! are all IQ3_S, IQ2_S files IQ2_XS and IQ2_M files IQ2_S (their upgrades,
//! too, touch attention and FFN only).
//! Mamba has no attention/FFN tensors, so the `_M` upgrades of Q4_K_M / Q5_K_M
//! never apply: all other matrices take the base type. Then, for every
//! matrix, a row length that is not a multiple of the block size falls back:
//! Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K/TQ1_0/TQ2_0 -> Q4_0,
//! IQ4_XS and the IQ3/IQ2/IQ1 types -> IQ4_NL; 32-block types stay; and if the result still does not
//! fit, F16.

// `%` rather than `is_multiple_of`: the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

use quant::GgmlType;

/// The output types `convert` and `quantize` accept: llama-quantize's
/// options for a Mamba model, with its names and `general.file_type` ids.
/// For Mamba the `_S`/`_M`/`_L` mixes of a type differ only in that id:
/// their upgrades touch attention and FFN tensors, which Mamba has none of.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
    IQ3_XXS,
    IQ3_XS,
    IQ3_S,
    IQ3_M,
    IQ2_XXS,
    IQ2_XS,
    IQ2_S,
    IQ2_M,
    IQ1_S,
    IQ1_M,
    TQ1_0,
    TQ2_0,
}

pub const ALL_TYPES: &[FileType] = &[
    FileType::F32,
    FileType::F16,
    FileType::BF16,
    FileType::Q8_0,
    FileType::Q4_0,
    FileType::Q4_1,
    FileType::Q5_0,
    FileType::Q5_1,
    FileType::Q2_K,
    FileType::Q2_K_S,
    FileType::Q3_K_S,
    FileType::Q3_K_M,
    FileType::Q3_K_L,
    FileType::Q4_K_S,
    FileType::Q4_K_M,
    FileType::Q5_K_S,
    FileType::Q5_K_M,
    FileType::Q6_K,
    FileType::IQ4_NL,
    FileType::IQ4_XS,
    FileType::IQ3_XXS,
    FileType::IQ3_XS,
    FileType::IQ3_S,
    FileType::IQ3_M,
    FileType::IQ2_XXS,
    FileType::IQ2_XS,
    FileType::IQ2_S,
    FileType::IQ2_M,
    FileType::IQ1_S,
    FileType::IQ1_M,
    FileType::TQ1_0,
    FileType::TQ2_0,
];

/// llama-quantize's aliases: a K type without a mix letter means its `_M`.
const ALIASES: &[(&str, FileType)] = &[
    ("q3_k", FileType::Q3_K_M),
    ("q4_k", FileType::Q4_K_M),
    ("q5_k", FileType::Q5_K_M),
];

impl FileType {
    /// Parse "q4_k_m", "Q4_K_M", "f16", "iq4_xs", or an alias ("q4_k").
    pub fn parse(s: &str) -> Option<FileType> {
        let s = s.trim();
        ALL_TYPES
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(s))
                    .map(|(_, t)| *t)
            })
    }

    /// Lower-case name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q5_0 => "q5_0",
            FileType::Q5_1 => "q5_1",
            FileType::Q2_K => "q2_k",
            FileType::Q2_K_S => "q2_k_s",
            FileType::Q3_K_S => "q3_k_s",
            FileType::Q3_K_M => "q3_k_m",
            FileType::Q3_K_L => "q3_k_l",
            FileType::Q4_K_S => "q4_k_s",
            FileType::Q4_K_M => "q4_k_m",
            FileType::Q5_K_S => "q5_k_s",
            FileType::Q5_K_M => "q5_k_m",
            FileType::Q6_K => "q6_k",
            FileType::IQ4_NL => "iq4_nl",
            FileType::IQ4_XS => "iq4_xs",
            FileType::IQ3_XXS => "iq3_xxs",
            FileType::IQ3_XS => "iq3_xs",
            FileType::IQ3_S => "iq3_s",
            FileType::IQ3_M => "iq3_m",
            FileType::IQ2_XXS => "iq2_xxs",
            FileType::IQ2_XS => "iq2_xs",
            FileType::IQ2_S => "iq2_s",
            FileType::IQ2_M => "iq2_m",
            FileType::IQ1_S => "iq1_s",
            FileType::IQ1_M => "iq1_m",
            FileType::TQ1_0 => "tq1_0",
            FileType::TQ2_0 => "tq2_0",
        }
    }

    /// llama.cpp's `general.file_type` (enum llama_ftype, include/llama.h).
    pub fn ftype_id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::Q2_K_S => 21,
            FileType::IQ2_XXS => 19,
            FileType::IQ2_XS => 20,
            FileType::IQ3_XS => 22,
            FileType::IQ3_XXS => 23,
            FileType::IQ1_S => 24,
            FileType::IQ4_NL => 25,
            FileType::IQ3_S => 26,
            FileType::IQ3_M => 27,
            FileType::IQ2_S => 28,
            FileType::IQ2_M => 29,
            FileType::IQ4_XS => 30,
            FileType::IQ1_M => 31,
            FileType::BF16 => 32,
            FileType::TQ1_0 => 36,
            FileType::TQ2_0 => 37,
        }
    }

    /// The base tensor type (llama_ftype_get_default_type).
    pub fn base(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q2_K | FileType::Q2_K_S => GgmlType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
            FileType::IQ4_NL => GgmlType::IQ4_NL,
            FileType::IQ4_XS => GgmlType::IQ4_XS,
            FileType::IQ3_XXS => GgmlType::IQ3_XXS,
            FileType::IQ3_XS | FileType::IQ3_S | FileType::IQ3_M => GgmlType::IQ3_S,
            FileType::IQ2_XXS => GgmlType::IQ2_XXS,
            FileType::IQ2_XS | FileType::IQ2_S => GgmlType::IQ2_XS,
            FileType::IQ2_M => GgmlType::IQ2_S,
            FileType::IQ1_S => GgmlType::IQ1_S,
            FileType::IQ1_M => GgmlType::IQ1_M,
            FileType::TQ1_0 => GgmlType::TQ1_0,
            FileType::TQ2_0 => GgmlType::TQ2_0,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }
}

/// Whether llama-quantize refuses to write tensor `name` as `ty` in a file
/// of type `ft` without an importance matrix (tensor_requires_imatrix): of
/// the types made here IQ3_XXS, IQ2 and IQ1 tensors and the Q2_K tensors
/// of a Q2_K_S file, never the token embedding or the head.
pub fn requires_imatrix(ft: FileType, name: &str, ty: GgmlType) -> bool {
    if name == "token_embd.weight" || name == "output.weight" {
        return false;
    }
    matches!(
        ty,
        GgmlType::IQ3_XXS
            | GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ2_S
            | GgmlType::IQ1_S
            | GgmlType::IQ1_M
    ) || (ty == GgmlType::Q2_K && ft == FileType::Q2_K_S)
}

/// llama-quantize's refusal, worded for our error types: `Err(reason)` when
/// tensor `name` would be `ty` in a file of type `ft`, that needs an
/// importance matrix, and `have` (the imatrix has an entry for it) is false.
pub fn check_imatrix(ft: FileType, name: &str, ty: GgmlType, have: bool) -> Result<(), String> {
    if !have && requires_imatrix(ft, name, ty) {
        return Err(format!(
            "type {} requires an importance matrix, as llama-quantize says (offending tensor: '{name}', target type {ty}): \
             without one the result is garbage; pass --imatrix FILE (made by `mamba-gguf imatrix` or llama-imatrix) \
             with an entry for that tensor, or choose another type (q2_k, q3_k_s, ...)",
            ft.name()
        ));
    }
    Ok(())
}

/// Whether llama-quantize would quantize this tensor at all.
pub fn quantizable(name: &str, dims: &[u64]) -> bool {
    dims.len() >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ssm_conv1d")
}

fn float_type(name: &str, dims: &[u64], ty: GgmlType) -> GgmlType {
    if dims.len() <= 1
        || name.ends_with("_norm.weight")
        || name.contains("ssm_conv1d")
        || !name.ends_with(".weight")
    {
        GgmlType::F32
    } else {
        ty
    }
}

/// llama-quantize's fallback for a row length the type's blocks do not fill.
pub fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    let fits = |t: GgmlType| ncols % t.block_size() as u64 == 0;
    if fits(ty) {
        return ty;
    }
    let alt = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::TQ1_0 | GgmlType::TQ2_0 => GgmlType::Q4_0,
        GgmlType::IQ4_XS
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_S
        | GgmlType::IQ1_M => GgmlType::IQ4_NL,
        other => other,
    };
    if fits(alt) {
        alt
    } else {
        GgmlType::F16
    }
}

/// The type a tensor is stored in.
///
/// `name`/`dims`: GGUF name and dims (innermost first). `tied`: the model has
/// no `output.weight`. `source`: the tensor's type in the input when
/// requantizing a GGUF (None when converting from a checkpoint, where llama.cpp
/// would first make an F32 GGUF).
pub fn tensor_type(
    ft: FileType,
    pure: bool,
    name: &str,
    dims: &[u64],
    tied: bool,
    source: Option<GgmlType>,
) -> GgmlType {
    if ft.is_float() && source.is_none() {
        return float_type(name, dims, ft.base());
    }
    if !quantizable(name, dims) {
        return source.unwrap_or(GgmlType::F32);
    }
    let base = ft.base();
    if !base_is_quantized(base) {
        // llama-quantize to a float type: every quantizable tensor takes it.
        return base;
    }
    let mut ty = base;
    let ncols = dims.first().copied().unwrap_or(0);
    if !pure && name == "token_embd.weight" && !tied {
        // llama-quantize's (untied) embedding: Q4_K for a ternary file,
        // IQ3_S for IQ3_XXS, IQ2_S and IQ2_M ones, Q2_K for IQ2_XXS and
        // IQ2_XS ones.
        match ft {
            FileType::TQ1_0 | FileType::TQ2_0 => ty = GgmlType::Q4_K,
            FileType::IQ3_XXS | FileType::IQ2_S | FileType::IQ2_M => ty = GgmlType::IQ3_S,
            FileType::IQ2_XXS | FileType::IQ2_XS | FileType::IQ1_S | FileType::IQ1_M => {
                ty = GgmlType::Q2_K
            }
            _ => {}
        }
    }
    if !pure && (name == "output.weight" || (tied && name == "token_embd.weight")) {
        ty = if ncols % base.block_size() as u64 != 0 {
            GgmlType::Q8_0
        } else if matches!(
            ft,
            FileType::IQ3_XXS
                | FileType::IQ2_XXS
                | FileType::IQ2_XS
                | FileType::IQ2_S
                | FileType::IQ2_M
                | FileType::IQ1_S
                | FileType::IQ1_M
        ) {
            GgmlType::Q5_K
        } else if base != GgmlType::Q8_0 {
            GgmlType::Q6_K
        } else {
            base
        };
    }
    fallback(ty, ncols)
}

fn base_is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_follow_llama_quantize() {
        assert_eq!(fallback(GgmlType::Q4_K, 128), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q4_K, 16), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q5_K, 64), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6_K, 64), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q4_0, 16), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4_K, 4096), GgmlType::Q4_K);
        assert_eq!(fallback(GgmlType::IQ4_XS, 96), GgmlType::IQ4_NL);
        assert_eq!(fallback(GgmlType::IQ4_XS, 48), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q3_K, 96), GgmlType::Q4_0);
        assert_eq!(fallback(GgmlType::IQ4_NL, 48), GgmlType::F16);
    }

    #[test]
    fn names_ids_and_aliases_follow_llama_quantize() {
        for ft in ALL_TYPES {
            assert_eq!(FileType::parse(ft.name()), Some(*ft));
            assert_eq!(FileType::parse(&ft.name().to_uppercase()), Some(*ft));
        }
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("q3_k"), Some(FileType::Q3_K_M));
        assert_eq!(FileType::parse("q2_k_m"), None);
        let mut ids: Vec<u32> = ALL_TYPES.iter().map(|t| t.ftype_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL_TYPES.len());
        assert_eq!(FileType::IQ4_XS.ftype_id(), 30);
        assert_eq!(FileType::Q2_K_S.base(), GgmlType::Q2_K);
        assert!(requires_imatrix(
            FileType::Q2_K_S,
            "blk.0.ssm_in.weight",
            GgmlType::Q2_K
        ));
        assert!(!requires_imatrix(
            FileType::Q2_K_S,
            "token_embd.weight",
            GgmlType::Q2_K
        ));
        assert!(!requires_imatrix(
            FileType::Q2_K,
            "blk.0.ssm_in.weight",
            GgmlType::Q2_K
        ));
    }

    #[test]
    fn head_and_tied_embedding_get_q6_k() {
        let t = |ft, name, tied, pure| tensor_type(ft, pure, name, &[256, 1024], tied, None);
        assert_eq!(
            t(FileType::Q4_0, "output.weight", false, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(FileType::Q4_0, "token_embd.weight", false, false),
            GgmlType::Q4_0
        );
        assert_eq!(
            t(FileType::Q4_0, "token_embd.weight", true, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(FileType::Q8_0, "output.weight", false, false),
            GgmlType::Q8_0
        );
        assert_eq!(
            t(FileType::Q4_K_M, "output.weight", false, true),
            GgmlType::Q4_K
        );
        assert_eq!(
            tensor_type(
                FileType::Q4_K_M,
                false,
                "output.weight",
                &[64, 65024],
                false,
                None
            ),
            GgmlType::Q8_0
        );
    }

    #[test]
    fn small_tensors_stay_f32() {
        for ft in ALL_TYPES {
            for (n, d) in [
                ("blk.0.ssm_a", vec![16u64, 512]),
                ("blk.0.ssm_d", vec![512]),
                ("blk.0.ssm_conv1d.weight", vec![4, 512]),
                ("blk.0.attn_norm.weight", vec![256]),
            ] {
                assert_eq!(
                    tensor_type(*ft, false, n, &d, false, None),
                    GgmlType::F32,
                    "{n} {ft:?}"
                );
            }
        }
    }
}
