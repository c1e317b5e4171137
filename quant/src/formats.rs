//! The per-type table tying each supported type to its scalar reference
//! quantizer, dequantizer, activation type and dot kernel.

use crate::{
    float, iq1, iq1_quantize, iq2, iq3, iq4_nl, iq4_xs, iq_quantize, q2_k, q3_k, q4_0, q4_1, q4_k,
    q5_0, q5_1, q5_k, q6_k, q8_0, q8_k, tq, DotFn, GgmlType,
};

/// A reference quantizer: one row of floats into its blocks.
pub(crate) type QuantizeFn = fn(&[f32], &mut [u8]);

pub(crate) struct Format {
    /// `None` for the types written only with an importance matrix
    /// (IQ2_XXS, IQ2_XS, IQ1_S: [`quantize_weighted`]).
    pub quantize: Option<QuantizeFn>,
    pub dequantize: fn(&[u8], &mut [f32]),
    /// The activation type the dot kernel reads.
    pub act: GgmlType,
    /// The scalar reference dot kernel.
    pub dot: DotFn,
}

pub(crate) fn format(ty: GgmlType) -> Option<Format> {
    use GgmlType as T;
    let read_only = |dequantize, dot| {
        Some(Format {
            quantize: None,
            dequantize,
            act: T::Q8_K,
            dot,
        })
    };
    let f = |quantize, dequantize, act, dot| {
        Some(Format {
            quantize: Some(quantize),
            dequantize,
            act,
            dot,
        })
    };
    match ty {
        T::F32 => f(
            float::quantize_f32,
            float::dequantize_f32,
            T::F32,
            float::dot_f32,
        ),
        T::F16 => f(
            float::quantize_f16,
            float::dequantize_f16,
            T::F32,
            float::dot_f16,
        ),
        T::BF16 => f(
            float::quantize_bf16,
            float::dequantize_bf16,
            T::F32,
            float::dot_bf16,
        ),
        T::Q4_0 => f(q4_0::quantize, q4_0::dequantize, T::Q8_0, q4_0::dot_q8_0),
        T::Q4_1 => f(q4_1::quantize, q4_1::dequantize, T::Q8_0, q4_1::dot_q8_0),
        T::Q5_0 => f(q5_0::quantize, q5_0::dequantize, T::Q8_0, q5_0::dot_q8_0),
        T::Q5_1 => f(q5_1::quantize, q5_1::dequantize, T::Q8_0, q5_1::dot_q8_0),
        T::Q8_0 => f(q8_0::quantize, q8_0::dequantize, T::Q8_0, q8_0::dot_q8_0),
        T::Q2_K => f(q2_k::quantize, q2_k::dequantize, T::Q8_K, q2_k::dot_q8_k),
        T::Q3_K => f(q3_k::quantize, q3_k::dequantize, T::Q8_K, q3_k::dot_q8_k),
        T::IQ4_NL => f(
            iq4_nl::quantize,
            iq4_nl::dequantize,
            T::Q8_0,
            iq4_nl::dot_q8_0,
        ),
        T::IQ4_XS => f(
            iq4_xs::quantize,
            iq4_xs::dequantize,
            T::Q8_K,
            iq4_xs::dot_q8_k,
        ),
        T::TQ1_0 => f(
            tq::quantize_tq1,
            tq::dequantize_tq1,
            T::Q8_K,
            tq::dot_tq1_q8_k,
        ),
        T::TQ2_0 => f(
            tq::quantize_tq2,
            tq::dequantize_tq2,
            T::Q8_K,
            tq::dot_tq2_q8_k,
        ),
        T::IQ1_S => read_only(iq1::dequantize_s, iq1::dot_s_q8_k),
        T::IQ1_M => f(
            |x, y| iq1_quantize::quantize_iq1_m(x, None, y),
            iq1::dequantize_m,
            T::Q8_K,
            iq1::dot_m_q8_k,
        ),
        T::IQ2_XXS => read_only(iq2::dequantize_xxs, iq2::dot_xxs_q8_k),
        T::IQ2_XS => read_only(iq2::dequantize_xs, iq2::dot_xs_q8_k),
        T::IQ2_S => f(
            |x, y| iq_quantize::quantize_iq2_s(x, None, y),
            iq2::dequantize_s,
            T::Q8_K,
            iq2::dot_s_q8_k,
        ),
        T::IQ3_XXS => f(
            |x, y| iq_quantize::quantize_iq3_xxs(x, None, y),
            iq3::dequantize_xxs,
            T::Q8_K,
            iq3::dot_xxs_q8_k,
        ),
        T::IQ3_S => f(
            |x, y| iq_quantize::quantize_iq3_s(x, None, y),
            iq3::dequantize_s,
            T::Q8_K,
            iq3::dot_s_q8_k,
        ),
        T::Q4_K => f(q4_k::quantize, q4_k::dequantize, T::Q8_K, q4_k::dot_q8_k),
        T::Q5_K => f(q5_k::quantize, q5_k::dequantize, T::Q8_K, q5_k::dot_q8_k),
        T::Q6_K => f(q6_k::quantize, q6_k::dequantize, T::Q8_K, q6_k::dot_q8_k),
        T::Q8_K => f(q8_k::quantize, q8_k::dequantize, T::Q8_K, q8_k::dot_q8_k),
        _ => None,
    }
}

/// A quantizer that takes an importance matrix: one row of floats, one
/// importance per column of that row, into its blocks.
pub(crate) type QuantizeWeightedFn = fn(&[f32], &[f32], &mut [u8]);

/// The quantizer ggml's `ggml_quantize_chunk` runs for `ty` when it is
/// given an importance matrix, for the types whose result depends on one.
/// `None` for the types that ignore it (F32, F16, BF16, Q8_0, Q8_K, TQ1_0,
/// TQ2_0: the same bytes either way) and for those we do not write.
pub(crate) fn quantize_weighted(ty: GgmlType) -> Option<QuantizeWeightedFn> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => q4_0::quantize_weighted,
        T::Q4_1 => q4_1::quantize_weighted,
        T::Q5_0 => q5_0::quantize_weighted,
        T::Q5_1 => q5_1::quantize_weighted,
        T::Q2_K => q2_k::quantize_weighted,
        T::Q3_K => q3_k::quantize_weighted,
        T::Q4_K => q4_k::quantize_weighted,
        T::Q5_K => q5_k::quantize_weighted,
        T::Q6_K => q6_k::quantize_weighted,
        T::IQ4_NL => iq4_nl::quantize_weighted,
        T::IQ4_XS => iq4_xs::quantize_weighted,
        T::IQ3_XXS => |x, w, y| iq_quantize::quantize_iq3_xxs(x, Some(w), y),
        T::IQ3_S => |x, w, y| iq_quantize::quantize_iq3_s(x, Some(w), y),
        T::IQ2_XXS => iq_quantize::quantize_iq2_xxs,
        T::IQ2_XS => iq_quantize::quantize_iq2_xs,
        T::IQ2_S => |x, w, y| iq_quantize::quantize_iq2_s(x, Some(w), y),
        T::IQ1_S => iq1_quantize::quantize_iq1_s,
        T::IQ1_M => |x, w, y| iq1_quantize::quantize_iq1_m(x, Some(w), y),
        _ => return None,
    })
}
