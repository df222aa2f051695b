//! Portable vectorisable `exp` and `2^x`.
//!
//! `exp(x) = 2ⁿ · e^r` with `n = round(x / ln 2)` and `r = x − n·ln 2` (Cody–Waite: `ln 2` split in
//! a high part exact in f32 and a low correction), `e^r` by the Cephes `expf` polynomial (about
//! 1 ulp on `|r| ≤ ln2/2`). Everything is plain f32 arithmetic and bit casts without branches, so
//! loops over slices auto-vectorise. The 16- and 8-lane twins are `avx512::exp16` and
//! `avx2::exp8`.

/// High part of `ln 2` (exact in f32).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
/// `ln 2 − LN2_HI`.
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` coefficients, highest degree first; `e^r ≈ 1 + r + r²·P(r)`.
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
/// `2^r ≈ Σ cᵢ rⁱ` on `|r| ≤ ½` (SLEEF's `exp2f` minimax coefficients, about 1 ulp), highest
/// degree first, ending with the constant 1.
pub(crate) const EXP2_POLY: [f32; 7] = [
    1.535_920_9e-4,
    1.339_262_7e-3,
    9.618_385e-3,
    5.550_347_3e-2,
    2.402_264_5e-1,
    std::f32::consts::LN_2,
    1.0,
];
/// Below this `exp` underflows to 0 (normal range only).
pub(crate) const EXP_LO: f32 = -87.336_55;
/// Above this `exp` overflows.
pub(crate) const EXP_HI: f32 = 88.376_26;

/// `e^x` for finite or infinite `x` (about 1 ulp); 0 below the normal range, `+inf` above it.
/// Branch-free, so that loops over slices calling it auto-vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI);
    // Round to nearest by the 1.5·2²³ trick: branch-free and vectorisable.
    let shifter = 12_582_912.0f32;
    let shifted = xc * std::f32::consts::LOG2_E + shifter;
    let n = shifted - shifter;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let er = p * r * r + r + 1.0;
    // 2ⁿ built in the exponent bits; n ∈ [-126, 127] after the clamp. `shifted` is
    // 1.5·2²³ + n exactly, so n is its bit pattern minus the shifter's: integer ops that
    // vectorise (`n as i32` is a saturating cast, which compiles to per-lane scalar fixups).
    let n_int = (shifted.to_bits() as i32).wrapping_sub(shifter.to_bits() as i32);
    let two_n = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    let y = er * two_n;
    if x < EXP_LO {
        0.0
    } else if x > EXP_HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `2^x`; 0 for `-inf`. The portable twin of `avx512::exp2_16`.
#[inline(always)]
pub(crate) fn exp2_f32(x: f32) -> f32 {
    exp_f32(x * std::f32::consts::LN_2)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    }
}
