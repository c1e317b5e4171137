//! The int8 tensor-core path on the emulator (or a GPU: `MAMBA_GGUF_TEST_DEVICE=cuda`):
//! the emulated `mma.sync.m16n8k32.row.col.s32.s8.s8.s32` against a plain
//! integer matrix product for the A, B and C/D fragment layouts it uses,
//! each weight type's `mma_matmul_<t>` against the dp4a matmul and an f64
//! host reference, and the load-time self-test switching off a kernel with
//! a misread layout while the answers stay the dp4a path's.

use mamba_cuda::mma::{self, Verdict};
use mamba_cuda::ops::{self, MvOut, QActs};
use mamba_cuda::{Buffer, Device};
use quant::GgmlType;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn test_device() -> Device {
    match std::env::var("MAMBA_GGUF_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            Device::cuda(0).unwrap_or_else(|e| panic!("MAMBA_GGUF_TEST_DEVICE=cuda: {e}"))
        }
        _ => Device::emu(),
    }
}

const QTYPES: [GgmlType; 21] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// D = A B + C by the definition, wrapping as the instruction does.
fn product(a: &[i8], b: &[i8], c: &[i32]) -> Vec<i32> {
    let mut d = c.to_vec();
    for r in 0..16 {
        for n in 0..8 {
            for k in 0..32 {
                let p = i32::from(a[r * 32 + k]) * i32::from(b[n * 32 + k]);
                d[r * 8 + n] = d[r * 8 + n].wrapping_add(p);
            }
        }
    }
    d
}

/// Every element of D, from every lane's fragments: random matrices, the
/// extremes (-128 and 127 everywhere), and one-hot matrices that place a
/// single product at each (row, k, column) in turn, so an element of A, B
/// or C read from the wrong lane, register or byte shows in its own place.
#[test]
fn the_emulated_mma_is_the_integer_matrix_product() {
    let dev = test_device();
    let mut rng = StdRng::seed_from_u64(25);
    let mut cases: Vec<(Vec<i8>, Vec<i8>, Vec<i32>)> = Vec::new();
    for _ in 0..3 {
        cases.push((
            (0..512).map(|_| rng.gen::<i8>()).collect(),
            (0..256).map(|_| rng.gen::<i8>()).collect(),
            (0..128).map(|_| rng.gen_range(-1 << 24..1 << 24)).collect(),
        ));
    }
    cases.push((
        vec![-128; 512],
        vec![-128; 256],
        vec![i32::MAX - 600_000; 128],
    ));
    cases.push((vec![127; 512], vec![-128; 256], vec![0; 128]));
    // One-hot: A[r][k] = 1 + r, B[k][n] = 1 + n for one k, C[r][n] = 1000 (r * 8 + n):
    // D[r][n] = 1000 (r * 8 + n) + (1 + r)(1 + n) exactly when every operand is placed right.
    for k in [0, 3, 4, 15, 16, 19, 28, 31] {
        let mut a = vec![0i8; 512];
        let mut b = vec![0i8; 256];
        for r in 0..16 {
            a[r * 32 + k] = 1 + r as i8;
        }
        for n in 0..8 {
            b[n * 32 + k] = 1 + n as i8;
        }
        cases.push((a, b, (0..128).map(|i| 1000 * i).collect()));
    }
    for (i, (a, b, c)) in cases.iter().enumerate() {
        let got = mma::mma_on_device(&dev, a, b, c).unwrap();
        let want = product(a, b, c);
        for e in 0..128 {
            assert_eq!(got[e], want[e], "case {i}: D[{}][{}]", e / 8, e % 8);
        }
    }
    assert_eq!(mma::probe(&dev).unwrap(), None);
}

fn upload_acts(dev: &Device, x: &[f32]) -> (Buffer<i8>, Buffer<f32>, Buffer<i32>) {
    // The Q8A of x (cuda/README.md), on the host.
    let (mut q, mut d, mut s) = (vec![], vec![], vec![]);
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        let mut sum = 0;
        for &v in blk {
            let qi = (v * id).round().clamp(-127.0, 127.0) as i32;
            q.push(qi as i8);
            sum += qi;
        }
        d.push(db);
        s.push(sum);
    }
    (
        dev.upload(&q).unwrap(),
        dev.upload(&d).unwrap(),
        dev.upload(&s).unwrap(),
    )
}

/// Each type's tensor-core kernel passes the load-time self-test (a bare
/// MMA against the integer product; 70 x 256 and 70 x 512 matrices against
/// 40 and 9 activation rows, against the dp4a matmul and the f64 host
/// reference), and with `add` (out = add + dot, in place) over 130 rows
/// (three row tiles) and 33 columns gives the dp4a matmul's values to fp32
/// rounding.
#[test]
fn every_type_s_tensor_core_matmul_matches_the_dp4a_path_and_the_host() {
    let dev = test_device();
    let (n, rows, cols) = (256, 130, 33);
    let mut rng = StdRng::seed_from_u64(7);
    for ty in QTYPES {
        assert_eq!(
            mma::check(&dev, ty).unwrap(),
            Some(Verdict::Serving),
            "{ty:?}"
        );
        let kernel = mma::kernel_of(ty).unwrap();
        let w: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let rb = ty.row_bytes(n).unwrap();
        let mut wq = vec![0u8; rows * rb];
        for (src, dst) in w.chunks(n).zip(wq.chunks_mut(rb)) {
            if quant::quantize_row(ty, src, dst).is_err() {
                // Not written without an importance matrix: raw bytes, a
                // small fp16 scale first (IQ1_M: its scale nibbles zeroed).
                for b in dst.iter_mut() {
                    *b = rng.gen();
                }
                for blk in dst.chunks_mut(ty.type_size()) {
                    if ty == GgmlType::IQ1_M {
                        for k in [49, 51, 53] {
                            blk[k] &= 0x0f;
                        }
                        blk[55] = (blk[55] & 0x0f) | 0x20;
                    } else {
                        blk[..2].copy_from_slice(&0x2000u16.to_le_bytes());
                    }
                }
            }
        }
        let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
        let wv = dev.view(&wb, 0, wb.len()).unwrap();
        let x: Vec<f32> = (0..cols * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let (qb, db, sb) = upload_acts(&dev, &x);
        let acts = QActs {
            q: &dev.view(&qb, 0, qb.len()).unwrap(),
            d: &dev.view(&db, 0, db.len()).unwrap(),
            s: &dev.view(&sb, 0, sb.len()).unwrap(),
        };
        let base: Vec<f32> = (0..cols * rows).map(|_| rng.gen_range(-5.0..5.0)).collect();
        let run = |tc: bool| -> Vec<f32> {
            let out = dev.upload(&base).unwrap();
            let o = dev.view(&out, 0, out.len()).unwrap();
            let to = MvOut {
                out: &o,
                add: Some(&o),
            };
            if tc {
                mma::launch(&dev, kernel, ty, (&wv, n, rows), &acts, cols, &to).unwrap();
            } else {
                ops::matmul_split(&dev, ty, (&wv, n, rows), &acts, cols, &to, 1).unwrap();
            }
            dev.read(&out).unwrap()
        };
        let (tc, dp) = (run(true), run(false));
        for i in 0..cols * rows {
            let tol = 1e-5 * (dp[i].abs() + base[i].abs() + 1.0);
            assert!(
                (tc[i] - dp[i]).abs() <= tol,
                "{ty:?} column {} row {}: {} vs dp4a {}",
                i / rows,
                i % rows,
                tc[i],
                dp[i]
            );
        }
    }
}

/// A kernel with a misread fragment layout (the emulator's
/// `mma_matmul_q8_0_badlayout`: B's two registers swapped) is caught by the
/// self-test, switched off with the place it disagreed, and a matmul asked
/// of it then runs the dp4a path: the same bits as the dp4a matmul. The
/// good kernel beside it still serves.
#[test]
fn a_misread_layout_is_switched_off_and_the_answers_stay_right() {
    let dev = Device::emu();
    let ty = GgmlType::Q8_0;
    let bad = "mma_matmul_q8_0_badlayout";
    let v = mma::check_kernel(&dev, ty, bad).unwrap();
    let Verdict::SwitchedOff(detail) = &v else {
        panic!("{v:?}")
    };
    assert!(detail.contains("dp4a matmul gives"), "{detail}");
    assert_eq!(mma::verdict(&dev, bad), Some(v.clone()));
    assert_eq!(mma::check(&dev, ty).unwrap(), Some(Verdict::Serving));

    let (n, rows, cols) = (512, 40, 20);
    let mut rng = StdRng::seed_from_u64(11);
    let w: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let rb = ty.row_bytes(n).unwrap();
    let mut wq = vec![0u8; rows * rb];
    for (src, dst) in w.chunks(n).zip(wq.chunks_mut(rb)) {
        quant::quantize_row(ty, src, dst).unwrap();
    }
    let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
    let wv = dev.view(&wb, 0, wb.len()).unwrap();
    let x: Vec<f32> = (0..cols * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let (qb, db, sb) = upload_acts(&dev, &x);
    let acts = QActs {
        q: &dev.view(&qb, 0, qb.len()).unwrap(),
        d: &dev.view(&db, 0, db.len()).unwrap(),
        s: &dev.view(&sb, 0, sb.len()).unwrap(),
    };
    let run = |f: &dyn Fn(&MvOut)| -> Vec<f32> {
        let out: Buffer<f32> = dev.alloc(cols * rows).unwrap();
        let o = dev.view(&out, 0, out.len()).unwrap();
        f(&MvOut::to(&o));
        dev.read(&out).unwrap()
    };
    let via_bad =
        run(&|to| mma::matmul_with(&dev, bad, ty, (&wv, n, rows), &acts, cols, to).unwrap());
    let splits = ops::splits_for(&dev, rows, n);
    let dp4a =
        run(&|to| ops::matmul_split(&dev, ty, (&wv, n, rows), &acts, cols, to, splits).unwrap());
    let raw_bad = run(&|to| mma::launch(&dev, bad, ty, (&wv, n, rows), &acts, cols, to).unwrap());
    assert!(via_bad
        .iter()
        .zip(&dp4a)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // What it would have answered: wrong.
    assert!(raw_bad
        .iter()
        .zip(&dp4a)
        .any(|(a, b)| (a - b).abs() > 1e-3 * b.abs().max(1.0)));
}

/// Where the tensor-core path serves: only after its self-test passed, and
/// on the emulator only when asked (`MAMBA_GGUF_CUDA_MMA=1`).
#[test]
fn the_tensor_core_path_serves_only_after_its_self_test() {
    let dev = Device::emu();
    if std::env::var("MAMBA_GGUF_CUDA_MMA").is_err() {
        for ty in QTYPES {
            assert_eq!(mma::serving(&dev, ty), None, "{ty:?}");
        }
    }
    assert_eq!(mma::kernel_of(GgmlType::F16), None);
    assert_eq!(mma::check(&dev, GgmlType::F32).unwrap(), None);
}
