//! Fully connected layer: y = x·W + b with a Keras (in, out) kernel, forward and backward.
//! Each product is split by output rows over rayon (single-threaded GEMM per block, no split
//! of the reduction, so results do not depend on the thread count).

use super::super::gemm::{gemm, MatRef};
use super::super::real::Real;
use rayon::prelude::*;

/// c[m, n] = a[m, k] × b[k, n] (+ c), with the rows of `c` computed in parallel blocks.
/// `a_at(row)` is the lhs view starting at that row.
#[allow(clippy::too_many_arguments)]
fn par_rows<'a, T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a_at: impl Fn(usize) -> MatRef<'a, T> + Sync,
    b: MatRef<T>,
    c: &mut [T],
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let block = m.div_ceil(2 * rayon::current_num_threads()).max(16);
    c[..m * n]
        .par_chunks_mut(block * n)
        .enumerate()
        .for_each(|(i, cb)| {
            let rows = cb.len() / n;
            gemm(rows, k, n, a_at(i * block), b, cb, n, accumulate, 1);
        });
}

pub fn dense_forward<T: Real>(
    n: usize,
    inputs: usize,
    units: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    y: &mut [T],
) {
    for row in y.chunks_mut(units) {
        row.copy_from_slice(bias);
    }
    par_rows(
        n,
        inputs,
        units,
        |r| MatRef::rows(&x[r * inputs..], inputs),
        MatRef::rows(kernel, units),
        y,
        true,
    );
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
    if let Some((dkernel, dbias)) = params {
        // dW[inputs, units] = x^T [inputs, n] × dy [n, units]; row r of x^T is column r of x.
        par_rows(
            inputs,
            n,
            units,
            |r| MatRef {
                data: &x[r..],
                rs: 1,
                cs: inputs,
            },
            MatRef::rows(dy, units),
            dkernel,
            false,
        );
        dbias.fill(T::ZERO);
        for row in dy.chunks(units) {
            for (b, d) in dbias.iter_mut().zip(row) {
                *b += *d;
            }
        }
    }
    if let Some(dx) = dx {
        par_rows(
            n,
            units,
            inputs,
            |r| MatRef::rows(&dy[r * units..], units),
            MatRef::rows(kernel, units).t(),
            dx,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    #[test]
    fn dense_gradients_match_finite_differences() {
        // 37 rows: several parallel row blocks, the last one short.
        let (n, i, u) = (37, 7, 5);
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
