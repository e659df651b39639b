//! Fully connected layer: y = x·W + b with a Keras (in, out) kernel, forward and backward.
//! Whole-batch GEMMs; the `gemm` backend threads them over rayon.

use super::super::gemm::{gemm, MatRef};
use super::super::real::Real;

pub fn dense_forward<T: Real>(n: usize, inputs: usize, units: usize, x: &[T], kernel: &[T], bias: &[T], y: &mut [T]) {
    for row in y.chunks_mut(units) {
        row.copy_from_slice(bias);
    }
    let threads = rayon::current_num_threads();
    gemm(n, inputs, units, MatRef::rows(x, inputs), MatRef::rows(kernel, units), y, units, true, threads);
}

/// `dy` is already through the activation; outputs are optional as for conv.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward<T: Real>(
    n: usize,
    inputs: usize,
    units: usize,
    x: &[T],
    kernel: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
) {
    let threads = rayon::current_num_threads();
    if let Some((dkernel, dbias)) = params {
        gemm(inputs, n, units, MatRef::rows(x, inputs).t(), MatRef::rows(dy, units), dkernel, units, false, threads);
        dbias.fill(T::ZERO);
        for row in dy.chunks(units) {
            for (b, d) in dbias.iter_mut().zip(row) {
                *b += *d;
            }
        }
    }
    if let Some(dx) = dx {
        gemm(n, units, inputs, MatRef::rows(dy, units), MatRef::rows(kernel, units).t(), dx, inputs, false, threads);
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    #[test]
    fn dense_gradients_match_finite_differences() {
        let (n, i, u) = (3, 7, 5);
        let x = values(n * i, 1);
        let k = values(i * u, 2);
        let b = values(u, 3);
        let r = values(n * u, 4);
        let f = |x: &[f64], k: &[f64], b: &[f64]| {
            let mut y = vec![0.0; n * u];
            dense_forward(n, i, u, x, k, b, &mut y);
            dot(&y, &r)
        };
        let (mut dx, mut dk, mut db) = (vec![0.0; x.len()], vec![0.0; k.len()], vec![0.0; u]);
        dense_backward(n, i, u, &x, &k, &r, Some(&mut dx), Some((&mut dk, &mut db)));
        assert_gradient("dense dx", &x, &dx, |x| f(x, &k, &b));
        assert_gradient("dense dkernel", &k, &dk, |k| f(&x, k, &b));
        assert_gradient("dense dbias", &b, &db, |b| f(&x, &k, b));
    }
}
