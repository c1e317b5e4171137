//! `cargo bench -p quant`: single-threaded matvec throughput (GB/s of
//! weight bytes) per type and SIMD path, beside a plain memory-read loop
//! measured in the same run, and matmul tokens/s for t = 1, 8, 32, 64
//! activation rows, so the effect of the prefill chunk size shows. Times are
//! this thread's CPU time (Linux schedstat; wall time elsewhere, and for the
//! 2-thread memory read), so a busy shared machine skews them less; about
//! a minute or two on 2 cores. `QUANT_BENCH_QUICK=1` halves it;
//! `QUANT_BENCH_TYPES=q4_0,q4_k` measures only those types.
//!
//! Sizes: "4096x4096" is one matrix (it fits the 32 MiB L3 of the machine
//! this was written on for the 4-6 bit types); "8192x4096 DRAM" cycles
//! through enough copies of an 8192 x 4096 matrix (>= 96 MiB in all) that
//! every call streams its weights from memory.

use quant::{kernel_for_path, matmul, matvec, quantize_row, GgmlType, Kernel, SimdPath};
use std::hint::black_box;
use std::time::{Duration, Instant};

const TYPES: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];
const MATMUL_TYPES: [GgmlType; 4] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `rows` weight rows of `n` values: random level bytes with finite scales
/// (the kernels' speed does not depend on the values; quantizing 100 MB
/// with the reference K-quantizers would take minutes).
fn weights(ty: GgmlType, n: usize, rows: usize, rng: &mut Rng) -> Vec<u8> {
    let rb = ty.row_bytes(n).expect("row bytes");
    let mut w = vec![0u8; rb * rows];
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let mut row = vec![0u8; rb];
            quantize_row(ty, &x, &mut row).expect("quantize");
            for r in w.chunks_exact_mut(rb) {
                r.copy_from_slice(&row);
            }
        }
        _ => {
            for c in w.chunks_mut(8) {
                let v = rng.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            let scale = 0x2E66u16.to_le_bytes(); // fp16 0.1
            let fields: &[usize] = match ty {
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                _ => &[0],
            };
            for blk in w.chunks_exact_mut(ty.type_size()) {
                for &o in fields {
                    blk[o..o + 2].copy_from_slice(&scale);
                }
            }
        }
    }
    w
}

fn acts(k: &Kernel, n: usize, t: usize, rng: &mut Rng) -> Vec<u8> {
    let ab = k.act.row_bytes(n).expect("act bytes");
    let mut a = vec![0u8; ab * t];
    for row in a.chunks_exact_mut(ab) {
        let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        quantize_row(k.act, &x, row).expect("quantize act");
    }
    a
}

/// Seconds this thread has run on a CPU (Linux schedstat), so that the
/// figures hold on a machine shared with other work; wall time elsewhere.
fn thread_cpu(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns * 1e-9)
        .unwrap_or_else(|| start.elapsed().as_secs_f64())
}

/// Seconds per call of `f` (this thread's CPU time): the best mean over 3
/// batches, each at least `budget / 3` of wall time (at least one call).
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let origin = Instant::now();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let c0 = thread_cpu(origin);
        let mut reps = 0u32;
        while reps == 0 || start.elapsed() < budget / 3 {
            f();
            reps += 1;
        }
        best = best.min((thread_cpu(origin) - c0) / reps as f64);
    }
    best
}

/// As [`time`] in wall time (for work spread over several threads).
fn time_wall(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut reps = 0u32;
        while reps == 0 || start.elapsed() < budget / 3 {
            f();
            reps += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

/// GB/s of `quant::read_loop::sum_words` over a `bytes` buffer on
/// `threads` threads (each its own contiguous share).
fn memory_read(bytes: usize, threads: usize) -> f64 {
    let buf: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    if threads == 1 {
        let s = time(Duration::from_millis(1500), || {
            black_box(quant::read_loop::sum_words(&buf));
        });
        return bytes as f64 / s / 1e9;
    }
    let per = buf.len().div_ceil(threads).next_multiple_of(128);
    let s = time_wall(Duration::from_millis(1500), || {
        let total: u64 = std::thread::scope(|sc| {
            let hs: Vec<_> = buf
                .chunks(per)
                .map(|c| sc.spawn(move || quant::read_loop::sum_words(c)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        black_box(total);
    });
    bytes as f64 / s / 1e9
}

fn paths() -> Vec<SimdPath> {
    let mut p: Vec<SimdPath> = SimdPath::ALL.into_iter().rev().collect();
    p.retain(|p| {
        if !p.cpu_has() {
            println!("note: this CPU lacks {}; not measured", p.name());
        }
        p.cpu_has()
    });
    p
}

fn main() {
    let quick = std::env::var("QUANT_BENCH_QUICK").is_ok_and(|v| v != "0");
    let only: Option<Vec<String>> = std::env::var("QUANT_BENCH_TYPES")
        .ok()
        .map(|v| v.split(',').map(|t| t.trim().to_lowercase()).collect());
    let wanted = |ty: GgmlType| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|t| *t == ty.name().to_lowercase()))
    };
    let budget = Duration::from_millis(if quick { 150 } else { 300 });
    let paths = paths();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let mem1 = memory_read(1 << 30, 1);
    let mem2 = memory_read(1 << 30, 2);
    println!(
        "memory read (quant::read_loop over 1 GiB): 1 thread {mem1:.1} GB/s, 2 threads {mem2:.1} GB/s"
    );
    println!();
    println!("matvec, 1 thread, GB/s of weight bytes (fraction of the 1-thread memory read)");
    print!("{:6} {:>16}", "type", "size");
    for p in &paths {
        print!(" {:>16}", p.name());
    }
    println!();

    let n = 4096;
    for ty in TYPES.into_iter().filter(|&t| wanted(t)) {
        let rb = ty.row_bytes(n).expect("row bytes");
        for (label, rows, min_total) in [
            ("4096x4096", 4096usize, 0usize),
            ("8192x4096 DRAM", 8192, 96 << 20),
        ] {
            let one = rb * rows;
            let copies = min_total.div_ceil(one).max(1);
            let w = weights(ty, n, rows * copies, &mut rng);
            print!("{:6} {:>16}", ty.name(), label);
            for &p in &paths {
                let Some(k) = kernel_for_path(ty, p) else {
                    print!(" {:>16}", "-");
                    continue;
                };
                let a = acts(&k, n, 1, &mut rng);
                let mut out = vec![0f32; rows];
                let mut c = 0;
                let s = time(budget, || {
                    matvec(&k, n, &w[c * one..(c + 1) * one], &a, &mut out).expect("valid buffers");
                    c = (c + 1) % copies;
                    black_box(&out);
                });
                let gbs = one as f64 / s / 1e9;
                print!(" {:>8.2} ({:>4.0}%)", gbs, 100.0 * gbs / mem1);
            }
            println!();
        }
    }

    println!();
    println!(
        "matmul 4096x4096, 1 thread: tokens/s (activation rows per second) for t tokens per call"
    );
    print!("{:6} {:>8}", "type", "path");
    let ts = [1usize, 8, 32, 64];
    for t in ts {
        print!(" {:>10}", format!("t={t}"));
    }
    println!();
    for ty in MATMUL_TYPES.into_iter().filter(|&t| wanted(t)) {
        let rows = 4096;
        let w = weights(ty, n, rows, &mut rng);
        for &p in &paths {
            let Some(k) = kernel_for_path(ty, p) else {
                continue;
            };
            print!("{:6} {:>8}", ty.name(), p.name());
            for t in ts {
                let a = acts(&k, n, t, &mut rng);
                let mut out = vec![0f32; rows * t];
                let s = time(budget, || {
                    matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid buffers");
                    black_box(&out);
                });
                print!(" {:>10.1}", t as f64 / s);
            }
            println!();
        }
    }

    println!();
    println!("activation quantization (once per matmul per token), n = 4096, 1 thread");
    for act in [GgmlType::Q8_0, GgmlType::Q8_K] {
        let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let mut q = vec![0u8; act.row_bytes(n).expect("bytes")];
        let s = time(budget, || {
            quantize_row(act, &x, &mut q).expect("quantize");
            black_box(&q);
        });
        println!("{:6} {:.2} us per row", act.name(), s * 1e6);
    }

    println!();
    println!("quant::math over 65536 f32 (ns per value), beside std's scalar f32 functions");
    let xs: Vec<f32> = (0..65536).map(|_| rng.f32() * 20.0).collect();
    let mut y = xs.clone();
    type SliceFn = fn(&mut [f32]);
    type StdFn = fn(f32) -> f32;
    let cases: [(&str, SliceFn, StdFn); 3] = [
        ("exp", quant::math::exp_slice, f32::exp),
        ("softplus", quant::math::softplus_slice, |x| x.exp().ln_1p()),
        ("silu", quant::math::silu_slice, |x| x / (1.0 + (-x).exp())),
    ];
    for (name, ours, std_fn) in cases {
        let a = time(budget, || {
            y.copy_from_slice(&xs);
            ours(&mut y);
            black_box(&y);
        });
        let b = time(budget, || {
            for (o, &x) in y.iter_mut().zip(&xs) {
                *o = std_fn(x);
            }
            black_box(&y);
        });
        let per = 1e9 / xs.len() as f64;
        println!("{name:9} quant {:.2} ns, std {:.2} ns", a * per, b * per);
    }
}
