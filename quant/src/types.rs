//! The ggml tensor type table: ids as they appear in GGUF files, block sizes
//! (values per block) and byte sizes per block.
//!
//! Every type ggml has ever written to a GGUF is listed so a reader can size
//! (and therefore validate) any tensor, even one whose arithmetic we do not
//! implement. `GgmlType::is_supported` says which ones this crate computes with.

use std::fmt;

/// A ggml tensor element type. The discriminant is ggml's type id.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Every known type, in id order (for id and name look-ups and `all`).
const ALL: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ1_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ3_S,
    GgmlType::IQ2_S,
    GgmlType::IQ4_XS,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::IQ1_M,
    GgmlType::BF16,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
    GgmlType::NVFP4,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
];

impl GgmlType {
    /// The type for a ggml type id, or `None` for an id ggml never assigned
    /// (or retired, such as 4, 5 and 31-33).
    pub fn from_id(id: u32) -> Option<Self> {
        ALL.iter().copied().find(|t| t.id() == id)
    }

    /// Parse a type name as ggml prints it ("Q4_K", "f16", case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// (name, values per block, bytes per block). An exhaustive match: a new
    /// variant without its sizes does not compile (no silent fallback).
    /// ggml 0c1e570 for NVFP4 (4 E4M3 sub-block scales + 32 nibble bytes),
    /// Q1_0 (fp16 d + 1 bit per value) and Q2_0 (fp16 d + 2 bits per value).
    const fn entry(self) -> (&'static str, usize, usize) {
        match self {
            GgmlType::F32 => ("F32", 1, 4),
            GgmlType::F16 => ("F16", 1, 2),
            GgmlType::Q4_0 => ("Q4_0", 32, 18),
            GgmlType::Q4_1 => ("Q4_1", 32, 20),
            GgmlType::Q5_0 => ("Q5_0", 32, 22),
            GgmlType::Q5_1 => ("Q5_1", 32, 24),
            GgmlType::Q8_0 => ("Q8_0", 32, 34),
            GgmlType::Q8_1 => ("Q8_1", 32, 36),
            GgmlType::Q2_K => ("Q2_K", 256, 84),
            GgmlType::Q3_K => ("Q3_K", 256, 110),
            GgmlType::Q4_K => ("Q4_K", 256, 144),
            GgmlType::Q5_K => ("Q5_K", 256, 176),
            GgmlType::Q6_K => ("Q6_K", 256, 210),
            GgmlType::Q8_K => ("Q8_K", 256, 292),
            GgmlType::IQ2_XXS => ("IQ2_XXS", 256, 66),
            GgmlType::IQ2_XS => ("IQ2_XS", 256, 74),
            GgmlType::IQ3_XXS => ("IQ3_XXS", 256, 98),
            GgmlType::IQ1_S => ("IQ1_S", 256, 50),
            GgmlType::IQ4_NL => ("IQ4_NL", 32, 18),
            GgmlType::IQ3_S => ("IQ3_S", 256, 110),
            GgmlType::IQ2_S => ("IQ2_S", 256, 82),
            GgmlType::IQ4_XS => ("IQ4_XS", 256, 136),
            GgmlType::I8 => ("I8", 1, 1),
            GgmlType::I16 => ("I16", 1, 2),
            GgmlType::I32 => ("I32", 1, 4),
            GgmlType::I64 => ("I64", 1, 8),
            GgmlType::F64 => ("F64", 1, 8),
            GgmlType::IQ1_M => ("IQ1_M", 256, 56),
            GgmlType::BF16 => ("BF16", 1, 2),
            GgmlType::TQ1_0 => ("TQ1_0", 256, 54),
            GgmlType::TQ2_0 => ("TQ2_0", 256, 66),
            GgmlType::MXFP4 => ("MXFP4", 32, 17),
            GgmlType::NVFP4 => ("NVFP4", 64, 36),
            GgmlType::Q1_0 => ("Q1_0", 128, 18),
            GgmlType::Q2_0 => ("Q2_0", 64, 18),
        }
    }

    /// ggml's numeric type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type ("Q4_K").
    pub fn name(self) -> &'static str {
        self.entry().0
    }

    /// Values per block (1 for plain float/int types).
    pub fn block_size(self) -> usize {
        self.entry().1
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().2
    }

    /// Bytes taken by a row of `n` values, or `None` when `n` is not a
    /// multiple of the block size or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether this crate dequantizes and dots with the type (and, except
    /// the IQ1, IQ2 and IQ3 types, quantizes to it).
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::Q8_K
                | GgmlType::IQ4_NL
                | GgmlType::IQ4_XS
                | GgmlType::IQ3_XXS
                | GgmlType::IQ3_S
                | GgmlType::IQ2_XXS
                | GgmlType::IQ2_XS
                | GgmlType::IQ2_S
                | GgmlType::IQ1_S
                | GgmlType::IQ1_M
                | GgmlType::TQ1_0
                | GgmlType::TQ2_0
        )
    }

    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        ALL.iter().copied()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::Q4_K.row_bytes(4096), Some(16 * 144));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::BF16.id(), 30);
    }

    /// Each type has its own name and sizes, never another type's (the old
    /// table look-up fell back to F32's row for a type missing from it), and
    /// every id in ggml's range that maps to a type maps back to itself.
    #[test]
    fn every_type_has_its_own_entry() {
        let all: Vec<GgmlType> = GgmlType::all().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.name(), b.name(), "{a:?} and {b:?} share a name");
            }
            if *a != GgmlType::F32 {
                assert_ne!(a.name(), "F32", "{a:?}");
            }
        }
        for id in 0..=64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
            }
        }
        assert_eq!(all.len(), 35);
        assert_eq!(GgmlType::Q2_0.block_size(), 64);
        assert_eq!(GgmlType::Q2_0.type_size(), 18);
        assert_eq!(GgmlType::I64.type_size(), 8);
    }
}
