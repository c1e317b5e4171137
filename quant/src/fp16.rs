//! Scalar half-precision conversions exactly as ggml's reference code does
//! them (ggml-impl.h): fp32 -> fp16 rounds to nearest even and maps every NaN
//! to the quiet NaN 0x7E00 (keeping the sign); fp32 -> bf16 rounds to nearest
//! even and quiets NaNs by setting bit 6 of the truncated pattern.

use half::f16;

/// fp32 -> IEEE binary16 bits, round to nearest even, NaN -> sign | 0x7E00.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return sign | 0x7E00;
    }
    // `half` rounds finite values (including subnormals and overflow to
    // infinity) to nearest even, which is what ggml's bit trick computes.
    f16::from_f32(x).to_bits()
}

/// IEEE binary16 bits -> fp32 (exact, NaN payloads kept). Branch-free so
/// the dot loops vectorize: a normal half (or inf/NaN) has its
/// exponent/mantissa shifted into place, re-biased by adding 0x70000000 and
/// scaled by 2^-112 (which also carries exponent 31 onto 255); a subnormal
/// is built from a float with the mantissa bits under a 0.5 exponent, minus
/// 0.5.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let magnitude = (h & 0x7fff) as u32;
    let sign = ((h & 0x8000) as u32) << 16;
    let normalized = f32::from_bits((magnitude << 13) + 0x7000_0000) * f32::from_bits(0x0780_0000);
    let denormalized = f32::from_bits(magnitude | (126 << 23)) - 0.5;
    let denorm_mask = ((magnitude as i32) < 0x400) as u32;
    let denorm_mask = denorm_mask.wrapping_neg();
    let bits = (denormalized.to_bits() & denorm_mask) | (normalized.to_bits() & !denorm_mask);
    f32::from_bits(sign | bits)
}

/// fp32 -> bfloat16 bits, round to nearest even; NaN keeps its top bits and is
/// forced quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits -> fp32 (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Read a little-endian fp16 from two bytes.
#[inline]
pub(crate) fn f16_le(b0: u8, b1: u8) -> f32 {
    f16_to_f32(u16::from_le_bytes([b0, b1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounding_matches_ieee_and_ggml_nan_rule() {
        assert_eq!(f32_to_f16(1.0), 0x3C00);
        assert_eq!(f32_to_f16(-2.0), 0xC000);
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16(65520.0), 0x7C00); // ties to even -> inf
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7C00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(f32::NAN), 0x7E00);
        assert_eq!(f32_to_f16(-f32::NAN), 0xFE00);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: rounds to even (1).
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3C00);
        // 1 + 3 * 2^-11 is halfway between 1+2^-10 and 1+2^-9: to even (..02).
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3C02);
        // Smallest subnormal and half of it (ties to even -> 0).
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001);
        assert_eq!(f32_to_f16(2.980_232_2e-8), 0x0000);
        for h in [0u16, 1, 0x3C00, 0x7BFF, 0x8001, 0x0400, 0x03FF] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h);
        }
    }

    #[test]
    fn f16_to_f32_matches_ieee_for_every_pattern() {
        for h in 0..=u16::MAX {
            let ours = f16_to_f32(h);
            let ieee = f16::from_bits(h).to_f32();
            if ieee.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}");
                assert_eq!(ours.to_bits() >> 31, ieee.to_bits() >> 31, "{h:#06x} sign");
            } else {
                assert_eq!(ours.to_bits(), ieee.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn bf16_rounding_and_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7FC0);
        assert_eq!(f32_to_bf16(f32::from_bits(0xff81_0000)), 0xFFC1);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80); // rounds up to inf
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
    }
}
