//! Elementwise activations and their derivatives over whole slices.
//!
//! `tanh` and `sigmoid` run on every hidden unit of every member at every step, and libm's
//! scalar `tanhf` (~15 ns) would cost as much as the convolutions of `cnn-s`. They are
//! therefore computed from a branch-free `exp`/`expm1` (Cody–Waite reduction and a degree-7
//! Taylor polynomial, relative error below 2e-7) that the compiler vectorises; the slice loops are
//! compiled a second time with AVX2 enabled and picked at run time. No fused multiply-add is
//! used (Rust never contracts `a * b + c`), so both builds round identically and results do
//! not depend on the CPU's features.
//!
//! GELU (erf form) is computed in f64 to full accuracy: it is not on the hot path of any
//! preset.

use hyperprune_core::arch::Activation;

/// `y = f(x)` elementwise.
///
/// # Shapes
/// - `x`, `y`: the same length
pub(crate) fn forward(act: Activation, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    match act {
        Activation::Relu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = relu(x)),
        Activation::Tanh => tanh_slice(x, y),
        Activation::Sigmoid => sigmoid_slice(x, y),
        Activation::Gelu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu(x as f64) as f32),
    }
}

/// `max(x, 0)`, zero for NaN: the one ReLU every pass uses, fused or not.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// `dx = dy · f'(x)`, from the input `x` and output `y` of the forward pass.
///
/// # Shapes
/// - `x`, `y`, `dy`, `dx`: the same length
pub(crate) fn backward(act: Activation, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == y.len() && y.len() == dy.len() && dy.len() == dx.len());
    let each = |f: &dyn Fn(f32, f32, f32) -> f32, dx: &mut [f32]| {
        for (((dx, &x), &y), &dy) in dx.iter_mut().zip(x).zip(y).zip(dy) {
            *dx = f(x, y, dy);
        }
    };
    match act {
        // PyTorch's rule: the gradient passes where the output is positive.
        Activation::Relu => dx.iter_mut().zip(y).zip(dy).for_each(|((dx, &y), &dy)| *dx = relu_gate(dy, y)),
        Activation::Tanh => dx.iter_mut().zip(y).zip(dy).for_each(|((dx, &y), &dy)| *dx = dy * (1.0 - y * y)),
        Activation::Sigmoid => dx.iter_mut().zip(y).zip(dy).for_each(|((dx, &y), &dy)| *dx = dy * (y * (1.0 - y))),
        Activation::Gelu => each(&|x, _, dy| (dy as f64 * gelu_derivative(x as f64)) as f32, dx),
    }
}

/// A ReLU's backward rule, PyTorch's: the gradient `d` passes where the ReLU's output `r` is
/// positive, else 0. Written as a bit mask rather than a branch, so that loops over it
/// vectorise (the result is the same, bit for bit).
#[inline(always)]
pub(crate) fn relu_gate(d: f32, r: f32) -> f32 {
    let keep = u32::from(r > 0.0).wrapping_neg();
    f32::from_bits(d.to_bits() & keep)
}

/// `f()`, compiled with AVX2 enabled when the CPU has it: the element-wise loops `f`
/// inlines vectorise 8 wide rather than SSE2's 4. No FMA contraction, so the values are the
/// same either way.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { run(f) };
    }
    f()
}

/// A slice map `fn(x, y)` computing `y = f(x)`, through a second build of the same loop with
/// AVX2 enabled when the CPU has it.
macro_rules! vector_map {
    ($name:ident, $avx2:ident, $f:path) => {
        fn $name(x: &[f32], y: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { $avx2(x, y) };
                return;
            }
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = $f(x));
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2(x: &[f32], y: &mut [f32]) {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = $f(x));
        }
    };
}

vector_map!(tanh_slice, tanh_slice_avx2, tanh);
vector_map!(sigmoid_slice, sigmoid_slice_avx2, sigmoid);

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for the `n` that occur (|n| < 2⁸).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 below 2²² to the nearest integer.
const ROUNDER: f32 = 12_582_912.0;

/// `eˣ`, branch-free; inputs are clamped to `[-87, 88]`, where the result is a normal f32.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2): the integer lands in the low mantissa bits of `shifted`.
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series of eʳ for |r| ≤ ln2 / 2; the first omitted term is below 1e-8 relative.
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ni = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

/// `eʸ − 1` for `y ≤ 0`, branch-free, with relative error below 2e-7 also near 0 (where
/// `exp(y) − 1` would cancel): `2ⁿ·expm1(r) + (2ⁿ − 1)` with `expm1(r)` from its Taylor
/// series (degree 7, first omitted term under 2e-8 relative for |r| ≤ ln2 / 2).
#[inline(always)]
fn expm1_nonpositive(y: f32) -> f32 {
    let y = y.max(-87.0);
    let shifted = y * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = r
        * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ni = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    scale * p + (scale - 1.0)
}

/// Hyperbolic tangent, relative error below 3e-7: `tanh|x| = −m / (2 + m)` with
/// `m = expm1(−2|x|)`, which neither overflows nor cancels.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let m = expm1_nonpositive(-2.0 * x.abs());
    (-m / (2.0 + m)).copysign(x)
}

/// Logistic sigmoid `1 / (1 + e^{−x})`, relative error below 3e-7.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `x · Φ(x)`, Φ the standard normal CDF.
pub(crate) fn gelu(x: f64) -> f64 {
    x * normal_cdf(x)
}

/// `Φ(x) + x · φ(x)`, the derivative of [`gelu`].
pub(crate) fn gelu_derivative(x: f64) -> f64 {
    normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Φ(x) = erfc(−x/√2) / 2, accurate to ~1e-15 relative.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function, to ~1e-15 relative: the Maclaurin series of erf below
/// 2 (alternating terms peak near 2.4, so f64 keeps 15 digits), the Laplace continued
/// fraction above, and the reflection erfc(−z) = 2 − erfc(z).
pub(crate) fn erfc(z: f64) -> f64 {
    if z < 0.0 {
        return 2.0 - erfc(-z);
    }
    if z < 2.0 {
        // erf z = 2/√π · Σ (−1)ⁿ z^{2n+1} / (n! (2n+1))
        let z2 = z * z;
        let (mut term, mut sum) = (z, z);
        for n in 1..60 {
            term *= -z2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc z = e^{−z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + …))))), evaluated
    // bottom-up from a depth where it has converged for z ≥ 2.
    let mut tail = z;
    for k in (1..=60).rev() {
        tail = z + (k as f64 / 2.0) / tail;
    }
    (-z * z).exp() / std::f64::consts::PI.sqrt() / tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-4000..=4000).map(|i| i as f32 / 200.0).chain([-100.0, -88.5, -30.0, 1e-6, -1e-30, 0.0, 30.0, 100.0])
    }

    #[test]
    fn fast_exp_tanh_sigmoid_match_libm() {
        for x in grid() {
            let e = (x as f64).clamp(-87.0, 88.0).exp();
            assert!(((exp(x) as f64 - e) / e).abs() < 2e-7, "exp({x})");
            let t = (x as f64).tanh();
            let err = (tanh(x) as f64 - t).abs();
            assert!(err <= 3e-7 * t.abs().max(1e-30) + 1e-38, "tanh({x}): {} vs {t}", tanh(x));
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            if x > -87.0 {
                assert!(((sigmoid(x) as f64 - s) / s).abs() < 3e-7, "sigmoid({x}): {} vs {s}", sigmoid(x));
            }
        }
    }

    #[test]
    fn erfc_matches_known_values_and_is_continuous_at_the_switch() {
        // Values of erfc from tables (15 digits).
        for (z, want) in
            [(0.5, 0.479_500_122_186_953_5), (1.0, 0.157_299_207_050_285_1), (3.0, 2.209_049_699_858_544e-5)]
        {
            assert!(((erfc(z) - want) / want).abs() < 1e-13, "erfc({z})");
        }
        let (below, above) = (erfc(2.0 - 1e-12), erfc(2.0));
        assert!(((below - above) / above).abs() < 1e-10);
        assert!((erfc(-1.0) - (2.0 - 0.157_299_207_050_285_1)).abs() < 1e-14);
    }

    #[test]
    fn derivatives_match_central_differences() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 / 8.0 + 0.013).collect();
        let dy: Vec<f32> = xs.iter().map(|x| 1.0 + x / 10.0).collect();
        for act in Activation::ALL {
            let mut y = vec![0.0; xs.len()];
            forward(act, &xs, &mut y);
            let mut dx = vec![0.0; xs.len()];
            backward(act, &xs, &y, &dy, &mut dx);
            for i in 0..xs.len() {
                let h = 1e-3f32;
                let (mut a, mut b) = ([0.0f32], [0.0f32]);
                forward(act, &[xs[i] + h], &mut a);
                forward(act, &[xs[i] - h], &mut b);
                let fd = (a[0] - b[0]) as f64 / (2.0 * h as f64) * dy[i] as f64;
                // f32 differences of step 1e-3 carry ~1e-4 rounding error, curvature ~1e-6.
                assert!((dx[i] as f64 - fd).abs() < 3e-4, "{act:?} at {}: {} vs {fd}", xs[i], dx[i]);
            }
        }
    }
}
