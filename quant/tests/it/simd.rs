//! Every SIMD kernel against the scalar reference kernel of its type (the
//! reference itself is checked against ggml in dots.rs/accuracy.rs), on
//! random data and edge cases, for matvec (`dot`), the four-activation
//! micro-kernel (`dot4`) and `matmul`. Paths this CPU lacks are skipped
//! with a note on stderr.
//!
//! Every SIMD kernel of every type is bit-identical to the scalar
//! reference, in every form (dot, dot4, matvec, matmul; also in
//! src/avx2/mod.rs): exact integer sums and the scalar's f32 expression in
//! its order. The last type that summed its block terms in eight lanes
//! (IQ4_NL on AVX2) now runs the eight-row tile of Q8_0. Where a buffer is
//! short, the sum stops at the whole blocks both hold, as the scalar's
//! does.

use quant::{check_matmul, kernel_for_path, matmul, quantize_row, GgmlType, Kernel, SimdPath};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALL: [GgmlType; 24] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];
const SIMD_PATHS: [SimdPath; 3] = [SimdPath::Avx2, SimdPath::Avx512, SimdPath::Neon];

fn all_types() -> impl Iterator<Item = GgmlType> {
    ALL.into_iter()
}

/// The SIMD kernels of `ty` this CPU runs; notes the paths it skips.
fn simd_kernels(ty: GgmlType) -> Vec<Kernel> {
    let mut out = Vec::new();
    for p in SIMD_PATHS {
        match kernel_for_path(ty, p) {
            Some(k) => out.push(k),
            None if !p.cpu_has() => eprintln!("note: {ty} {}: skipped, CPU lacks it", p.name()),
            None => eprintln!("note: {ty} {}: no kernel written", p.name()),
        }
    }
    out
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).expect("block multiple")];
    quantize_row(ty, x, &mut q).expect("quantize");
    q
}

fn normals(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * scale
        })
        .collect()
}

/// Raw random bytes as a weight row of `ty`, with every fp16/f32 scale
/// field set to a finite value: covers every level and 6-bit scale
/// pattern, including i8 -128 in Q8_0 and Q6_K scales.
fn random_bytes_row(ty: GgmlType, n: usize, rng: &mut StdRng) -> Vec<u8> {
    let rb = ty.row_bytes(n).expect("rb");
    let mut w: Vec<u8> = (0..rb).map(|_| rng.gen()).collect();
    let f16 = |rng: &mut StdRng| {
        half::f16::from_f32(rng.gen_range(-2.0f32..2.0))
            .to_bits()
            .to_le_bytes()
    };
    let bb = ty.type_size();
    for blk in w.chunks_exact_mut(bb) {
        // Offsets of the fp16 fields per format.
        let fields: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
            GgmlType::IQ3_XXS | GgmlType::IQ3_S => &[0],
            GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S | GgmlType::IQ1_S => &[0],
            GgmlType::TQ1_0 => &[52],
            GgmlType::TQ2_0 => &[64],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
            _ => &[],
        };
        for &o in fields {
            blk[o..o + 2].copy_from_slice(&f16(rng));
        }
        if ty == GgmlType::IQ1_M {
            // The fp16 d is spread over the top nibbles of the four u16 at
            // bytes 48..56 (d's low nibble first).
            let d = u16::from_le_bytes(f16(rng));
            for k in 0..4 {
                let b = &mut blk[49 + 2 * k];
                *b = (*b & 0x0f) | ((((d >> (4 * k)) & 0xf) as u8) << 4);
            }
        }
    }
    match ty {
        // Whole rows of random floats / halves instead of raw bits (NaNs).
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1e3f32..1e3)).collect();
            quantize(ty, &x)
        }
        _ => w,
    }
}

/// A type the quant crate reads but cannot quantize to.
fn read_only(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::IQ3_XXS
            | GgmlType::IQ3_S
            | GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ1_S
    )
}

/// The weight rows of one case, by name, `rows` rows of `n` values.
fn weight_rows(ty: GgmlType, case: &str, n: usize, rows: usize, rng: &mut StdRng) -> Vec<u8> {
    // Types read but not written have no quantizer: random blocks instead.
    let case = if read_only(ty) { "bytes" } else { case };
    let mut w = Vec::new();
    for r in 0..rows {
        let row = match case {
            "normal" => quantize(ty, &normals(rng, n, 0.5)),
            "zeros" => quantize(ty, &vec![0.0; n]),
            // Every value at +-max: the levels sit at their extremes.
            "max" => {
                let x: Vec<f32> = (0..n)
                    .map(|i| if (i + r) % 3 == 0 { -6e4 } else { 6e4 })
                    .collect();
                quantize(ty, &x)
            }
            "bytes" => random_bytes_row(ty, n, rng),
            _ => unreachable!(),
        };
        w.extend(row);
    }
    w
}

fn act_rows(act: GgmlType, case: &str, n: usize, t: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut a = Vec::new();
    for j in 0..t {
        let x: Vec<f32> = match case {
            "zeros" => vec![0.0; n],
            // Quants all +-127.
            "max" => (0..n)
                .map(|i| if (i * 7 + j) % 5 < 2 { -1e3 } else { 1e3 })
                .collect(),
            _ => normals(rng, n, 1.5),
        };
        a.extend(quantize(act, &x));
    }
    a
}

fn assert_exact(k: &Kernel, got: f32, want: f32, what: &str) {
    assert!(
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
        "{} {} {what}: {got:e} vs scalar {want:e} (must be bit-identical)",
        k.weight,
        k.path.name()
    );
}

fn lengths(ty: GgmlType) -> Vec<usize> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            vec![1, 7, 8, 63, 64, 65, 200, 256, 1000, 4096]
        }
        _ => {
            let b = ty.block_size();
            vec![b, 2 * b, 3 * b, 7 * b, 4096, 4096 + 3 * b]
        }
    }
}

#[test]
fn simd_dot_matches_scalar_on_random_and_edge_data() {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut checked = 0;
    for ty in all_types() {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        for k in simd_kernels(ty) {
            for n in lengths(ty) {
                for wcase in ["normal", "zeros", "max", "bytes"] {
                    for acase in ["normal", "zeros", "max"] {
                        let w = weight_rows(ty, wcase, n, 1, &mut rng);
                        let a = act_rows(k.act, acase, n, 1, &mut rng);
                        let want = (scalar.dot)(n, &w, &a);
                        let got = (k.dot)(n, &w, &a);
                        let what = format!("n={n} w={wcase} a={acase}");
                        assert_exact(&k, got, want, &what);
                        if (wcase == "zeros" && !read_only(ty)) || acase == "zeros" {
                            assert_eq!(got, 0.0, "{ty} {what}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} SIMD dots checked");
}

#[test]
fn short_buffers_give_partial_sums_like_scalar() {
    // The kernels never read past their buffers: a short row or activation
    // shortens the sum to the whole blocks both hold, as the scalar does.
    let mut rng = StdRng::seed_from_u64(3);
    for ty in all_types() {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        for k in simd_kernels(ty) {
            let n = 1024;
            let w = weight_rows(ty, "normal", n, 1, &mut rng);
            let a = act_rows(k.act, "normal", n, 1, &mut rng);
            for (wl, al) in [(w.len() / 2, a.len()), (w.len(), a.len() / 3 + 1), (0, 0)] {
                let (ws, as_) = (&w[..wl], &a[..al]);
                let want = (scalar.dot)(n, ws, as_);
                let got = (k.dot)(n, ws, as_);
                assert_exact(&k, got, want, &format!("short {wl}/{al}"));
            }
        }
    }
}

#[test]
fn dot4_is_the_dot_for_each_activation() {
    let mut rng = StdRng::seed_from_u64(44);
    for ty in all_types() {
        for k in simd_kernels(ty) {
            let dot4 = k.dot4.expect("SIMD kernels have a dot4");
            for n in lengths(ty) {
                let w = weight_rows(ty, "normal", n, 1, &mut rng);
                let a = act_rows(k.act, "normal", n, 4, &mut rng);
                let ab = a.len() / 4;
                let acts = [&a[..ab], &a[ab..2 * ab], &a[2 * ab..3 * ab], &a[3 * ab..]];
                let mut out = [f32::NAN; 4];
                dot4(n, &w, acts, &mut out);
                for (j, act) in acts.iter().enumerate() {
                    let one = (k.dot)(n, &w, act);
                    assert_eq!(
                        out[j].to_bits(),
                        one.to_bits(),
                        "{ty} {} n={n} act {j}: dot4 {} vs dot {one}",
                        k.path.name(),
                        out[j]
                    );
                }
            }
        }
    }
}

#[test]
fn simd_matmul_matches_per_pair_dots_and_scalar() {
    let mut rng = StdRng::seed_from_u64(77);
    for ty in all_types() {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        // Rows of one to three 256-value super-blocks too: K-quant rows of
        // fewer than four go four rows at a time in the decode matvec.
        for (k, n) in simd_kernels(ty)
            .into_iter()
            .flat_map(|k| [1, 2, 3].map(|m| (k, m * ty.block_size().max(256))))
        {
            let rb = ty.row_bytes(n).expect("rb");
            for (rows, t) in [(1, 1), (7, 1), (7, 3), (5, 4), (3, 5), (9, 8), (2, 13)] {
                let w = weight_rows(ty, "normal", n, rows, &mut rng);
                let a = act_rows(k.act, "normal", n, t, &mut rng);
                let ab = a.len() / t;
                let mut out = vec![f32::NAN; t * rows];
                check_matmul(&k, n, rows, &w, t, &a, &out).expect("sizes");
                matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid buffers");
                let mut sout = vec![f32::NAN; t * rows];
                matmul(&scalar, n, rows, &w, t, &a, &mut sout).expect("valid buffers");
                for j in 0..t {
                    for r in 0..rows {
                        let (wr, ar) = (&w[r * rb..(r + 1) * rb], &a[j * ab..(j + 1) * ab]);
                        let one = (k.dot)(n, wr, ar);
                        let got = out[j * rows + r];
                        assert_eq!(
                            got.to_bits(),
                            one.to_bits(),
                            "{ty} {} rows={rows} t={t} ({j},{r}): matmul {got} vs dot {one}",
                            k.path.name()
                        );
                        let what = format!("matmul rows={rows} t={t} ({j},{r})");
                        assert_exact(&k, got, sout[j * rows + r], &what);
                    }
                }
            }
        }
    }
}

#[test]
fn paths_are_reported_and_auto_picks_the_fastest_the_cpu_has() {
    for ty in all_types() {
        for p in SIMD_PATHS {
            if let Some(k) = kernel_for_path(ty, p) {
                assert_eq!(k.path, p);
                assert!(p.cpu_has());
                assert!(k.dot4.is_some());
            }
        }
        let auto = quant::kernel_with(ty, None).expect("auto");
        let best = SimdPath::ALL
            .into_iter()
            .find(|&p| kernel_for_path(ty, p).is_some())
            .expect("scalar at least");
        assert_eq!(auto.path, best, "{ty}");
        #[cfg(target_arch = "x86_64")]
        if SimdPath::Avx2.cpu_has() {
            assert_ne!(auto.path, SimdPath::Scalar, "{ty}: AVX2 CPU got scalar");
        }
        assert!(kernel_for_path(ty, SimdPath::Scalar)
            .expect("scalar")
            .dot4
            .is_none());
    }
}

#[test]
fn self_check_passes_every_kernel_and_rejects_a_wrong_one() {
    for ty in all_types() {
        for k in simd_kernels(ty) {
            assert!(
                quant::self_check(&k),
                "{ty} {}: self-check failed",
                k.path.name()
            );
            let mut bad = k;
            bad.dot = |_, _, _| 1.0;
            assert!(!quant::self_check(&bad), "{ty}: wrong dot accepted");
            let mut bad4 = k;
            bad4.dot4 = Some(|_, _, _, out| *out = [0.5; 4]);
            assert!(!quant::self_check(&bad4), "{ty}: dot4 unlike dot accepted");
        }
    }
}

#[test]
fn tiled_kernels_are_the_scalar_kernel_bit_for_bit() {
    // Kernels with a multi-row `gemm` keep exact integer block sums and do
    // the scalar's float expression per lane in the same order (Q4_0/Q5_0:
    // `sum += isum * (dw * da)`; K-quants: the super-block tail), so dot,
    // dot4 and gemm equal the scalar reference exactly, also for raw weight
    // bytes and raw activation bytes (quants of -128 included, which
    // quantize_row never writes), over row counts around the tile of 8 and
    // activation counts around the K-quants' 8 at a time (and Q4_K's tile
    // from 8 on). NEON kernels of every type keep the scalar's float steps
    // too, so they are held to the same.
    let mut rng = StdRng::seed_from_u64(0x711E);
    let mut checked = 0;
    for ty in all_types() {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        for k in simd_kernels(ty)
            .into_iter()
            .filter(|k| k.gemm.is_some() || k.path == SimdPath::Neon)
        {
            let n = if ty.block_size() == 256 { 512 } else { 320 };
            let (rb, ab) = (
                ty.row_bytes(n).expect("rb"),
                k.act.row_bytes(n).expect("ab"),
            );
            for (rows, t) in [
                (1, 1),
                (8, 1),
                (15, 2),
                (16, 5),
                (17, 9),
                (3, 17),
                (9, 7),
                (2, 3),
            ] {
                for wcase in ["normal", "max", "bytes"] {
                    let w = weight_rows(ty, wcase, n, rows, &mut rng);
                    let mut a = act_rows(k.act, "max", n, t, &mut rng);
                    if wcase == "bytes" && k.act != GgmlType::F32 {
                        // Raw quant bytes behind each activation scale (Q8_K:
                        // with their block sums, which the AVX2 Q6_K reads).
                        let head = if k.act == GgmlType::Q8_0 { 2 } else { 4 };
                        for blk in a.chunks_exact_mut(k.act.type_size()) {
                            rng.fill(&mut blk[head..]);
                            if matches!(
                                ty,
                                GgmlType::Q8_0
                                    | GgmlType::IQ4_NL
                                    | GgmlType::IQ3_XXS
                                    | GgmlType::IQ3_S
                                    | GgmlType::IQ2_XXS
                                    | GgmlType::IQ2_XS
                                    | GgmlType::IQ2_S
                                    | GgmlType::IQ1_S
                                    | GgmlType::IQ1_M
                            ) {
                                // Signed weights sign one operand by the
                                // other on AVX2 (the IQ grids put theirs on
                                // the activation): exact for activations
                                // in -127..=127, all that quantize_row
                                // writes.
                                for q in &mut blk[head..] {
                                    *q = (*q as i8).max(-127) as u8;
                                }
                            }
                            if k.act == GgmlType::Q8_K {
                                let (qs, sums) = blk[4..].split_at_mut(256);
                                for (s, run) in sums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
                                    let v: i32 = run.iter().map(|&q| q as i8 as i32).sum();
                                    s.copy_from_slice(&(v as i16).to_le_bytes());
                                }
                            }
                        }
                    }
                    let mut out = vec![f32::NAN; t * rows];
                    matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid buffers");
                    for j in 0..t {
                        for r in 0..rows {
                            let (wr, ar) = (&w[r * rb..(r + 1) * rb], &a[j * ab..(j + 1) * ab]);
                            let want = (scalar.dot)(n, wr, ar);
                            let got = out[j * rows + r];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} {} {wcase} rows={rows} t={t} ({j},{r}): {got} vs scalar {want}",
                                k.path.name()
                            );
                            assert_eq!((k.dot)(n, wr, ar).to_bits(), want.to_bits());
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!("{checked} tiled results checked");
}

#[test]
fn matvec_is_the_scalar_kernel_bit_for_bit_over_long_rows() {
    // The decode form (one activation row, `matvec`) of every SIMD kernel
    // with a `gemm`: rows long enough for the K-quant matvec's batches of
    // eight super-blocks (Q6_K: two whole batches and a part, one whole
    // batch, a part alone; Q4_K/Q5_K, four at a time: four whole batches
    // and a part of three, two whole, a part alone) and the 32-value
    // types' tiles, raw weight bytes
    // included; each result must be the scalar reference's bits.
    let mut rng = StdRng::seed_from_u64(0x3A7);
    let mut checked = 0;
    for ty in all_types() {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        for k in simd_kernels(ty).into_iter().filter(|k| k.gemm.is_some()) {
            let b = ty.block_size();
            for n in [19 * b.max(256), 8 * b.max(256), 3 * b.max(256)] {
                let (rb, rows) = (ty.row_bytes(n).expect("rb"), 11);
                for wcase in ["normal", "max", "bytes"] {
                    for acase in ["normal", "max", "zeros"] {
                        let w = weight_rows(ty, wcase, n, rows, &mut rng);
                        let a = act_rows(k.act, acase, n, 1, &mut rng);
                        let mut out = vec![f32::NAN; rows];
                        quant::matvec(&k, n, &w, &a, &mut out).expect("valid buffers");
                        for (r, got) in out.iter().enumerate() {
                            let wr = &w[r * rb..(r + 1) * rb];
                            let want = (scalar.dot)(n, wr, &a);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} {} n={n} {wcase}/{acase} row {r}: {got} vs scalar {want}",
                                k.path.name()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!("{checked} matvec results checked");
}

/// `q8_0::quantize` (AVX2 where the CPU has it) writes the scalar
/// reference's bytes: random rows at many scales, exact .5 ties of both
/// signs (id = 1 when amax = 127), zero, tiny and huge blocks, and blocks
/// holding NaN or an infinity.
#[test]
fn q8_0_quantize_is_the_scalar_reference_byte_for_byte() {
    use quant::q8_0::{quantize as fast, quantize_scalar};
    let mut rng = StdRng::seed_from_u64(808);
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for scale in [1e-30f32, 1e-6, 0.01, 1.0, 3.5, 1e4, 1e30] {
        rows.push(normals(&mut rng, 32 * 64, scale));
    }
    // amax 127 -> d = 1, id = 1: every k + 0.5 is a tie.
    let mut ties: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) + 0.5).collect();
    ties[0] = 127.0;
    let mut neg = ties.clone();
    neg.iter_mut().for_each(|v| *v = -*v);
    rows.push([ties, neg].concat());
    // Values that round to just under / over a half after scaling.
    let near: Vec<f32> = (0..64)
        .map(|i| 127.0 * (0.5 + (i as f32 - 32.0) * f32::EPSILON) / (1 + i % 7) as f32)
        .collect();
    rows.push(near);
    let mut specials = vec![0.0f32; 32 * 6];
    specials[32] = f32::NAN;
    specials[64 + 3] = f32::INFINITY;
    specials[96 + 5] = f32::NEG_INFINITY;
    specials[128..160].fill(-0.0);
    specials[160] = f32::MIN_POSITIVE / 4.0; // subnormal amax
    specials[161] = -f32::MIN_POSITIVE / 8.0;
    rows.push(specials);
    for (i, x) in rows.iter().enumerate() {
        let n = x.len() / 32 * 32;
        let mut want = vec![0u8; n / 32 * 34];
        let mut got = vec![0u8; n / 32 * 34];
        quantize_scalar(&x[..n], &mut want);
        fast(&x[..n], &mut got);
        for (b, (w, g)) in want.chunks(34).zip(got.chunks(34)).enumerate() {
            assert_eq!(w, g, "row {i} block {b}: {:?}", &x[b * 32..b * 32 + 32]);
        }
    }
}

/// `q8_k::quantize` (AVX2 where the CPU has it) writes the scalar
/// reference's bytes: random blocks at many scales, round-half-even ties
/// (max = -127 gives iscale = 1), equal magnitudes of both signs (the first
/// sets the sign), zero blocks, and blocks with NaN, infinities or a
/// subnormal maximum.
#[test]
fn q8_k_quantize_is_the_scalar_reference_byte_for_byte() {
    use quant::q8_k::{quantize as fast, quantize_scalar};
    let mut rng = StdRng::seed_from_u64(0x08C);
    let mut blocks: Vec<Vec<f32>> = Vec::new();
    for scale in [1e-30f32, 1e-3, 1.0, 7.0, 1e5, 1e30] {
        blocks.push(normals(&mut rng, 256 * 4, scale));
    }
    let mut ties: Vec<f32> = (0..256).map(|i| ((i % 200) as f32 - 100.0) + 0.5).collect();
    ties[3] = -127.0;
    blocks.push(ties.clone());
    ties[3] = 127.0;
    ties[1] = -127.0; // first of equal magnitudes is negative
    blocks.push(ties);
    let mut b = vec![0.0f32; 256 * 5];
    b[256 + 9] = f32::NAN;
    b[512 + 100] = f32::INFINITY;
    b[768 + 255] = -1e-45; // subnormal max: iscale overflows
    b[1024..1280]
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = if i % 2 == 0 { 3.0 } else { -3.0 });
    blocks.push(b);
    for (i, x) in blocks.iter().enumerate() {
        let nb = x.len() / 256;
        let mut want = vec![0u8; nb * 292];
        let mut got = vec![0u8; nb * 292];
        quantize_scalar(x, &mut want);
        fast(x, &mut got);
        for (k, (w, g)) in want.chunks(292).zip(got.chunks(292)).enumerate() {
            assert_eq!(w, g, "set {i} block {k}");
        }
    }
}
