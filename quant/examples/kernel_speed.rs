//! Rough matvec throughput of the selected kernel per type (by hand:
//! `cargo run --release -p quant --example kernel_speed`; best of 40 runs,
//! weights in cache). Never a test.

use quant::{kernel, matmul, matvec, quantize_row, GgmlType};
use std::time::Instant;

fn main() {
    let (n, rows) = (4096usize, 1024usize);
    let x: Vec<f32> = (0..n * rows)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect();
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let Some(k) = kernel(ty) else { continue };
        let Some(rb) = ty.row_bytes(n) else { continue };
        let mut w = vec![0u8; rb * rows];
        for (src, dst) in x.chunks(n).zip(w.chunks_mut(rb)) {
            quantize_row(ty, src, dst).expect("quantize");
        }
        let Some(ab) = k.act.row_bytes(n) else {
            continue;
        };
        let mut a = vec![0u8; ab];
        quantize_row(k.act, &x[..n], &mut a).expect("quantize act");
        let mut out = vec![0f32; rows];
        // Best of 40 (the machine is shared): the kernel's own speed with
        // the 1024-row matrix in cache.
        let mut s = f64::INFINITY;
        for _ in 0..40 {
            let t = Instant::now();
            matvec(&k, n, &w, &a, &mut out).expect("valid buffers");
            s = s.min(t.elapsed().as_secs_f64());
        }
        // Prefill form: 64 activation rows per call (the default chunk).
        let t = 64;
        let mut at = vec![0u8; ab * t];
        for (j, dst) in at.chunks_mut(ab).enumerate() {
            quantize_row(k.act, &x[j * n..(j + 1) * n], dst).expect("quantize act");
        }
        let mut outt = vec![0f32; rows * t];
        let mut sm = f64::INFINITY;
        for _ in 0..5 {
            let t0 = Instant::now();
            matmul(&k, n, rows, &w, t, &at, &mut outt).expect("valid buffers");
            sm = sm.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "{ty:5} {:?}: {:.2} ms per {rows}x{n} matvec, {:.2} GB/s of weights; matmul t={t}: {:.1} GMAC/s",
            k.path,
            s * 1e3,
            w.len() as f64 / s / 1e9,
            (rows * n * t) as f64 / sm / 1e9
        );
    }
}
