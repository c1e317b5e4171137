//! Every kernel through the emulator (or a GPU, see [`test_device`]) against a scalar reference: the quant
//! crate's dequantizers for the weights, plain f32/f64 loops for the rest.
//!
//! Tolerances: the Q8A quantizer is compared byte for byte (its math is
//! exact and order-free). Dots and norms differ from the f64 reference only
//! by fp32 rounding in a different order (per-lane partial sums, warp
//! butterfly, factored scales), bounded by a few n * 2^-24 * sum |terms|; we
//! allow 1e-5 * sum |terms| (n <= 2048). The scan and conv use expf/log1pf
//! whose results may differ from Rust's in the last ulps: 1e-5 relative.

use mamba_cuda::ops::{self, MixerShape, MvOut, QActs, ScanInputs, StateSlots};
use mamba_cuda::{Buffer, Device};
use quant::GgmlType;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The device under test: the emulator, or GPU 0 when
/// `MAMBA_GGUF_TEST_DEVICE=cuda` (how `scripts/gpu/check.sh` runs these same
/// kernel tests on a machine lent a GPU). The emulator's own fault-detection
/// test always runs on the emulator.
fn test_device() -> Device {
    match std::env::var("MAMBA_GGUF_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            Device::cuda(0).unwrap_or_else(|e| panic!("MAMBA_GGUF_TEST_DEVICE=cuda: {e}"))
        }
        _ => Device::emu(),
    }
}

fn view<T: mamba_cuda::Elem>(dev: &Device, b: &Buffer<T>) -> mamba_cuda::View {
    dev.view(b, 0, b.len()).unwrap()
}

/// The Q8A reference: per 32 values d = amax / 127, q = round(x / d).
fn q8a_ref(x: &[f32]) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let (mut q, mut d, mut s) = (vec![], vec![], vec![]);
    for blk in x.chunks(32) {
        let mut amax = 0f32;
        for &v in blk {
            let a = v.abs();
            if a > amax || a.is_nan() {
                amax = a;
            }
        }
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        let mut sum = 0;
        for &v in blk {
            let r = (v * id).round();
            let qi = if r.is_nan() {
                0
            } else {
                r.clamp(-127.0, 127.0) as i32
            };
            q.push(qi as i8);
            sum += qi;
        }
        d.push(db);
        s.push(sum);
    }
    (q, d, s)
}

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

#[test]
fn quantize_q8a_is_byte_exact() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(1);
    let (rows, n) = (3, 320);
    let mut x = rand_vec(&mut rng, rows * n, 3.0);
    // edge blocks: all equal, all zero, a NaN, an inf, halves (x*id = k + 0.5)
    x[32..64].fill(0.75);
    x[64..96].fill(0.0);
    x[100] = f32::NAN;
    x[130] = f32::INFINITY;
    for (i, v) in x[160..192].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { i as f32 + 0.5 };
    }
    let xb = dev.upload(&x).unwrap();
    let q: Buffer<i8> = dev.alloc(rows * n).unwrap();
    let d: Buffer<f32> = dev.alloc(rows * n / 32).unwrap();
    let s: Buffer<i32> = dev.alloc(rows * n / 32).unwrap();
    let acts = QActs {
        q: &view(&dev, &q),
        d: &view(&dev, &d),
        s: &view(&dev, &s),
    };
    ops::quantize_q8a(&dev, &view(&dev, &xb), rows, n, n, &acts).unwrap();
    let (rq, rd, rs) = q8a_ref(&x);
    assert_eq!(dev.read(&q).unwrap(), rq);
    assert_eq!(dev.read(&s).unwrap(), rs);
    let gd = dev.read(&d).unwrap();
    for (a, b) in gd.iter().zip(&rd) {
        assert!(a.to_bits() == b.to_bits(), "{a} vs {b}");
    }
}

/// Store fp16 bits `d` as an IQ1_M block's scale: its four nibbles are the
/// top nibbles of the block's last four u16 (bytes 49, 51, 53, 55).
fn iq1m_set_scale(blk: &mut [u8], d: u16) {
    for k in 0..4 {
        let b = &mut blk[49 + 2 * k];
        *b = (*b & 0x0f) | ((((d >> (4 * k)) & 0xf) as u8) << 4);
    }
}

/// `w` quantized to `ty`; for a type we read but do not write without an
/// importance matrix (the IQ1 types, IQ2_XXS, IQ2_XS) blocks derived from
/// the values' bits instead, with a small finite fp16 scale first in each.
fn quantize_rows(ty: GgmlType, w: &[f32], n: usize) -> Vec<u8> {
    let rb = ty.row_bytes(n).unwrap();
    let mut out = vec![0u8; rb * (w.len() / n)];
    for (src, dst) in w.chunks(n).zip(out.chunks_mut(rb)) {
        if let Err(e) = quant::quantize_row(ty, src, dst) {
            assert!(
                matches!(
                    e,
                    quant::QuantError::NoQuantizer { .. } | quant::QuantError::NeedsImatrix { .. }
                ),
                "{ty}: {e}"
            );
            for (b, v) in dst.iter_mut().zip(src.iter().cycle()) {
                *b = (v.to_bits() >> 9) as u8;
            }
            // A small finite fp16 scale in each block: first, or for IQ1_M
            // spread over the top nibbles of its last 8 bytes.
            for blk in dst.chunks_mut(ty.type_size()) {
                if ty == GgmlType::IQ1_M {
                    iq1m_set_scale(blk, half_bits(0.01));
                } else {
                    blk[..2].copy_from_slice(&half_bits(0.01).to_le_bytes());
                }
            }
        }
    }
    out
}

fn check_matvec(ty: GgmlType, n: usize, rows: usize, ncols: usize, wbytes: &[u8], x: &[f32]) {
    let dev = test_device();
    let rb = ty.row_bytes(n).unwrap();
    let mut wf = vec![0f32; n * rows];
    for (src, dst) in wbytes.chunks(rb).zip(wf.chunks_mut(n)) {
        quant::dequantize_row(ty, src, dst).unwrap();
    }
    let (q, d, s) = q8a_ref(x);
    let qb = dev.upload(&q).unwrap();
    let db = dev.upload(&d).unwrap();
    let sb = dev.upload(&s).unwrap();
    let wb = ops::upload_weights(&dev, ty, n, wbytes).unwrap();
    let out: Buffer<f32> = dev.alloc(ncols * rows).unwrap();
    let acts = QActs {
        q: &view(&dev, &qb),
        d: &view(&dev, &db),
        s: &view(&dev, &sb),
    };
    ops::matvec(
        &dev,
        ty,
        &view(&dev, &wb),
        n,
        rows,
        &acts,
        ncols,
        &MvOut::to(&view(&dev, &out)),
    )
    .unwrap();
    let got = dev.read(&out).unwrap();
    for c in 0..ncols {
        for r in 0..rows {
            let (mut exact, mut mag) = (0f64, 0f64);
            for k in 0..n {
                let a = d[c * n / 32 + k / 32] as f64 * q[c * n + k] as f64;
                let t = wf[r * n + k] as f64 * a;
                exact += t;
                mag += t.abs();
            }
            let g = got[c * rows + r] as f64;
            assert!(
                (g - exact).abs() <= 1e-5 * mag + 1e-30,
                "{ty:?} n {n} col {c} row {r}: got {g}, want {exact} (mag {mag})"
            );
        }
    }
}

const QTYPES: [GgmlType; 21] = [
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
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::TQ1_0,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::TQ2_0,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

#[test]
fn matvec_every_type_and_width_matches_dequantized_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for ty in QTYPES {
        // 2304 = 9 K-blocks: 72 units, not a multiple of the 32 lanes; 7 rows: a partial block of warps.
        let (n, rows) = (2304, 7);
        let w = rand_vec(&mut rng, n * rows, 1.0);
        let wq = quantize_rows(ty, &w, n);
        for ncols in [1, 2, 3, 5, 8] {
            let x = rand_vec(&mut rng, n * ncols, 2.0);
            check_matvec(ty, n, rows, ncols, &wq, &x);
        }
    }
}

#[test]
fn matvec_random_bytes_cover_every_bit_pattern() {
    // Raw random blocks (any nibble, -128 in Q8_0, any K scale) with finite
    // f16 scales: the decoders see every level and scale.
    let mut rng = StdRng::seed_from_u64(3);
    for ty in QTYPES {
        let (n, rows) = (512, 5);
        let rb = ty.row_bytes(n).unwrap();
        let mut w: Vec<u8> = (0..rb * rows).map(|_| rng.gen()).collect();
        let bs = ty.type_size();
        let scale_offs: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::IQ3_XXS | GgmlType::IQ3_S => &[0],
            GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S => &[0],
            GgmlType::TQ2_0 => &[64],
            GgmlType::TQ1_0 => &[52],
            GgmlType::IQ1_S => &[0],
            GgmlType::IQ1_M => &[],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
            _ => &[0, 2],
        };
        for blk in w.chunks_mut(bs) {
            for &o in scale_offs {
                let h = half_bits(rng.gen_range(-0.05f32..0.05));
                blk[o..o + 2].copy_from_slice(&h.to_le_bytes());
            }
            if ty == GgmlType::IQ1_M {
                iq1m_set_scale(blk, half_bits(rng.gen_range(-0.05f32..0.05)));
            }
        }
        if ty == GgmlType::Q8_0 {
            w[2] = 0x80; // -128
        }
        let x = rand_vec(&mut rng, n * 4, 1.0);
        check_matvec(ty, n, rows, 4, &w, &x);
    }
}

fn half_bits(v: f32) -> u16 {
    quant::fp16::f32_to_f16(v)
}

#[test]
fn matvec_nan_activation_poisons_only_its_column() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(4);
    let (n, rows, ty) = (256, 3, GgmlType::Q4_K);
    let wq = quantize_rows(ty, &rand_vec(&mut rng, n * rows, 1.0), n);
    let mut x = rand_vec(&mut rng, n * 2, 1.0);
    x[n + 5] = f32::NAN;
    let xb = dev.upload(&x).unwrap();
    let q: Buffer<i8> = dev.alloc(2 * n).unwrap();
    let d: Buffer<f32> = dev.alloc(2 * n / 32).unwrap();
    let s: Buffer<i32> = dev.alloc(2 * n / 32).unwrap();
    let acts = QActs {
        q: &view(&dev, &q),
        d: &view(&dev, &d),
        s: &view(&dev, &s),
    };
    ops::quantize_q8a(&dev, &view(&dev, &xb), 2, n, n, &acts).unwrap();
    let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
    let out: Buffer<f32> = dev.alloc(2 * rows).unwrap();
    ops::matvec(
        &dev,
        ty,
        &view(&dev, &wb),
        n,
        rows,
        &acts,
        2,
        &MvOut::to(&view(&dev, &out)),
    )
    .unwrap();
    let o = dev.read(&out).unwrap();
    assert!(o[..rows].iter().all(|v| v.is_finite()));
    assert!(o[rows..].iter().all(|v| v.is_nan()));
}

fn rms_ref(x: &[f32], w: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let sc = 1.0 / (ss + eps as f64).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * sc * w.map_or(1.0, |w| w[i] as f64)) as f32)
        .collect()
}

#[test]
fn rms_norm_weighted_and_weightless() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(5);
    for (n, rows) in [(4096, 2), (33, 3), (1, 1)] {
        let x = rand_vec(&mut rng, n * rows, 4.0);
        let w = rand_vec(&mut rng, n, 1.5);
        let xb = dev.upload(&x).unwrap();
        let wb = dev.upload(&w).unwrap();
        let yb: Buffer<f32> = dev.alloc(n * rows).unwrap();
        for weighted in [true, false] {
            let wv = view(&dev, &wb);
            ops::rms_norm(
                &dev,
                &view(&dev, &xb),
                weighted.then_some(&wv),
                &view(&dev, &yb),
                rows,
                n,
                n,
                n,
                1e-5,
            )
            .unwrap();
            let y = dev.read(&yb).unwrap();
            for r in 0..rows {
                let want = rms_ref(&x[r * n..(r + 1) * n], weighted.then_some(&w[..]), 1e-5);
                for (g, e) in y[r * n..(r + 1) * n].iter().zip(&want) {
                    assert!(
                        (g - e).abs() <= 1e-5 * e.abs().max(1e-3),
                        "n {n}: {g} vs {e}"
                    );
                }
            }
        }
    }
    // Falcon's dt/B/C norm: a segment of strided rows, in place.
    let (r_, nst, stride, rows) = (8, 16, 8 + 32, 3);
    let x = rand_vec(&mut rng, stride * rows, 2.0);
    let xb = dev.upload(&x).unwrap();
    let seg = dev.view(&xb, r_, stride * rows - r_).unwrap();
    ops::rms_norm(&dev, &seg, None, &seg, rows, nst, stride, stride, 1e-6).unwrap();
    let y = dev.read(&xb).unwrap();
    for r in 0..rows {
        let base = r * stride;
        assert_eq!(
            &y[base..base + r_],
            &x[base..base + r_],
            "dt part untouched"
        );
        let want = rms_ref(&x[base + r_..base + r_ + nst], None, 1e-6);
        for (g, e) in y[base + r_..base + r_ + nst].iter().zip(&want) {
            assert!((g - e).abs() <= 1e-5 * e.abs().max(1e-3));
        }
        assert_eq!(
            &y[base + r_ + nst..base + stride],
            &x[base + r_ + nst..base + stride],
            "C part untouched"
        );
    }
}

#[test]
fn add_and_argmax() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(6);
    let n = 1000;
    let a = rand_vec(&mut rng, n, 1.0);
    let b = rand_vec(&mut rng, n, 1.0);
    let ab = dev.upload(&a).unwrap();
    let bb = dev.upload(&b).unwrap();
    ops::add(
        &dev,
        &view(&dev, &ab),
        &view(&dev, &bb),
        &view(&dev, &ab),
        n,
    )
    .unwrap();
    let s = dev.read(&ab).unwrap();
    for i in 0..n {
        assert_eq!(s[i], a[i] + b[i]);
    }
    // rows: random; ties (first wins); all -inf; a NaN; max in the tail
    let n = 777;
    let mut x = rand_vec(&mut rng, n * 5, 10.0);
    x[n + 300] = 50.0;
    x[n + 20] = 50.0;
    x[2 * n..3 * n].fill(f32::NEG_INFINITY);
    x[3 * n + 400] = f32::NAN;
    x[3 * n + 10] = f32::NAN;
    x[5 * n - 1] = 99.0;
    let xb = dev.upload(&x).unwrap();
    let ob: Buffer<i32> = dev.alloc(10).unwrap();
    ops::argmax(&dev, &view(&dev, &xb), 5, n, &view(&dev, &ob)).unwrap();
    let o = dev.read(&ob).unwrap();
    let first_max = |r: &[f32]| {
        let mut bi = 0;
        for (i, &v) in r.iter().enumerate() {
            if v > r[bi] {
                bi = i;
            }
        }
        bi as i32
    };
    assert_eq!(o[0..2], [first_max(&x[..n]), -1]);
    assert_eq!(o[2..4], [20, -1]);
    assert_eq!(o[4..6], [0, -1]);
    assert_eq!(o[7], 10);
    assert_eq!(o[8..10], [n as i32 - 1, -1]);
    assert!(matches!(
        ops::argmax_result(&o),
        Err(mamba_cuda::CudaError::NanLogits { row: 3, index: 10 })
    ));
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[test]
fn conv1d_silu_chunk_then_decode_matches_reference() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(7);
    let (e, t, seqs, xs) = (200, 5, 2, 2 * 200);
    let x = rand_vec(&mut rng, seqs * t * xs, 1.0);
    let w = rand_vec(&mut rng, e * 4, 1.0);
    let b = rand_vec(&mut rng, e, 0.5);
    let st0 = rand_vec(&mut rng, seqs * e * 3, 1.0);
    let (xb, wb, bb, sb) = (
        dev.upload(&x).unwrap(),
        dev.upload(&w).unwrap(),
        dev.upload(&b).unwrap(),
        dev.upload(&st0).unwrap(),
    );
    let yb: Buffer<f32> = dev.alloc(seqs * t * e).unwrap();
    let sh = MixerShape { e, t, seqs };
    ops::conv1d_silu(
        &dev,
        sh,
        &view(&dev, &xb),
        xs,
        &view(&dev, &wb),
        &view(&dev, &bb),
        &view(&dev, &sb),
        StateSlots::Consecutive,
        (&view(&dev, &yb), e),
        None,
    )
    .unwrap();
    let y = dev.read(&yb).unwrap();
    let st = dev.read(&sb).unwrap();
    for s in 0..seqs {
        for c in 0..e {
            let mut win: Vec<f64> = st0[(s * e + c) * 3..(s * e + c) * 3 + 3]
                .iter()
                .map(|&v| v as f64)
                .collect();
            for tt in 0..t {
                win.push(x[(s * t + tt) * xs + c] as f64);
                let acc: f64 = b[c] as f64
                    + (0..4)
                        .map(|k| w[c * 4 + k] as f64 * win[win.len() - 4 + k])
                        .sum::<f64>();
                let want = silu(acc);
                let got = y[(s * t + tt) * e + c] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
            let tail = &win[win.len() - 3..];
            for k in 0..3 {
                assert_eq!(st[(s * e + c) * 3 + k] as f64, tail[k]);
            }
        }
    }
}

#[test]
fn selective_scan_matches_mamba_recurrence() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(8);
    let (e, t, seqs, n) = (150, 6, 2, 16);
    let (bcs, boff) = (4 + 2 * n, 4);
    let rows = t * seqs;
    let x = rand_vec(&mut rng, rows * e, 1.0);
    let mut dt = rand_vec(&mut rng, rows * e, 3.0);
    dt[0] = 40.0; // softplus's linear branch
    dt[1] = -40.0;
    let z = rand_vec(&mut rng, rows * 2 * e, 3.0);
    let bc = rand_vec(&mut rng, rows * bcs, 1.0);
    let a: Vec<f32> = (0..e * n).map(|_| -rng.gen_range(0.01f32..8.0)).collect();
    let d = rand_vec(&mut rng, e, 1.0);
    let bias = rand_vec(&mut rng, e, 1.0);
    let s0 = rand_vec(&mut rng, seqs * e * n, 1.0);
    let up = |v: &Vec<f32>| dev.upload(v).unwrap();
    let (xb, dtb, zb, bcb, ab, db, biasb, sb) = (
        up(&x),
        up(&dt),
        up(&z),
        up(&bc),
        up(&a),
        up(&d),
        up(&bias),
        up(&s0),
    );
    let yb: Buffer<f32> = dev.alloc(rows * e).unwrap();
    let v = |b: &Buffer<f32>| view(&dev, b);
    let (vx, vdt, vz, vbc, va, vd, vbias) =
        (v(&xb), v(&dtb), v(&zb), v(&bcb), v(&ab), v(&db), v(&biasb));
    let inp = ScanInputs {
        x: &vx,
        dt: &vdt,
        z: &vz,
        z_stride: 2 * e,
        bc: &vbc,
        bc_stride: bcs,
        b_off: boff,
        a: &va,
        d: &vd,
        dt_bias: &vbias,
    };
    ops::selective_scan(
        &dev,
        MixerShape { e, t, seqs },
        &inp,
        &v(&sb),
        StateSlots::Consecutive,
        &v(&yb),
        None,
    )
    .unwrap();
    let y = dev.read(&yb).unwrap();
    let st = dev.read(&sb).unwrap();
    for sq in 0..seqs {
        for c in 0..e {
            let mut s: Vec<f64> = s0[(sq * e + c) * n..(sq * e + c + 1) * n]
                .iter()
                .map(|&v| v as f64)
                .collect();
            for tt in 0..t {
                let r = sq * t + tt;
                let xv = x[r * e + c] as f64;
                let raw = dt[r * e + c] as f64 + bias[c] as f64;
                let dtv = if raw > 20.0 { raw } else { raw.exp().ln_1p() };
                let mut yv = 0.0;
                for k in 0..n {
                    let bk = bc[r * bcs + boff + k] as f64;
                    let ck = bc[r * bcs + boff + n + k] as f64;
                    s[k] = (dtv * a[c * n + k] as f64).exp() * s[k] + dtv * bk * xv;
                    yv += s[k] * ck;
                }
                yv = (yv + d[c] as f64 * xv) * silu(z[r * 2 * e + c] as f64);
                let got = y[r * e + c] as f64;
                assert!(
                    (got - yv).abs() <= 1e-4 * (1.0 + yv.abs()),
                    "seq {sq} ch {c} t {tt}: {got} vs {yv}"
                );
            }
            for k in 0..n {
                let g = st[(sq * e + c) * n + k] as f64;
                assert!((g - s[k]).abs() <= 1e-4 * (1.0 + s[k].abs()));
            }
        }
    }
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let dev = test_device();
    let small: Buffer<f32> = dev.alloc(10).unwrap();
    let v = view(&dev, &small);
    assert!(ops::add(&dev, &v, &v, &v, 11).is_err());
    assert!(ops::rms_norm(&dev, &v, None, &v, 2, 8, 8, 8, 1e-5).is_err());
    let other = Device::emu();
    let ob: Buffer<f32> = other.alloc(10).unwrap();
    assert!(matches!(
        dev.view(&ob, 0, 10),
        Err(mamba_cuda::CudaError::ForeignBuffer)
    ));
    assert!(dev.view(&small, 5, 6).is_err());
    // K-quant weights at an address a 16-byte load would fault on.
    let (n, rows) = (256, 4);
    let wb: Buffer<u8> = dev.alloc(2 + rows * 144).unwrap();
    let q: Buffer<i8> = dev.alloc(n).unwrap();
    let ad: Buffer<f32> = dev.alloc(n / 32).unwrap();
    let asum: Buffer<i32> = dev.alloc(n / 32).unwrap();
    let out: Buffer<f32> = dev.alloc(rows).unwrap();
    let acts = QActs {
        q: &view(&dev, &q),
        d: &view(&dev, &ad),
        s: &view(&dev, &asum),
    };
    let shifted = dev.view(&wb, 2, rows * 144).unwrap();
    let o = view(&dev, &out);
    let err = ops::matvec(
        &dev,
        GgmlType::Q4_K,
        &shifted,
        n,
        rows,
        &acts,
        1,
        &MvOut::to(&o),
    );
    assert!(
        matches!(
            err,
            Err(mamba_cuda::CudaError::Shape {
                what: "matvec weights address mod 16",
                value: 2,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn emulator_reports_divergent_barriers() {
    let dev = Device::emu();
    let out: Buffer<i32> = dev.alloc(64).unwrap();
    let e = ops::emu_selftest(&dev, "emu_selftest_misaligned_load", &view(&dev, &out)).unwrap_err();
    assert!(e.to_string().contains("misaligned 16-byte load"), "{e}");
    let e = ops::emu_selftest(&dev, "emu_selftest_divergent_sync", &view(&dev, &out)).unwrap_err();
    assert!(e.to_string().contains("divergent __syncthreads"), "{e}");
    let e =
        ops::emu_selftest(&dev, "emu_selftest_shuffle_exited_lane", &view(&dev, &out)).unwrap_err();
    assert!(e.to_string().contains("warp shuffle"), "{e}");
}

#[test]
fn matvec_float_weights_any_length() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(9);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for (n, rows) in [(1000, 5), (7, 3), (64, 9)] {
            let w = rand_vec(&mut rng, n * rows, 1.0);
            let wq = quantize_rows(ty, &w, n);
            let mut wf = vec![0f32; n * rows];
            quant::dequantize_row(ty, &wq, &mut wf).unwrap();
            for ncols in [1, 4, 8] {
                let x = rand_vec(&mut rng, n * ncols, 2.0);
                let (wb, xb) = (dev.upload(&wq).unwrap(), dev.upload(&x).unwrap());
                let out: Buffer<f32> = dev.alloc(ncols * rows).unwrap();
                ops::matvec_float(
                    &dev,
                    ty,
                    &view(&dev, &wb),
                    n,
                    rows,
                    &view(&dev, &xb),
                    n,
                    ncols,
                    &MvOut::to(&view(&dev, &out)),
                )
                .unwrap();
                let got = dev.read(&out).unwrap();
                for c in 0..ncols {
                    for r in 0..rows {
                        let terms = (0..n).map(|k| wf[r * n + k] as f64 * x[c * n + k] as f64);
                        let (e, mag) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                        let g = got[c * rows + r] as f64;
                        assert!(
                            (g - e).abs() <= 1e-5 * mag + 1e-30,
                            "{ty:?} n {n}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn embedding_rows_are_bit_exact_for_every_type() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(10);
    let mut types = QTYPES.to_vec();
    types.extend([GgmlType::F32, GgmlType::F16, GgmlType::BF16]);
    for ty in types {
        let (n, vocab) = (512, 6);
        let mut w = rand_vec(&mut rng, n * vocab, 2.0);
        w[n..2 * n].fill(0.5); // an all-equal row
        let wq = quantize_rows(ty, &w, n);
        let ids: Vec<i32> = vec![3, 1, 0, 5, 3, -1, 6];
        let (tb, ib) = (dev.upload(&wq).unwrap(), dev.upload(&ids).unwrap());
        let out: Buffer<f32> = dev.alloc(ids.len() * n).unwrap();
        ops::embed(
            &dev,
            ty,
            &view(&dev, &tb),
            n,
            vocab,
            &view(&dev, &ib),
            ids.len(),
            &view(&dev, &out),
        )
        .unwrap();
        let got = dev.read(&out).unwrap();
        let rb = ty.row_bytes(n).unwrap();
        for (t, &id) in ids.iter().enumerate() {
            let g = &got[t * n..(t + 1) * n];
            if !(0..vocab as i32).contains(&id) {
                assert!(g.iter().all(|v| v.is_nan()), "{ty:?}: bad id gives NaN");
                continue;
            }
            let mut want = vec![0f32; n];
            let id = id as usize;
            quant::dequantize_row(ty, &wq[id * rb..(id + 1) * rb], &mut want).unwrap();
            for (k, (a, b)) in g.iter().zip(&want).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{ty:?} token {t} value {k}: {a} vs {b}"
                );
            }
        }
    }
}

fn slots_of<'a>(ids: Option<&'a [i32]>, buf: &'a mut Buffer<i32>) -> StateSlots<'a> {
    match ids {
        Some(ids) => StateSlots::Indexed { ids, buf },
        None => StateSlots::Consecutive,
    }
}

/// Indexed state slots: one token of each of 3 sequences whose states sit at
/// entries 4, 0 and 2 of a pool of 5 give what consecutive entries give, and
/// leave the other entries untouched; a slot outside the pool is an error
/// before anything runs.
#[test]
fn mixer_kernels_use_the_indexed_state_slots() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(9);
    let (e, n, seqs, pool) = (40, 16, 3, 5);
    let ids = [4i32, 0, 2];
    let x = rand_vec(&mut rng, seqs * 2 * e, 1.0);
    let w = rand_vec(&mut rng, e * 4, 1.0);
    let b = rand_vec(&mut rng, e, 0.5);
    let conv_pool = rand_vec(&mut rng, pool * e * 3, 1.0);
    let scan_pool = rand_vec(&mut rng, pool * e * n, 1.0);
    let dt = rand_vec(&mut rng, seqs * e, 1.0);
    let bc = rand_vec(&mut rng, seqs * 2 * n, 1.0);
    let a: Vec<f32> = (0..e * n).map(|_| -rng.gen_range(0.01f32..4.0)).collect();
    let d = rand_vec(&mut rng, e, 1.0);
    let bias = rand_vec(&mut rng, e, 1.0);
    let gather = |p: &[f32], per: usize| -> Vec<f32> {
        ids.iter()
            .flat_map(|&i| p[i as usize * per..(i as usize + 1) * per].to_vec())
            .collect()
    };
    let sh = MixerShape { e, t: 1, seqs };
    let up = |v: &[f32]| dev.upload(v).unwrap();
    let (xb, wb, bb, dtb, bcb, ab, db, biasb) = (
        up(&x),
        up(&w),
        up(&b),
        up(&dt),
        up(&bc),
        up(&a),
        up(&d),
        up(&bias),
    );
    // Run conv then scan, either on the pools through `ids` or on gathered copies.
    let run = |conv_state: &Buffer<f32>, scan_state: &Buffer<f32>, ids: Option<&[i32]>| {
        let mut idb: Buffer<i32> = dev.alloc(8).unwrap();
        let xc: Buffer<f32> = dev.alloc(seqs * e).unwrap();
        let y: Buffer<f32> = dev.alloc(seqs * e).unwrap();
        ops::conv1d_silu(
            &dev,
            sh,
            &view(&dev, &xb),
            2 * e,
            &view(&dev, &wb),
            &view(&dev, &bb),
            &view(&dev, conv_state),
            slots_of(ids, &mut idb),
            (&view(&dev, &xc), e),
            None,
        )
        .unwrap();
        let (vxc, vdt, vx, vbc, va, vd, vbias) = (
            view(&dev, &xc),
            view(&dev, &dtb),
            dev.view(&xb, e, seqs * 2 * e - e).unwrap(),
            view(&dev, &bcb),
            view(&dev, &ab),
            view(&dev, &db),
            view(&dev, &biasb),
        );
        let inp = ScanInputs {
            x: &vxc,
            dt: &vdt,
            z: &vx,
            z_stride: 2 * e,
            bc: &vbc,
            bc_stride: 2 * n,
            b_off: 0,
            a: &va,
            d: &vd,
            dt_bias: &vbias,
        };
        // The conv uploaded the ids: the scan reuses them (Resident).
        let slots = match ids {
            Some(ids) => StateSlots::Resident { ids, buf: &idb },
            None => StateSlots::Consecutive,
        };
        ops::selective_scan(
            &dev,
            sh,
            &inp,
            &view(&dev, scan_state),
            slots,
            &view(&dev, &y),
            None,
        )
        .unwrap();
        dev.read(&y).unwrap()
    };
    let (cp, sp) = (up(&conv_pool), up(&scan_pool));
    let y_indexed = run(&cp, &sp, Some(&ids));
    let (cg, sg) = (
        up(&gather(&conv_pool, e * 3)),
        up(&gather(&scan_pool, e * n)),
    );
    let y_gathered = run(&cg, &sg, None);
    assert_eq!(y_indexed, y_gathered);
    let (cp_after, sp_after) = (dev.read(&cp).unwrap(), dev.read(&sp).unwrap());
    assert_eq!(gather(&cp_after, e * 3), dev.read(&cg).unwrap());
    assert_eq!(gather(&sp_after, e * n), dev.read(&sg).unwrap());
    for untouched in [1usize, 3] {
        let r = untouched * e * n..(untouched + 1) * e * n;
        assert_eq!(sp_after[r.clone()], scan_pool[r]);
        let r = untouched * e * 3..(untouched + 1) * e * 3;
        assert_eq!(cp_after[r.clone()], conv_pool[r]);
    }
    // Slot ids the pool cannot take: the launch is refused, naming the slot.
    let mut idb: Buffer<i32> = dev.alloc(8).unwrap();
    let xc: Buffer<f32> = dev.alloc(seqs * e).unwrap();
    let mut conv_on = |ids: &[i32]| {
        ops::conv1d_silu(
            &dev,
            sh,
            &view(&dev, &xb),
            2 * e,
            &view(&dev, &wb),
            &view(&dev, &bb),
            &view(&dev, &cp),
            StateSlots::Indexed { ids, buf: &mut idb },
            (&view(&dev, &xc), e),
            None,
        )
    };
    // A slot outside the pool of 5.
    let err = conv_on(&[4, 5, 0]);
    assert!(
        matches!(
            err,
            Err(mamba_cuda::CudaError::Shape {
                what: "state slot",
                value: 5,
                why: "outside the state pool",
            })
        ),
        "{err:?}"
    );
    // Two sequences on one slot: they would race on its state.
    let err = conv_on(&[2, 0, 2]);
    assert!(
        matches!(
            err,
            Err(mamba_cuda::CudaError::Shape {
                what: "state slot",
                value: 2,
                why: "given to two sequences of one launch",
            })
        ),
        "{err:?}"
    );
}

/// A grid past the hardware's limits (grid.y <= 65535) is refused on the
/// emulator as a GPU would refuse it, naming the kernel and dimension; the
/// largest legal one runs.
#[test]
fn launches_past_the_grid_limits_are_refused() {
    let dev = test_device();
    let rows = 65_536;
    let src: Vec<f32> = (0..rows).map(|i| i as f32).collect();
    let sb = dev.upload(&src).unwrap();
    let db: Buffer<f32> = dev.alloc(rows).unwrap();
    let err = ops::copy_rows(&dev, &view(&dev, &sb), 1, &view(&dev, &db), 1, rows, 1)
        .and_then(|()| dev.flush());
    match err {
        Err(mamba_cuda::CudaError::Launch {
            kernel,
            what,
            value,
            ..
        }) => {
            assert_eq!(
                (kernel.as_str(), what, value),
                ("copy_rows_f32", "grid.y", rows)
            );
        }
        other => panic!("expected a launch-limit error, got {other:?}"),
    }
    ops::copy_rows(&dev, &view(&dev, &sb), 1, &view(&dev, &db), 1, rows - 1, 1).unwrap();
    let got = dev.read(&db).unwrap();
    assert_eq!(got[..rows - 1], src[..rows - 1]);
}

#[test]
fn copy_rows_and_partial_transfers() {
    let dev = test_device();
    let src: Vec<f32> = (0..5 * 12).map(|i| i as f32).collect();
    let sb = dev.upload(&src).unwrap();
    let mut db: Buffer<f32> = dev.alloc(5 * 4 + 3).unwrap();
    ops::copy_rows(
        &dev,
        &view(&dev, &sb),
        12,
        &dev.view(&db, 3, 20).unwrap(),
        4,
        5,
        4,
    )
    .unwrap();
    let got = dev.read(&db).unwrap();
    for r in 0..5 {
        assert_eq!(got[3 + r * 4..3 + r * 4 + 4], src[r * 12..r * 12 + 4]);
    }
    dev.write_at(&mut db, 1, &[7.0, 8.0]).unwrap();
    let mut two = [0.0f32; 2];
    dev.read_at(&db, 1, &mut two).unwrap();
    assert_eq!(two, [7.0, 8.0]);
    let before = dev.read(&db).unwrap();
    dev.copy_within(&mut db, 3, 15, 8).unwrap();
    let got = dev.read(&db).unwrap();
    assert_eq!(got[15..23], before[3..11]);
    assert_eq!(got[..15], before[..15]);
    dev.zero_at(&mut db, 0, 5).unwrap();
    assert_eq!(dev.read(&db).unwrap()[..5], [0.0; 5]);
    assert!(dev.write_at(&mut db, 22, &[1.0, 2.0]).is_err());
    assert!(
        dev.copy_within(&mut db, 0, 4, 8).is_err(),
        "overlapping ranges"
    );
}

/// The fused launches give, bit for bit, what the launches they replace
/// give: rms_norm_q8a = rms_norm then quantize_q8a; rms_norm3 = three
/// strided weightless rms_norms; a matvec with `add` (aliasing its output,
/// as X += W y does) = the matvec then add_f32; a float matvec over strided
/// rows = over a contiguous copy.
#[test]
fn fused_launches_equal_the_launches_they_replace() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(12);
    let acts_of = |rows: usize, n: usize| {
        let q: Buffer<i8> = dev.alloc(rows * n).unwrap();
        let d: Buffer<f32> = dev.alloc(rows * n / 32).unwrap();
        let s: Buffer<i32> = dev.alloc(rows * n / 32).unwrap();
        (q, d, s)
    };
    for (n, rows) in [(4096, 3), (96, 2), (32, 1)] {
        let mut x = rand_vec(&mut rng, n * rows, 3.0);
        if rows > 1 {
            x[n + 7] = f32::NAN; // a NaN row: its blocks must match too
        }
        let w = rand_vec(&mut rng, n, 1.5);
        let (xb, wb) = (dev.upload(&x).unwrap(), dev.upload(&w).unwrap());
        for weighted in [true, false] {
            let wv = view(&dev, &wb);
            let wo = weighted.then_some(&wv);
            // Unfused.
            let y1: Buffer<f32> = dev.alloc(n * rows).unwrap();
            let (q1, d1, s1) = acts_of(rows, n);
            ops::rms_norm(
                &dev,
                &view(&dev, &xb),
                wo,
                &view(&dev, &y1),
                rows,
                n,
                n,
                n,
                1e-5,
            )
            .unwrap();
            let a1 = QActs {
                q: &view(&dev, &q1),
                d: &view(&dev, &d1),
                s: &view(&dev, &s1),
            };
            ops::quantize_q8a(&dev, &view(&dev, &y1), rows, n, n, &a1).unwrap();
            // Fused.
            let y2: Buffer<f32> = dev.alloc(n * rows).unwrap();
            let (q2, d2, s2) = acts_of(rows, n);
            let a2 = QActs {
                q: &view(&dev, &q2),
                d: &view(&dev, &d2),
                s: &view(&dev, &s2),
            };
            ops::rms_norm_q8a(
                &dev,
                &view(&dev, &xb),
                wo,
                &view(&dev, &y2),
                rows,
                n,
                n,
                1e-5,
                &a2,
            )
            .unwrap();
            let bits = |b: &Buffer<f32>| -> Vec<u32> {
                dev.read(b).unwrap().iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&y1), bits(&y2), "n {n}: norms");
            assert_eq!(dev.read(&q1).unwrap(), dev.read(&q2).unwrap(), "n {n}: q");
            assert_eq!(bits(&d1), bits(&d2), "n {n}: d");
            assert_eq!(dev.read(&s1).unwrap(), dev.read(&s2).unwrap(), "n {n}: s");
        }
    }
    assert!(
        ops::rms_norm_q8a(
            &dev,
            &view(&dev, &dev.upload(&[0f32; 40]).unwrap()),
            None,
            &view(&dev, &dev.alloc::<f32>(40).unwrap()),
            1,
            40,
            40,
            1e-5,
            &QActs {
                q: &view(&dev, &dev.alloc::<i8>(40).unwrap()),
                d: &view(&dev, &dev.alloc::<f32>(2).unwrap()),
                s: &view(&dev, &dev.alloc::<i32>(2).unwrap()),
            },
        )
        .is_err(),
        "n not a multiple of 32"
    );

    // Falcon's dt/B/C norm: R = 8, N = 16, rows of R + 2N (+ 3 unused).
    let (r, nst, stride, rows) = (8, 16, 8 + 32 + 3, 4);
    let x = rand_vec(&mut rng, stride * rows, 2.0);
    let (a, b) = (dev.upload(&x).unwrap(), dev.upload(&x).unwrap());
    for (off, len) in [(0, r), (r, nst), (r + nst, nst)] {
        let v = dev.view(&a, off, stride * rows - off).unwrap();
        ops::rms_norm(&dev, &v, None, &v, rows, len, stride, stride, 1e-6).unwrap();
    }
    ops::rms_norm3(
        &dev,
        &view(&dev, &b),
        rows,
        stride,
        [0, r, r + nst],
        [r, nst, nst],
        1e-6,
        None,
    )
    .unwrap();
    let (ya, yb) = (dev.read(&a).unwrap(), dev.read(&b).unwrap());
    assert!(ya.iter().zip(&yb).all(|(p, q)| p.to_bits() == q.to_bits()));
    for row in 0..rows {
        let tail = row * stride + r + 2 * nst..(row + 1) * stride;
        assert_eq!(yb[tail.clone()], x[tail], "past the segments: untouched");
    }
    assert!(ops::rms_norm3(
        &dev,
        &view(&dev, &b),
        rows,
        stride,
        [0, r, 30],
        [r, nst, nst],
        1e-6,
        None,
    )
    .is_err());

    // X += W y: a quantized and a float matvec with `add` aliasing the output.
    let (n, rows, ncols) = (256, 9, 3);
    let y = rand_vec(&mut rng, n * ncols, 1.0);
    let x0 = rand_vec(&mut rng, rows * ncols, 2.0);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let wq = quantize_rows(ty, &rand_vec(&mut rng, n * rows, 1.0), n);
        let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
        let (q, d, s) = acts_of(ncols, n);
        let acts = QActs {
            q: &view(&dev, &q),
            d: &view(&dev, &d),
            s: &view(&dev, &s),
        };
        let yb = dev.upload(&y).unwrap();
        ops::quantize_q8a(&dev, &view(&dev, &yb), ncols, n, n, &acts).unwrap();
        let mv = |out: &MvOut| {
            if ty == GgmlType::F16 {
                ops::matvec_float(
                    &dev,
                    ty,
                    &view(&dev, &wb),
                    n,
                    rows,
                    &view(&dev, &yb),
                    n,
                    ncols,
                    out,
                )
            } else {
                ops::matvec(&dev, ty, &view(&dev, &wb), n, rows, &acts, ncols, out)
            }
            .unwrap()
        };
        let plain: Buffer<f32> = dev.alloc(rows * ncols).unwrap();
        mv(&MvOut::to(&view(&dev, &plain)));
        let xa = dev.upload(&x0).unwrap();
        ops::add(
            &dev,
            &view(&dev, &xa),
            &view(&dev, &plain),
            &view(&dev, &xa),
            rows * ncols,
        )
        .unwrap();
        let xf = dev.upload(&x0).unwrap();
        let xv = view(&dev, &xf);
        mv(&MvOut {
            out: &xv,
            add: Some(&xv),
        });
        let (ga, gf) = (dev.read(&xa).unwrap(), dev.read(&xf).unwrap());
        assert!(
            ga.iter().zip(&gf).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{ty:?}: fused residual differs"
        );
    }

    // Float weights over strided activation rows (dt_in inside x_proj's rows).
    let (n, rows, ncols, stride) = (8, 5, 3, 8 + 32);
    let w = rand_vec(&mut rng, n * rows, 1.0);
    let wb = dev.upload(&quantize_rows(GgmlType::F32, &w, n)).unwrap();
    let xs = rand_vec(&mut rng, stride * ncols, 1.0);
    let packed: Vec<f32> = xs.chunks(stride).flat_map(|c| c[..n].to_vec()).collect();
    let (sb, pb) = (dev.upload(&xs).unwrap(), dev.upload(&packed).unwrap());
    let (o1, o2): (Buffer<f32>, Buffer<f32>) = (
        dev.alloc(rows * ncols).unwrap(),
        dev.alloc(rows * ncols).unwrap(),
    );
    let wv = view(&dev, &wb);
    ops::matvec_float(
        &dev,
        GgmlType::F32,
        &wv,
        n,
        rows,
        &view(&dev, &sb),
        stride,
        ncols,
        &MvOut::to(&view(&dev, &o1)),
    )
    .unwrap();
    ops::matvec_float(
        &dev,
        GgmlType::F32,
        &wv,
        n,
        rows,
        &view(&dev, &pb),
        n,
        ncols,
        &MvOut::to(&view(&dev, &o2)),
    )
    .unwrap();
    assert_eq!(dev.read(&o1).unwrap(), dev.read(&o2).unwrap());
}

/// The prefill matmul equals the decode matvec column for column, bit for
/// bit, for every type: chunk lengths around its 16-row groups and matvec's
/// 8, rows filling a block of 8 warps or not (a block whose last warps have
/// no row), rows of a whole tile of 32 units, less than one, and one and a
/// quarter; with and without `add`.
#[test]
fn prefill_matmul_equals_matvec_bit_for_bit() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(21);
    for (ty, n, rows) in QTYPES
        .into_iter()
        .flat_map(|ty| [(ty, 512, 6), (ty, 1024, 8), (ty, 1280, 11)])
    {
        let wq = quantize_rows(ty, &rand_vec(&mut rng, n * rows, 1.0), n);
        let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
        for t in [1usize, 7, 9, 16, 17, 33] {
            let x = rand_vec(&mut rng, n * t, 2.0);
            let (q, d, s) = q8a_ref(&x);
            let (qb, db, sb) = (
                dev.upload(&q).unwrap(),
                dev.upload(&d).unwrap(),
                dev.upload(&s).unwrap(),
            );
            let base = rand_vec(&mut rng, rows * t, 1.0);
            for with_add in [false, true] {
                let whole = dev.upload(&base).unwrap();
                let wv = view(&dev, &whole);
                let acts = QActs {
                    q: &view(&dev, &qb),
                    d: &view(&dev, &db),
                    s: &view(&dev, &sb),
                };
                let dst = MvOut {
                    out: &wv,
                    add: with_add.then_some(&wv),
                };
                ops::matmul(&dev, ty, &view(&dev, &wb), n, rows, &acts, t, &dst).unwrap();
                // Reference: matvec launches of up to 8 columns.
                let parts = dev.upload(&base).unwrap();
                for c0 in (0..t).step_by(8) {
                    let nc = 8.min(t - c0);
                    let acts = QActs {
                        q: &dev.view(&qb, c0 * n, nc * n).unwrap(),
                        d: &dev.view(&db, c0 * n / 32, nc * n / 32).unwrap(),
                        s: &dev.view(&sb, c0 * n / 32, nc * n / 32).unwrap(),
                    };
                    let o = dev.view(&parts, c0 * rows, nc * rows).unwrap();
                    let dst = MvOut {
                        out: &o,
                        add: with_add.then_some(&o),
                    };
                    ops::matvec(&dev, ty, &view(&dev, &wb), n, rows, &acts, nc, &dst).unwrap();
                }
                let (a, b) = (dev.read(&whole).unwrap(), dev.read(&parts).unwrap());
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{ty:?} t {t} add {with_add}"
                );
            }
        }
    }
}

/// The conv, the scan and the dt/B/C norm quantize their output for the next
/// matmul in the same launch: bit for bit what quantize_q8a of the output
/// gives (two sequences, a chunk, 64 channels in a 128-thread block).
#[test]
fn mixer_outputs_quantized_in_their_own_launch() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(31);
    let (e, t, seqs, n) = (64, 5, 2, 16);
    let rows = t * seqs;
    let up = |v: &[f32]| dev.upload(v).unwrap();
    let q8a_bufs = |rows: usize, n: usize| -> (Buffer<i8>, Buffer<f32>, Buffer<i32>) {
        (
            dev.alloc(rows * n).unwrap(),
            dev.alloc(rows * n / 32).unwrap(),
            dev.alloc(rows * n / 32).unwrap(),
        )
    };
    let reference = |y: &Buffer<f32>, rows: usize, n: usize| {
        let (q, d, s) = q8a_bufs(rows, n);
        let acts = QActs {
            q: &view(&dev, &q),
            d: &view(&dev, &d),
            s: &view(&dev, &s),
        };
        ops::quantize_q8a(&dev, &view(&dev, y), rows, n, n, &acts).unwrap();
        (
            dev.read(&q).unwrap(),
            dev.read(&d).unwrap(),
            dev.read(&s).unwrap(),
        )
    };
    let read = |b: &(Buffer<i8>, Buffer<f32>, Buffer<i32>)| {
        (
            dev.read(&b.0).unwrap(),
            dev.read(&b.1).unwrap(),
            dev.read(&b.2).unwrap(),
        )
    };
    let sh = MixerShape { e, t, seqs };
    // Conv.
    let xb = up(&rand_vec(&mut rng, rows * 2 * e, 1.0));
    let (wb, bb) = (
        up(&rand_vec(&mut rng, e * 4, 1.0)),
        up(&rand_vec(&mut rng, e, 0.5)),
    );
    let sb = up(&rand_vec(&mut rng, seqs * e * 3, 1.0));
    let yb: Buffer<f32> = dev.alloc(rows * e).unwrap();
    let qc = q8a_bufs(rows, e);
    let acts = QActs {
        q: &view(&dev, &qc.0),
        d: &view(&dev, &qc.1),
        s: &view(&dev, &qc.2),
    };
    ops::conv1d_silu(
        &dev,
        sh,
        &view(&dev, &xb),
        2 * e,
        &view(&dev, &wb),
        &view(&dev, &bb),
        &view(&dev, &sb),
        StateSlots::Consecutive,
        (&view(&dev, &yb), e),
        Some(&acts),
    )
    .unwrap();
    assert_eq!(read(&qc), reference(&yb, rows, e), "conv");
    // Scan (its x is the conv's output).
    let (dtb, bcb) = (
        up(&rand_vec(&mut rng, rows * e, 1.0)),
        up(&rand_vec(&mut rng, rows * 2 * n, 1.0)),
    );
    let a: Vec<f32> = (0..e * n).map(|_| -rng.gen_range(0.01f32..4.0)).collect();
    let (ab, db, biasb) = (
        up(&a),
        up(&rand_vec(&mut rng, e, 1.0)),
        up(&rand_vec(&mut rng, e, 1.0)),
    );
    let ssb = up(&rand_vec(&mut rng, seqs * e * n, 1.0));
    let ys: Buffer<f32> = dev.alloc(rows * e).unwrap();
    let (vx, vdt, vz, vbc, va, vd, vb) = (
        view(&dev, &yb),
        view(&dev, &dtb),
        dev.view(&xb, e, rows * 2 * e - e).unwrap(),
        view(&dev, &bcb),
        view(&dev, &ab),
        view(&dev, &db),
        view(&dev, &biasb),
    );
    let inp = ScanInputs {
        x: &vx,
        dt: &vdt,
        z: &vz,
        z_stride: 2 * e,
        bc: &vbc,
        bc_stride: 2 * n,
        b_off: 0,
        a: &va,
        d: &vd,
        dt_bias: &vb,
    };
    let qsn = q8a_bufs(rows, e);
    let acts = QActs {
        q: &view(&dev, &qsn.0),
        d: &view(&dev, &qsn.1),
        s: &view(&dev, &qsn.2),
    };
    ops::selective_scan(
        &dev,
        sh,
        &inp,
        &view(&dev, &ssb),
        StateSlots::Consecutive,
        &view(&dev, &ys),
        Some(&acts),
    )
    .unwrap();
    assert_eq!(read(&qsn), reference(&ys, rows, e), "scan");
    // dt/B/C norm with dt_in of 32 (rows of 32 + 2 * 16).
    let (r, stride) = (32, 32 + 2 * n);
    let xr = up(&rand_vec(&mut rng, rows * stride, 2.0));
    let qn = q8a_bufs(rows, r);
    let acts = QActs {
        q: &view(&dev, &qn.0),
        d: &view(&dev, &qn.1),
        s: &view(&dev, &qn.2),
    };
    ops::rms_norm3(
        &dev,
        &view(&dev, &xr),
        rows,
        stride,
        [0, r, r + n],
        [r, n, n],
        1e-6,
        Some(&acts),
    )
    .unwrap();
    let normed = dev.read(&xr).unwrap();
    let dt_in: Vec<f32> = normed
        .chunks(stride)
        .flat_map(|c| c[..r].to_vec())
        .collect();
    assert_eq!(read(&qn), reference(&up(&dt_in), rows, r), "dt/B/C norm");
    // A width that is not whole Q8A blocks is refused.
    let bad = q8a_bufs(rows, 64);
    let acts = QActs {
        q: &view(&dev, &bad.0),
        d: &view(&dev, &bad.1),
        s: &view(&dev, &bad.2),
    };
    assert!(ops::rms_norm3(
        &dev,
        &view(&dev, &xr),
        rows,
        stride,
        [0, 8, 24],
        [8, n, n],
        1e-6,
        Some(&acts)
    )
    .is_err());
}

/// The reference top-k: every (value, index) by value descending (Rust's
/// total order: -0 below +0), index ascending on ties; the first k.
fn top_k_reference(row: &[f32], k: usize) -> Vec<(u32, u32)> {
    let mut all: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    let mut out: Vec<(u32, u32)> = all.iter().map(|&(i, v)| (i, v.to_bits())).collect();
    out.sort();
    out
}

#[test]
fn top_k_equals_sorting_the_row() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(11);
    // (label, row, k)
    let mut cases: Vec<(&str, Vec<f32>, usize)> = Vec::new();
    let r = rand_vec(&mut rng, 1000, 5.0);
    for k in [1, 5, 40, 999, 1000] {
        cases.push(("random", r.clone(), k));
    }
    // Three values only: every boundary is a tie, taken by lowest index.
    let few: Vec<f32> = (0..1000).map(|_| rng.gen_range(0..3) as f32).collect();
    for k in [1, 37, 400, 700] {
        cases.push(("three values", few.clone(), k));
    }
    cases.push(("all equal", vec![0.5; 300], 10));
    let mut signs = vec![0.0f32; 64];
    for (i, v) in signs.iter_mut().enumerate() {
        *v = match i % 4 {
            0 => -0.0,
            1 => 0.0,
            2 => f32::NEG_INFINITY,
            _ => -1e-30,
        };
    }
    signs[50] = f32::INFINITY;
    for k in [1, 2, 17, 40] {
        cases.push(("zeros of both signs, infinities", signs.clone(), k));
    }
    // A vocabulary-sized row with values on a grid of 1/4 (ties likely).
    let voc: Vec<f32> = rand_vec(&mut rng, 65024, 3.0)
        .iter()
        .map(|v| (v * 4.0).round() / 4.0)
        .collect();
    cases.push(("vocabulary, grid of 1/4", voc, 40));
    // Ties past index 65535: the tie-breaking passes use bits 16..23.
    let mut far = vec![0.0f32; 70_000];
    for (j, at) in [69_500, 66_000, 69_000, 67_000, 68_000]
        .into_iter()
        .enumerate()
    {
        far[at] = if j == 0 { 2.0 } else { 1.0 };
    }
    cases.push(("ties far out", far, 3));
    for (label, row, k) in &cases {
        let n = row.len();
        let xb = dev.upload(row).unwrap();
        let vb: Buffer<f32> = dev.alloc(*k).unwrap();
        let ib: Buffer<i32> = dev.alloc(*k).unwrap();
        let nb: Buffer<i32> = dev.alloc(1).unwrap();
        ops::top_k(
            &dev,
            &view(&dev, &xb),
            1,
            n,
            *k,
            &view(&dev, &vb),
            &view(&dev, &ib),
            &view(&dev, &nb),
        )
        .unwrap();
        let (v, i, nan) = (
            dev.read(&vb).unwrap(),
            dev.read(&ib).unwrap(),
            dev.read(&nb).unwrap(),
        );
        let mut got: Vec<(u32, u32)> = i
            .iter()
            .zip(&v)
            .map(|(&i, v)| (i as u32, v.to_bits()))
            .collect();
        got.sort();
        assert_eq!(got, top_k_reference(row, *k), "{label}, n {n}, k {k}");
        assert_eq!(nan, [-1], "{label}");
    }
    // Several rows in one launch; the NaN row reports its first NaN.
    let n = 500;
    let mut x = rand_vec(&mut rng, 3 * n, 2.0);
    x[n + 320] = f32::NAN;
    x[n + 70] = f32::NAN;
    let k = 8;
    let xb = dev.upload(&x).unwrap();
    let vb: Buffer<f32> = dev.alloc(3 * k).unwrap();
    let ib: Buffer<i32> = dev.alloc(3 * k).unwrap();
    let nb: Buffer<i32> = dev.alloc(3).unwrap();
    let v = |b| view(&dev, b);
    ops::top_k(
        &dev,
        &v(&xb),
        3,
        n,
        k,
        &v(&vb),
        &view(&dev, &ib),
        &view(&dev, &nb),
    )
    .unwrap();
    let (vals, idx) = (dev.read(&vb).unwrap(), dev.read(&ib).unwrap());
    assert_eq!(dev.read(&nb).unwrap(), [-1, 70, -1]);
    for row in [0, 2] {
        let mut got: Vec<(u32, u32)> = (row * k..(row + 1) * k)
            .map(|j| (idx[j] as u32, vals[j].to_bits()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            top_k_reference(&x[row * n..(row + 1) * n], k),
            "row {row}"
        );
    }
    // k outside 1..=n is refused.
    for bad in [0, n + 1] {
        let e = ops::top_k(
            &dev,
            &v(&xb),
            1,
            n,
            bad,
            &v(&vb),
            &view(&dev, &ib),
            &view(&dev, &nb),
        );
        assert!(e.is_err(), "k {bad}");
    }
}

/// The load-time self-test passes for every quantized type on the device
/// under test, and catches a kernel reading another layout than the one it
/// was given (Q6_K weights uploaded as the file has them, 210-byte blocks,
/// read as the padded 224-byte device layout), naming the kernel.
#[test]
fn the_load_time_self_test_passes_and_catches_a_misread_layout() {
    let dev = test_device();
    for ty in QTYPES {
        mamba_cuda::selftest::check_matvec(&dev, ty).unwrap_or_else(|e| panic!("{ty:?}: {e}"));
    }
    let err = mamba_cuda::selftest::check_layout(&dev, GgmlType::Q6_K, true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, mamba_cuda::CudaError::SelfTest { kernel, .. } if kernel.starts_with("matvec_q6_k_1 ")),
        "{msg}"
    );
    assert!(msg.contains("--device cpu"), "{msg}");
}

/// Split-K: the slices a matrix gets (more when its rows are few for the
/// card, only in whole 32-unit tiles), and slice counts the kernels cannot
/// take refused. Their sums, against the host and matvec against matmul bit
/// for bit with 1, 2 and 4 slices, are checked by the self-test above.
#[test]
fn split_k_slices_follow_the_rows_and_the_card() {
    let dev = Device::emu(); // 8 SMs stand in: up to 64 warps wanted
    assert_eq!(dev.sm_count(), 8);
    assert_eq!(ops::splits_for(&dev, 12, 4096), 4);
    assert_eq!(ops::splits_for(&dev, 40, 4096), 2);
    assert_eq!(ops::splits_for(&dev, 100, 4096), 1);
    assert_eq!(ops::splits_for(&dev, 12, 2048), 2); // 64 units: two tiles
    assert_eq!(ops::splits_for(&dev, 12, 512), 1); // 16 units: one partial tile
    let (n, rows) = (512, 4);
    let wq = quantize_rows(GgmlType::Q4_0, &vec![0.5; n * rows], n);
    let wb = ops::upload_weights(&dev, GgmlType::Q4_0, n, &wq).unwrap();
    let (q, d, s) = (
        dev.alloc::<i8>(n).unwrap(),
        dev.alloc::<f32>(n / 32).unwrap(),
        dev.alloc::<i32>(n / 32).unwrap(),
    );
    let acts = QActs {
        q: &view(&dev, &q),
        d: &view(&dev, &d),
        s: &view(&dev, &s),
    };
    let out: Buffer<f32> = dev.alloc(rows).unwrap();
    let o = view(&dev, &out);
    for splits in [2, 3, 8] {
        let err = ops::matvec_split(
            &dev,
            GgmlType::Q4_0,
            (&view(&dev, &wb), n, rows),
            &acts,
            1,
            &MvOut::to(&o),
            splits,
        );
        assert!(
            matches!(
                err,
                Err(mamba_cuda::CudaError::Shape {
                    what: "matvec splits",
                    ..
                })
            ),
            "{splits}: {err:?}"
        );
    }
}

/// The x-projection's norm tail (`ops::matvec_norm3`): the matvec's rows
/// normed dt/B/C in place by the launch's last block equal, bit for bit,
/// `matvec` then `rms_norm3` (and its Q8A of dt), for 1 and 2 activation
/// rows (3 are refused), with one slice per row and with split-K; the normed
/// values also match an f64 norm of the matvec's output. Each launch runs
/// twice with new activations, so the block counter is seen put back.
#[test]
fn x_projection_norm_tail_equals_matvec_then_rms_norm3() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(77);
    let eps = 1e-6f32;
    // 48 rows of 4096 are summed in 2 slices on the emulator's 8 SMs
    // (ops::splits_for); 288 rows of 1024 (the 7B's dt 256, B and C 16:
    // dt's sum in two warps' parts) in one.
    for (ty, n, dt, nbc) in [
        (GgmlType::Q4_K, 4096, 32, 8),
        (GgmlType::Q8_0, 1024, 256, 16),
    ] {
        let rows = dt + 2 * nbc;
        let splits = ops::splits_for(&dev, rows, n);
        assert_eq!(splits, if n == 4096 { 2 } else { 1 });
        let wf = rand_vec(&mut rng, rows * n, 1.0);
        let wb = ops::upload_weights(&dev, ty, n, &quantize_rows(ty, &wf, n)).unwrap();
        let wv = view(&dev, &wb);
        let q8 = |cols: usize| -> (Buffer<i8>, Buffer<f32>, Buffer<i32>) {
            (
                dev.alloc(cols * dt).unwrap(),
                dev.alloc(cols * dt / 32).unwrap(),
                dev.alloc(cols * dt / 32).unwrap(),
            )
        };
        let read = |b: &(Buffer<i8>, Buffer<f32>, Buffer<i32>)| {
            (
                dev.read(&b.0).unwrap(),
                dev.read(&b.1).unwrap(),
                dev.read(&b.2).unwrap(),
            )
        };
        let tq = q8(8);
        let tacts = QActs {
            q: &view(&dev, &tq.0),
            d: &view(&dev, &tq.1),
            s: &view(&dev, &tq.2),
        };
        let tail = ops::norm3_tail(&dev, rows, nbc, eps, Some(&tacts), 8).unwrap();
        let plain_tail = ops::norm3_tail(&dev, rows, nbc, eps, None, 8).unwrap();
        for ncols in [1, 2] {
            for round in 0..2 {
                let x = rand_vec(&mut rng, ncols * n, 1.0 + round as f32);
                let (q, d, s) = q8a_ref(&x);
                let (qb, db, sb) = (
                    dev.upload(&q).unwrap(),
                    dev.upload(&d).unwrap(),
                    dev.upload(&s).unwrap(),
                );
                let acts = QActs {
                    q: &view(&dev, &qb),
                    d: &view(&dev, &db),
                    s: &view(&dev, &sb),
                };
                // Unfused: matvec, then rms_norm3 with its Q8A.
                let want: Buffer<f32> = dev.alloc(ncols * rows).unwrap();
                let wantv = view(&dev, &want);
                ops::matvec(&dev, ty, &wv, n, rows, &acts, ncols, &MvOut::to(&wantv)).unwrap();
                let raw = dev.read(&want).unwrap();
                let wq = q8(ncols);
                let wacts = QActs {
                    q: &view(&dev, &wq.0),
                    d: &view(&dev, &wq.1),
                    s: &view(&dev, &wq.2),
                };
                let (off, lens) = ([0, dt, dt + nbc], [dt, nbc, nbc]);
                ops::rms_norm3(&dev, &wantv, ncols, rows, off, lens, eps, Some(&wacts)).unwrap();
                let want_rows = dev.read(&want).unwrap();
                // Fused, with and without the Q8A of dt.
                for (t, with_q) in [(&tail, true), (&plain_tail, false)] {
                    let got: Buffer<f32> = dev.alloc(ncols * rows).unwrap();
                    let gv = view(&dev, &got);
                    ops::matvec_norm3(&dev, ty, (&wv, n, rows), &acts, ncols, &MvOut::to(&gv), t)
                        .unwrap();
                    let got_rows = dev.read(&got).unwrap();
                    let same = got_rows
                        .iter()
                        .zip(&want_rows)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{ty:?} ncols {ncols} round {round} q {with_q}: rows differ"
                    );
                    if with_q {
                        let (gq, gd, gs) = read(&tq);
                        let (wq, wd, ws) = read(&wq);
                        let nb = ncols * dt / 32;
                        assert_eq!(&gq[..ncols * dt], &wq[..], "{ty:?} ncols {ncols}: q");
                        assert_eq!(&gs[..nb], &ws[..], "{ty:?} ncols {ncols}: s");
                        let db: Vec<u32> = gd[..nb].iter().map(|v| v.to_bits()).collect();
                        let wdb: Vec<u32> = wd.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(db, wdb, "{ty:?} ncols {ncols}: d");
                    }
                }
                // The norm itself against f64, from the matvec's raw rows.
                for c in 0..ncols {
                    for (o, l) in off.iter().zip(lens) {
                        let seg = &raw[c * rows + o..c * rows + o + l];
                        let want64 = rms_ref(seg, None, eps);
                        for (i, w) in want64.iter().enumerate() {
                            let g = want_rows[c * rows + o + i];
                            assert!(
                                (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                                "{ty:?} c {c} seg {o} i {i}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
        // A matrix or a batch the tail was not made for is refused.
        let x = rand_vec(&mut rng, n, 1.0);
        let (q, d, s) = q8a_ref(&x);
        let (qb, db, sb) = (
            dev.upload(&q).unwrap(),
            dev.upload(&d).unwrap(),
            dev.upload(&s).unwrap(),
        );
        let acts = QActs {
            q: &view(&dev, &qb),
            d: &view(&dev, &db),
            s: &view(&dev, &sb),
        };
        let o: Buffer<f32> = dev.alloc(9 * rows).unwrap();
        let ov = view(&dev, &o);
        let other = ops::norm3_tail(&dev, rows + 32, nbc, eps, None, 8).unwrap();
        // Three rows are rms_norm3's (the tail is made for up to two).
        let o3: Buffer<f32> = dev.alloc(3 * rows).unwrap();
        let (q3, d3, s3) = q8a_ref(&rand_vec(&mut rng, 3 * n, 1.0));
        let (q3, d3, s3) = (
            dev.upload(&q3).unwrap(),
            dev.upload(&d3).unwrap(),
            dev.upload(&s3).unwrap(),
        );
        let acts3 = QActs {
            q: &view(&dev, &q3),
            d: &view(&dev, &d3),
            s: &view(&dev, &s3),
        };
        let out3v = view(&dev, &o3);
        ops::matvec(&dev, ty, &wv, n, rows, &acts3, 3, &MvOut::to(&out3v)).unwrap();
        let out3 = view(&dev, &o3);
        let three = ops::matvec_norm3(
            &dev,
            ty,
            (&wv, n, rows),
            &acts3,
            3,
            &MvOut::to(&out3),
            &tail,
        );
        assert!(three.is_err());
        assert!(
            ops::matvec_norm3(&dev, ty, (&wv, n, rows), &acts, 1, &MvOut::to(&ov), &other).is_err()
        );
    }
    assert!(ops::norm3_tail(&dev, 32, 16, 1e-6, None, 1).is_err());
}
