//! Rough matvec throughput of the selected kernel per type (by hand:
//! `cargo run --release -p quant --example kernel_speed`). Never a test.

use quant::{kernel, matvec, quantize_row, GgmlType};
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
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            matvec(&k, n, &w, &a, &mut out);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{ty:5} {:?}: {:.2} ms per {rows}x{n} matvec, {:.2} GB/s of weights",
            k.path,
            s * 1e3,
            w.len() as f64 / s / 1e9
        );
    }
}
