//! `ops::matmul` takes the tensor-core kernel only where its self-test
//! passed and the batch fills its tiles (`mma::MIN_COLS` rows), on the
//! emulator only with `MAMBA_GGUF_CUDA_MMA=1`. A binary of its own: the one
//! test sets that variable before anything reads it.

use mamba_cuda::mma::{self, Verdict};
use mamba_cuda::ops::{self, MvOut, QActs};
use mamba_cuda::{Buffer, Device};
use quant::GgmlType;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[test]
fn matmul_takes_the_tensor_cores_from_min_cols_rows_once_checked() {
    std::env::set_var("MAMBA_GGUF_CUDA_MMA", "1");
    let dev = Device::emu();
    let ty = GgmlType::Q4_K;
    let (n, rows) = (512, 72);
    let mut rng = StdRng::seed_from_u64(3);
    let w: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let rb = ty.row_bytes(n).unwrap();
    let mut wq = vec![0u8; rows * rb];
    for (src, dst) in w.chunks(n).zip(wq.chunks_mut(rb)) {
        quant::quantize_row(ty, src, dst).unwrap();
    }
    let wb = ops::upload_weights(&dev, ty, n, &wq).unwrap();
    let wv = dev.view(&wb, 0, wb.len()).unwrap();
    let cols = 40;
    let q: Vec<i8> = (0..cols * n).map(|_| rng.gen_range(-127..=127)).collect();
    let d: Vec<f32> = (0..cols * n / 32)
        .map(|_| rng.gen_range(0.001..0.02))
        .collect();
    let s: Vec<i32> = q
        .chunks(32)
        .map(|b| b.iter().map(|&v| i32::from(v)).sum())
        .collect();
    let (qb, db, sb) = (
        dev.upload(&q).unwrap(),
        dev.upload(&d).unwrap(),
        dev.upload(&s).unwrap(),
    );
    // Out[c][r] of the first `nc` activation rows, by each way.
    let run = |nc: usize, how: u8| -> Vec<u32> {
        let acts = QActs {
            q: &dev.view(&qb, 0, nc * n).unwrap(),
            d: &dev.view(&db, 0, nc * n / 32).unwrap(),
            s: &dev.view(&sb, 0, nc * n / 32).unwrap(),
        };
        let out: Buffer<f32> = dev.alloc(nc * rows).unwrap();
        let o = dev.view(&out, 0, nc * rows).unwrap();
        let to = MvOut::to(&o);
        let kernel = mma::kernel_of(ty).unwrap();
        match how {
            0 => ops::matmul(&dev, ty, &wv, n, rows, &acts, nc, &to).unwrap(),
            1 => mma::launch(&dev, kernel, ty, (&wv, n, rows), &acts, nc, &to).unwrap(),
            _ => {
                let splits = ops::splits_for(&dev, rows, n);
                ops::matmul_split(&dev, ty, (&wv, n, rows), &acts, nc, &to, splits).unwrap()
            }
        }
        dev.read(&out)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    // Before the self-test: the dp4a tiles.
    assert_eq!(mma::serving(&dev, ty), None);
    assert_eq!(run(cols, 0), run(cols, 2));
    assert_eq!(mma::check(&dev, ty).unwrap(), Some(Verdict::Serving));
    assert_eq!(mma::serving(&dev, ty), mma::kernel_of(ty));
    // From MIN_COLS rows the tensor cores, below them the dp4a tiles.
    assert_ne!(
        run(cols, 1),
        run(cols, 2),
        "the two paths round differently"
    );
    assert_eq!(run(cols, 0), run(cols, 1));
    assert_eq!(run(mma::MIN_COLS, 0), run(mma::MIN_COLS, 1));
    assert_eq!(run(mma::MIN_COLS - 1, 0), run(mma::MIN_COLS - 1, 2));
}
