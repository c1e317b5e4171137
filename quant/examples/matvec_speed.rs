//! Matvec-only in-cache throughput of the selected kernel for the types
//! named on the command line (all quantized types when none), for comparing
//! two builds side by side on a noisy machine: `cargo run --release -p quant
//! --example matvec_speed -- Q4_K Q6_K`. Prints, per type, GB/s of weights
//! of the best of 200 runs of a 1024x4096 matvec (kernel_speed's shape).
//! `T=64` times the prefill form instead (`matmul` against 64 activation
//! rows). Never a test.

use quant::{kernel, matmul, matvec, quantize_row, GgmlType};
use std::time::Instant;

fn main() {
    let all = [
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
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
    ];
    let names: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<GgmlType> = all
        .into_iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(t.name())))
        .collect();
    // ROWS=128 keeps the matrix in L2 (the default 1024 rows are L3-sized).
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let t: usize = std::env::var("T")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // N=256 times rows of one super-block (a 7B dt projection's).
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let x: Vec<f32> = (0..n * rows)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect();
    for ty in types {
        let (Some(k), Some(rb)) = (kernel(ty), ty.row_bytes(n)) else {
            continue;
        };
        let mut w = vec![0u8; rb * rows];
        for (i, (src, dst)) in x.chunks(n).zip(w.chunks_mut(rb)).enumerate() {
            if quantize_row(ty, src, dst).is_err() {
                // A type we read but do not write (IQ3): arbitrary blocks,
                // the fp16 scale first in each.
                for (j, b) in dst.iter_mut().enumerate() {
                    *b = ((i * 131 + j * 29) % 251) as u8;
                }
                for blk in dst.chunks_mut(ty.type_size()) {
                    blk[..2].copy_from_slice(&0x2000u16.to_le_bytes());
                }
            }
        }
        let Some(ab) = k.act.row_bytes(n) else {
            continue;
        };
        let mut a = vec![0u8; ab * t];
        for (j, dst) in a.chunks_mut(ab).enumerate() {
            let src = &x[(j % rows) * n..(j % rows + 1) * n];
            quantize_row(k.act, src, dst).expect("quantize act");
        }
        let mut out = vec![0f32; rows * t];
        let mut best = f64::INFINITY;
        for _ in 0..(200 * 1024 / rows.max(1) / t).max(3) {
            let start = Instant::now();
            if t == 1 {
                matvec(&k, n, &w, &a, &mut out).expect("valid buffers");
            } else {
                matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid buffers");
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        let gbs = w.len() as f64 / best / 1e9;
        if t == 1 {
            println!(
                "{ty:5} {:?}: {:.3} ms per {rows}x{n} matvec, {gbs:.2} GB/s of weights",
                k.path,
                best * 1e3
            );
        } else {
            println!(
                "{ty:5} {:?}: {:.3} ms per {rows}x{n} matmul against {t} rows",
                k.path,
                best * 1e3
            );
        }
    }
}
