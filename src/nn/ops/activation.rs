//! Element-wise activations (in place) and softmax over the last axis. Most backwards use
//! only the activation's output, so no pre-activation buffer is kept; swish and hard-swish
//! are not invertible from their output, so their backward reads the input
//! (`activate_backward_from_input`) and they run only as layers of their own, whose input
//! the graph keeps.

use super::super::ir::Activation;
use super::super::real::Real;
use super::super::simd::multiversion;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Applies `act` in place; `last` is the size of the last axis (softmax normalises over it).
pub fn activate<T: Real>(act: Activation, y: &mut [T], last: usize) {
    match act {
        Activation::Linear => {}
        Activation::Softmax => y.par_chunks_mut(last).for_each(softmax_row),
        _ => y
            .par_chunks_mut(CHUNK)
            .for_each(|ys| activate_part(act, ys)),
    }
}

/// `activate` on one contiguous part, on the calling thread (a kernel's epilogue while the
/// part is in cache). Not for softmax, which needs whole rows of its axis.
pub fn activate_part<T: Real>(act: Activation, ys: &mut [T]) {
    multiversion!(fn [T: Real] (act: Activation, ys: &mut [T]) {
        debug_assert!(act != Activation::Softmax, "softmax is not element-wise");
        // ReLU and ReLU6 (every MobileNet block) as selects in loops of their own, which the
        // compiler vectorises; through `apply`'s match they ran one value at a time. Same values,
        // except that a negative zero or NaN comes out as +0.
        match act {
            Activation::Linear => {}
            Activation::Relu => {
                for v in ys.iter_mut() {
                    *v = if *v > T::ZERO { *v } else { T::ZERO };
                }
            }
            Activation::Relu6 => {
                let six = T::from_f64(6.0);
                for v in ys.iter_mut() {
                    let r = if *v > T::ZERO { *v } else { T::ZERO };
                    *v = if r < six { r } else { six };
                }
            }
            _ => {
                for v in ys.iter_mut() {
                    *v = apply(act, *v);
                }
            }
        }
    })
}

#[inline(always)]
fn apply<T: Real>(act: Activation, x: T) -> T {
    let six = T::from_f64(6.0);
    match act {
        Activation::Relu => x.max(T::ZERO),
        Activation::Relu6 => x.max(T::ZERO).min(six),
        Activation::HardSwish => x * (x + T::from_f64(3.0)).max(T::ZERO).min(six) / six,
        Activation::Swish => x / (T::ONE + (-x).exp()),
        Activation::LeakyRelu { alpha } => {
            if x > T::ZERO {
                x
            } else {
                x * T::from_f64(alpha as f64)
            }
        }
        Activation::Elu { alpha } => {
            if x > T::ZERO {
                x
            } else {
                T::from_f64(alpha as f64) * (x.exp() - T::ONE)
            }
        }
        Activation::Sigmoid => T::ONE / (T::ONE + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Linear | Activation::Softmax => x,
    }
}

/// The index of the row's largest value, the first on ties (numpy's argmax).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

pub fn softmax_row<T: Real>(row: &mut [T]) {
    let max = row.iter().fold(T::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = T::ZERO;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Turns `dy` (gradient w.r.t. the activation's output `y`) into the gradient w.r.t. its input,
/// in place. Leaky ReLU and ELU need alpha > 0 so the output's sign tells the branch.
pub fn activate_backward<T: Real>(act: Activation, y: &[T], dy: &mut [T], last: usize) {
    match act {
        Activation::Linear => {}
        Activation::Softmax => {
            dy.par_chunks_mut(last)
                .zip(y.par_chunks(last))
                .for_each(|(d, y)| {
                    let dot: T = d.iter().zip(y).map(|(a, b)| *a * *b).sum();
                    for (dv, yv) in d.iter_mut().zip(y) {
                        *dv = *yv * (*dv - dot);
                    }
                })
        }
        _ => dy
            .par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK))
            .for_each(|(ds, ys)| activate_backward_part(act, ys, ds)),
    }
}

/// `activate_backward` on one contiguous part, on the calling thread (a convolution's backward
/// prologue while the part is in cache). Not for softmax, which needs whole rows of its axis.
pub fn activate_backward_part<T: Real>(act: Activation, ys: &[T], ds: &mut [T]) {
    multiversion!(fn [T: Real] (act: Activation, ys: &[T], ds: &mut [T]) {
        debug_assert!(act != Activation::Softmax, "softmax is not element-wise");
        match act {
            Activation::Linear => {}
            // Selects rather than a multiply by a 0/1 derivative, so they vectorise; a
            // gradient stopped there is +0 (it was ±0, or NaN for an infinite one).
            Activation::Relu => {
                for (d, y) in ds.iter_mut().zip(ys) {
                    *d = if *y > T::ZERO { *d } else { T::ZERO };
                }
            }
            Activation::Relu6 => {
                let six = T::from_f64(6.0);
                for (d, y) in ds.iter_mut().zip(ys) {
                    *d = if *y > T::ZERO && *y < six {
                        *d
                    } else {
                        T::ZERO
                    };
                }
            }
            _ => {
                for (d, y) in ds.iter_mut().zip(ys) {
                    *d *= derivative(act, *y);
                }
            }
        }
    })
}

#[inline(always)]
fn derivative<T: Real>(act: Activation, y: T) -> T {
    match act {
        Activation::Relu => {
            if y > T::ZERO {
                T::ONE
            } else {
                T::ZERO
            }
        }
        Activation::Relu6 => {
            if y > T::ZERO && y < T::from_f64(6.0) {
                T::ONE
            } else {
                T::ZERO
            }
        }
        Activation::HardSwish | Activation::Swish => {
            unreachable!("{act:?} needs its input: activate_backward_from_input")
        }
        Activation::LeakyRelu { alpha } => {
            if y > T::ZERO {
                T::ONE
            } else {
                T::from_f64(alpha as f64)
            }
        }
        Activation::Elu { alpha } => {
            if y > T::ZERO {
                T::ONE
            } else {
                y + T::from_f64(alpha as f64)
            }
        }
        Activation::Sigmoid => y * (T::ONE - y),
        Activation::Tanh => T::ONE - y * y,
        Activation::Linear | Activation::Softmax => T::ONE,
    }
}

/// `activate_backward` for the activations whose derivative needs their input `x`
/// (`Activation::needs_input`): `dy` becomes the gradient w.r.t. `x`, in place.
pub fn activate_backward_from_input<T: Real>(act: Activation, x: &[T], dy: &mut [T]) {
    let (three, six) = (T::from_f64(3.0), T::from_f64(6.0));
    let derivative = |x: T| match act {
        // x · relu6(x + 3) / 6: 0 below −3, 1 above 3, (2x + 3) / 6 between.
        Activation::HardSwish => {
            if x < -three {
                T::ZERO
            } else if x > three {
                T::ONE
            } else {
                (x + x + three) / six
            }
        }
        // x · σ(x): σ(x) · (1 + x · (1 − σ(x))).
        Activation::Swish => {
            let s = T::ONE / (T::ONE + (-x).exp());
            s * (T::ONE + x * (T::ONE - s))
        }
        _ => unreachable!("{act:?} is differentiated from its output"),
    };
    dy.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(ds, xs)| {
            for (d, x) in ds.iter_mut().zip(xs) {
                *d *= derivative(*x);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    #[test]
    fn activation_gradients_match_finite_differences() {
        let last = 5;
        // Keep inputs away from the kinks at 0, where central differences are undefined.
        let x: Vec<f64> = values(4 * last, 1)
            .iter()
            .map(|v| if v.abs() < 0.05 { v + 0.1 } else { *v } * 2.0)
            .collect();
        let r = values(x.len(), 2);
        for act in [
            Activation::Relu,
            Activation::Relu6,
            Activation::LeakyRelu { alpha: 0.3 },
            Activation::Elu { alpha: 1.0 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Softmax,
            Activation::Linear,
        ] {
            let mut y = x.clone();
            activate(act, &mut y, last);
            let mut d = r.clone();
            activate_backward(act, &y, &mut d, last);
            assert_gradient(&format!("{act:?}"), &x, &d, |x| {
                let mut y = x.to_vec();
                activate(act, &mut y, last);
                dot(&y, &r)
            });
        }
    }

    #[test]
    fn relu6_clips_at_six_and_input_activations_match_finite_differences() {
        // Spread over [-8, 8], away from the kinks of relu6 (0, 6) and hard-swish (±3).
        let x: Vec<f64> = values(40, 3)
            .iter()
            .map(|v| v * 8.0)
            .map(|v| {
                if [0.0, 6.0, 3.0, -3.0].iter().any(|k| (v - k).abs() < 0.05) {
                    v + 0.1
                } else {
                    v
                }
            })
            .collect();
        let mut y = x.clone();
        activate(Activation::Relu6, &mut y, 1);
        assert!(y.iter().all(|v| (0.0..=6.0).contains(v)));
        assert!(y.contains(&6.0) && y.contains(&0.0));
        let r = values(x.len(), 4);
        for act in [Activation::HardSwish, Activation::Swish] {
            let mut d = r.clone();
            activate_backward_from_input(act, &x, &mut d);
            assert_gradient(&format!("{act:?}"), &x, &d, |x| {
                let mut y = x.to_vec();
                activate(act, &mut y, 1);
                dot(&y, &r)
            });
        }
        let mut hs = vec![-4.0, -1.5, 0.0, 1.5, 4.0];
        activate(Activation::HardSwish, &mut hs, 1);
        assert_eq!(hs, vec![0.0, -0.375, 0.0, 1.125, 4.0]);
    }
}
