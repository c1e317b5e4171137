//! The memory read loop that decode speed is measured against: the
//! wrapping sum of a buffer's u64 words, as fast as this CPU's widest
//! loads go (AVX2 where the CPU has it: four 32-byte loads in flight per
//! 128 bytes, independent sums), so that it streams what the memory
//! gives. `cargo bench -p quant` and `mamba-gguf bench --profile` time it
//! beside the kernels.

/// Wrapping sum of the little-endian u64 words of `bytes` (a tail of
/// fewer than 8 bytes is ignored). The value only keeps the loop honest.
pub fn sum_words(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { sum_avx2(bytes) };
    }
    sum_portable(bytes)
}

fn sum_portable(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let lines = bytes.chunks_exact(64);
    let tail = lines.remainder();
    for line in lines {
        for (a, w) in acc.iter_mut().zip(line.chunks_exact(8)) {
            *a = a.wrapping_add(u64::from_le_bytes(std::array::from_fn(|i| w[i])));
        }
    }
    let mut s = acc.iter().fold(0u64, |x, &y| x.wrapping_add(y));
    for w in tail.chunks_exact(8) {
        s = s.wrapping_add(u64::from_le_bytes(std::array::from_fn(|i| w[i])));
    }
    s
}

/// [`sum_words`] with 32-byte loads.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(bytes: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let lines = bytes.chunks_exact(128);
    let tail = lines.remainder();
    for line in lines {
        for (k, a) in acc.iter_mut().enumerate() {
            // In bounds: the line holds 128 bytes.
            let v = _mm256_loadu_si256(line.as_ptr().add(32 * k) as *const __m256i);
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let v = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    let mut lanes = [0u64; 4];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v);
    lanes
        .iter()
        .fold(sum_portable(tail), |x, &y| x.wrapping_add(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sums_the_words() {
        // Lengths around the 128-byte lines, with a tail that is no word.
        for len in [0usize, 7, 8, 64, 127, 128, 129, 1000, 4096 + 72 + 5] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let want = bytes
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(std::array::from_fn(|i| w[i])))
                .fold(0u64, u64::wrapping_add);
            assert_eq!(sum_portable(&bytes), want, "len {len}");
            assert_eq!(sum_words(&bytes), want, "len {len}");
        }
    }
}
