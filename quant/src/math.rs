//! Vectorisable f32 `exp`, `softplus` and `silu` over slices, for the
//! runtime's selective scan (exp(dt * A), softplus of dt, SiLU gates).
//! Pure compute, branch-free per element so LLVM vectorises the loops;
//! on x86-64 with AVX2 the same code is also compiled 8 lanes wide and
//! picked at run time. `exp`, `softplus` and `silu` use no FMA, so every path
//! gives the same bits.
//! `exp_nonpos` (the scan's exp(dt A)) is written with `mul_add`, which
//! rounds once in every build, so it too gives the same bits everywhere;
//! `x86::exp_nonpos8` is its eight-lane form for hand-written loops.
//!
//! Accuracy against `f64` references (tests below): `exp` within 2 ULP
//! over the whole f32 range, `softplus` and `silu` within 4 ULP; results
//! below f32's normal range (|y| < 2^-126) within 2^-126 absolute. NaN in, NaN out; `exp(+inf) = inf`,
//! `exp(-inf) = 0`.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^r's degree-7 Taylor coefficients, highest first (Horner from 1/7!):
/// shared by [`exp`], [`exp_nonpos`] and [`x86::exp_nonpos8`].
const EXP_TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// 2^k for integer-valued `k` in -126..=127, from its exponent bits: the
/// low mantissa bits of k + 127 + 1.5 * 2^23 are k + 127 (no float to int
/// conversion, which would keep the loops from vectorising).
#[inline(always)]
fn pow2i(k: f32) -> f32 {
    f32::from_bits((k + (127.0 + ROUND)).to_bits() << 23)
}

/// e^x: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite), e^r by its degree-7
/// Taylor polynomial (truncation < 6e-9 relative), times 2^n applied in
/// two steps so that subnormal results round once.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_scaled(x, 0.0)
}

/// e^x * 2^k for integer-valued `k` in 0..=64, rounded once.
#[inline(always)]
fn exp_scaled(x: f32, k: f32) -> f32 {
    let xc = x.clamp(-150.0, 89.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_TAYLOR[0];
    for c in &EXP_TAYLOR[1..] {
        p = p * r + c;
    }
    let n = n + k;
    let n1 = (n * 0.5 + ROUND) - ROUND; // n / 2 rounded, |n1| <= 108
                                        // A NaN x stays NaN through clamp and every step after it. (Selecting
                                        // x for NaN instead would make LLVM store with vmaskmovps, which is
                                        // very slow on AMD CPUs.)
    p * pow2i(n1) * pow2i(n - n1)
}

/// e^x for x <= 0, the scan's exp(dt * A) (dt > 0, A < 0): [`exp`]'s
/// range reduction and polynomial in fused multiply-adds, and since the
/// result lies in [2^-126, 1] (x is clamped to [ln 2^-126, 0]) one power
/// of two finishes it: about half of [`exp`]'s operations. Without hardware
/// FMA, `mul_add` is libm's correctly rounded `fmaf`, so every build gives
/// the same bits, only slower. Within 2 ULP of e^x down to ln 2^-126;
/// below, where e^x is subnormal, off by less than 2^-126 absolute; 1 for
/// x > 0; NaN in, NaN out.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    let xc = x.clamp(LN_MIN_NORMAL, 0.0);
    let n = xc.mul_add(LOG2E, ROUND) - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xc));
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, c);
    }
    p * pow2i(n)
}

/// Eight-lane forms for hand-written AVX2 loops.
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::{EXP_TAYLOR, LN2_HI, LN2_LO, LN_MIN_NORMAL, LOG2E, ROUND};
    use std::arch::x86_64::*;

    /// [`super::exp_nonpos`] of each lane, bit for bit (the same operations
    /// in the same order; max/min with the input as second operand pass a
    /// NaN through as `clamp` does).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_nonpos8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(
            _mm256_set1_ps(0.0),
            _mm256_max_ps(_mm256_set1_ps(LN_MIN_NORMAL), x),
        );
        let round = _mm256_set1_ps(ROUND);
        let n = _mm256_sub_ps(_mm256_fmadd_ps(xc, _mm256_set1_ps(LOG2E), round), round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_TAYLOR[0]);
        for &c in &EXP_TAYLOR[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let k = _mm256_add_ps(n, _mm256_set1_ps(127.0 + ROUND));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(k)));
        _mm256_mul_ps(p, pow2)
    }
}

/// ln(2^-126), just above: e^x stays a normal f32 here.
const LN_MIN_NORMAL: f32 = -87.336_54;

/// ln(1 + u) for u in [0, 1]: v = 1 + u = 2^e m with m in [sqrt(1/2),
/// sqrt(2)), ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by
/// its series to s^9, plus the rounding of 1 + u put back as (u - (v - 1)) / v.
#[inline(always)]
fn log1p_unit(u: f32) -> f32 {
    let v = 1.0 + u;
    let big = v > std::f32::consts::SQRT_2;
    let m = if big { v * 0.5 } else { v };
    let e = if big { std::f32::consts::LN_2 } else { 0.0 };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut q = 1.0 / 9.0;
    q = q * s2 + 1.0 / 7.0;
    q = q * s2 + 1.0 / 5.0;
    q = q * s2 + 1.0 / 3.0;
    q = q * s2 + 1.0;
    let corr = (u - (v - 1.0)) / v;
    e + (2.0 * s * q + corr)
}

/// softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    // NaN: exp(NaN) is NaN, so is the sum.
    x.max(0.0) + log1p_unit(exp(-x.abs()))
}

/// silu(x) = x * sigmoid(x), sigmoid from t = e^-|x| (never overflows):
/// x / (1 + t) for x >= 0, x t / (1 + t) below, with t carried scaled by
/// 2^64 so that it keeps full precision where e^x is subnormal.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let two_m64 = pow2i(-64.0);
    let t64 = exp_scaled(-x.abs(), 64.0);
    let d = 1.0 + t64 * two_m64;
    if x >= 0.0 {
        x / d
    } else {
        (x * t64 / d) * two_m64
    }
}

macro_rules! slice_fn {
    ($(#[$doc:meta])* $name:ident, $f:ident, $avx2:ident) => {
        $(#[$doc])*
        pub fn $name(x: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { $avx2(x) };
                return;
            }
            for v in x.iter_mut() {
                *v = $f(*v);
            }
        }

        /// # Safety
        /// The CPU has AVX2 (any length of `x`).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2(x: &mut [f32]) {
            for v in x.iter_mut() {
                *v = $f(*v);
            }
        }
    };
}

slice_fn!(
    /// `x[i] = e^x[i]`.
    exp_slice,
    exp,
    exp_slice_avx2
);
slice_fn!(
    /// `x[i] = ln(1 + e^x[i])`.
    softplus_slice,
    softplus,
    softplus_slice_avx2
);
slice_fn!(
    /// `x[i] = x[i] / (1 + e^-x[i])`.
    silu_slice,
    silu,
    silu_slice_avx2
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place, on the ordered-integer line.
    fn ulps(a: f32, b: f32) -> u32 {
        let key = |x: f32| {
            let i = x.to_bits() as i32;
            if i < 0 {
                i32::MIN - i
            } else {
                i
            }
        };
        key(a).abs_diff(key(b))
    }

    /// Inputs across [lo, hi]: a fine even grid plus pseudo-random points.
    fn inputs(lo: f32, hi: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..=200_000)
            .map(|i| lo + (hi - lo) * (i as f32 / 200_000.0))
            .collect();
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push(lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32));
        }
        v
    }

    /// Max ULP distance to `want`, except that results below f32's normal
    /// range (|r| < 2^-126) only need to be within 2^-126 absolute.
    fn check(name: &str, xs: &[f32], ours: &[f32], want: impl Fn(f64) -> f64, max_ulps: u32) {
        let mut worst = (0u32, 0f32);
        for (&x, &y) in xs.iter().zip(ours) {
            let r = want(x as f64) as f32;
            let tiny = r.abs() < f32::MIN_POSITIVE && (y - r).abs() <= f32::MIN_POSITIVE;
            let d = if tiny { 0 } else { ulps(y, r) };
            if d > worst.0 {
                worst = (d, x);
            }
        }
        eprintln!("{name}: max {} ULP (at x = {:e})", worst.0, worst.1);
        assert!(
            worst.0 <= max_ulps,
            "{name}: {} ULP at x = {:e}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn exp_within_2_ulp_of_f64_over_the_whole_range() {
        let xs = inputs(-110.0, 90.0);
        let mut y = xs.clone();
        exp_slice(&mut y);
        check("exp", &xs, &y, f64::exp, 2);
        // The scalar form (used for the tail of no loop) agrees bit for bit.
        for (&x, &v) in xs.iter().zip(&y).step_by(97) {
            assert_eq!(exp(x).to_bits(), v.to_bits(), "x = {x}");
        }
        // Also against std's f32 exp near 0, where most scan values are.
        for x in inputs(-1.0, 1.0) {
            assert!(ulps(exp(x), x.exp()) <= 2, "x = {x}");
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA (any length of `x`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_nonpos_fma(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = exp_nonpos(*v);
        }
    }

    #[test]
    fn exp_nonpos_within_2_ulp_on_its_domain() {
        let xs: Vec<f32> = inputs(-87.33, 0.0)
            .into_iter()
            .filter(|&x| x <= 0.0)
            .collect();
        let y: Vec<f32> = xs.iter().map(|&x| exp_nonpos(x)).collect();
        check("exp_nonpos", &xs, &y, f64::exp, 2);
        for x in inputs(-1.0, 0.0) {
            assert!(ulps(exp_nonpos(x), x.exp()) <= 2, "x = {x}");
        }
        // Below the normal range: within 2^-126 of e^x, never negative.
        for x in [-87.4f32, -90.0, -103.0, -150.0, -1e30, f32::NEG_INFINITY] {
            let v = exp_nonpos(x);
            assert!(
                (0.0..=f32::MIN_POSITIVE * 1.01).contains(&v),
                "x = {x}: {v}"
            );
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(3.0), 1.0);
        assert!(exp_nonpos(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // Compiled with FMA instructions: the same bits as this build.
            let mut v = xs.clone();
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { exp_nonpos_fma(&mut v) };
            for ((&x, &a), &b) in xs.iter().zip(&v).zip(&y) {
                assert_eq!(a.to_bits(), b.to_bits(), "x = {x}");
            }
            use std::arch::x86_64::*;
            let mut all = inputs(-120.0, 5.0);
            all.extend([
                0.0,
                -0.0,
                f32::NAN,
                f32::NEG_INFINITY,
                f32::INFINITY,
                -1e-45,
            ]);
            for c in all.chunks(8).filter(|c| c.len() == 8) {
                let mut out = [0f32; 8];
                // SAFETY: AVX2 and FMA checked above; both pointers hold 8.
                unsafe {
                    _mm256_storeu_ps(
                        out.as_mut_ptr(),
                        x86::exp_nonpos8(_mm256_loadu_ps(c.as_ptr())),
                    )
                };
                for (&x, &v) in c.iter().zip(&out) {
                    assert_eq!(v.to_bits(), exp_nonpos(x).to_bits(), "x = {x}");
                }
            }
        }
    }

    #[test]
    fn exp_special_values() {
        let mut v = [
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            88.8,
            -104.0,
            88.72,
        ];
        exp_slice(&mut v);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], 1.0);
        assert!(ulps(v[2], std::f32::consts::E) <= 1);
        assert_eq!(v[3], f32::INFINITY);
        assert_eq!(v[4], 0.0);
        assert!(v[5].is_nan());
        assert_eq!(v[6], f32::INFINITY);
        assert_eq!(v[7], 0.0);
        let want = (88.72f32 as f64).exp() as f32;
        assert!(ulps(v[8], want) <= 2, "{} vs {want}", v[8]);
    }

    #[test]
    fn softplus_and_silu_within_4_ulp() {
        let xs = inputs(-120.0, 120.0);
        let mut s = xs.clone();
        softplus_slice(&mut s);
        check(
            "softplus",
            &xs,
            &s,
            |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
            4,
        );
        let mut g = xs.clone();
        silu_slice(&mut g);
        check("silu", &xs, &g, |x| x / (1.0 + (-x).exp()), 4);
        let mut big = [-1e30f32, 1e30, -0.0];
        silu_slice(&mut big);
        assert_eq!(big, [-0.0, 1e30, -0.0]);
        let mut nan = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        softplus_slice(&mut nan);
        assert!(nan[0].is_nan());
        assert_eq!(nan[1], f32::INFINITY);
        assert_eq!(nan[2], 0.0);
    }
}
