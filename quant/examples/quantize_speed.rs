//! Rough single-thread throughput of the reference K-quantizers on a
//! 4096 x 4096 matrix of normal random values (by hand:
//! `cargo run --release -p quant --example quantize_speed`). Prints MB/s of
//! f32 input and an FNV-1a hash of the output bytes, so a speed change can be
//! checked for identical output. Never a test.

use quant::{quantize_row, GgmlType};
use std::time::Instant;

/// Deterministic standard normals (xorshift64* + Box-Muller).
fn normals(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn main() {
    let (n, rows) = (4096usize, 4096usize);
    let x = normals(n * rows);
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let Some(rb) = ty.row_bytes(n) else { continue };
        let mut w = vec![0u8; rb * rows];
        let t = Instant::now();
        for (src, dst) in x.chunks(n).zip(w.chunks_mut(rb)) {
            quantize_row(ty, src, dst).expect("quantize");
        }
        let secs = t.elapsed().as_secs_f64();
        let hash = w.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        println!(
            "{ty:?}: {:.1} MB/s f32 in ({secs:.2} s), output fnv1a {hash:016x}",
            (n * rows * 4) as f64 / secs / 1e6
        );
    }
}
