//! Operators, one file per family, each with its forward and backward kernel side by side.
//! Tensors are NHWC f32 (f64 in the gradient checks), batch first, channels last: the
//! layout Keras weights come in (conv kernels HWIO, dense (in, out)), so im2col rows are
//! contiguous channel runs and imported weights need no transposition.
//!
//! Kernels that reduce over the batch (weight gradients, batchnorm statistics) split the
//! batch into a fixed number of parts whatever the thread count, and add the parts' partial
//! sums in a fixed order, so results are bit-identical on 1 or 16 threads.

pub mod activation;
pub mod conv;
pub mod conv_depthwise;
pub mod conv_direct;
#[cfg(target_arch = "x86_64")]
mod conv_direct_avx512;
pub mod dense;
pub mod dropout;
pub mod loss;
pub mod merge;
pub mod norm;
pub mod pool;
pub mod shape;

use super::ir::Padding;

/// How many parts a batch is split into for deterministic parallel reductions.
pub const PARTS: usize = 8;

/// Samples per part for a batch of `n` (the last part may be shorter).
pub fn samples_per_part(n: usize) -> usize {
    n.div_ceil(PARTS.min(n).max(1)).max(1)
}

/// `B` consecutive values of `v` from `at`, as a fixed-width array: the loops that keep a
/// block of channels in registers load and store through it.
#[inline(always)]
pub(crate) fn lanes<T: Copy, const B: usize>(v: &[T], at: usize) -> [T; B] {
    v[at..at + B].try_into().expect("B lanes")
}

/// Output size and padding before the data along one axis, Keras/TensorFlow style:
/// "same" pads `total / 2` before and the rest (one more when odd) after.
pub fn axis_geometry(
    input: usize,
    window: usize,
    stride: usize,
    padding: Padding,
) -> (usize, usize) {
    match padding {
        Padding::Valid => ((input.saturating_sub(window)) / stride + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + window).saturating_sub(input);
            (out, total / 2)
        }
    }
}

#[cfg(test)]
pub(crate) mod check {
    //! Central finite differences in f64 for the operator tests.

    /// Random values in [-1, 1) from a fixed seed (a tiny LCG keeps tests dependency-free).
    pub fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Checks `analytic` against d(loss)/d(input) by central differences, where `loss`
    /// evaluates the scalar objective for a perturbed copy of `input`.
    pub fn assert_gradient(
        name: &str,
        input: &[f64],
        analytic: &[f64],
        mut loss: impl FnMut(&[f64]) -> f64,
    ) {
        assert_eq!(input.len(), analytic.len(), "{name}: gradient length");
        let h = 1e-6;
        let mut x = input.to_vec();
        let mut worst = 0.0f64;
        for i in 0..x.len() {
            let keep = x[i];
            x[i] = keep + h;
            let up = loss(&x);
            x[i] = keep - h;
            let down = loss(&x);
            x[i] = keep;
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs().max(analytic[i].abs()));
            worst = worst.max(err);
            assert!(
                err < 1e-6,
                "{name}: element {i}: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
        assert!(worst.is_finite());
    }

    /// The objective sum(y * r) for fixed random `r`, whose gradient w.r.t. y is `r`.
    pub fn dot(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }
}
