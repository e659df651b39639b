//! Joins of several tensors: element-wise sum (residual shortcuts), concatenation along
//! channels, multiplication with a per-channel broadcast (squeeze-excitation), and BiFPN's
//! fast normalised fusion with learnable non-negative weights.

use super::super::real::Real;

/// y = Σ_k x_k; the gradient reaches every input unchanged.
pub fn add_forward<T: Real>(xs: &[&[T]], y: &mut [T]) {
    y.copy_from_slice(xs[0]);
    for x in &xs[1..] {
        for (y, x) in y.iter_mut().zip(x.iter()) {
            *y += *x;
        }
    }
}

/// Rows of `channels[k]` values from each input, joined into rows of `Σ channels`.
pub fn concat_forward<T: Real>(channels: &[usize], xs: &[&[T]], y: &mut [T]) {
    let total: usize = channels.iter().sum();
    for (row, yr) in y.chunks_mut(total).enumerate() {
        let mut at = 0;
        for (x, &c) in xs.iter().zip(channels) {
            yr[at..at + c].copy_from_slice(&x[row * c..(row + 1) * c]);
            at += c;
        }
    }
}

/// Splits `dy` back into each wanted input's channels (`None`: not wanted).
pub fn concat_backward<T: Real>(channels: &[usize], dy: &[T], dxs: &mut [Option<&mut [T]>]) {
    let total: usize = channels.iter().sum();
    for (row, dr) in dy.chunks(total).enumerate() {
        let mut at = 0;
        for (dx, &c) in dxs.iter_mut().zip(channels) {
            if let Some(dx) = dx {
                dx[row * c..(row + 1) * c].copy_from_slice(&dr[at..at + c]);
            }
            at += c;
        }
    }
}

/// y = a · b, where `b` has `a`'s length or one value per (sample, channel) when `broadcast`
/// (`a` is `[n, pixels, c]`, `b` is `[n, c]`).
pub fn multiply_forward<T: Real>(c: usize, broadcast: bool, a: &[T], b: &[T], y: &mut [T]) {
    if !broadcast {
        for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
            *y = *a * *b;
        }
        return;
    }
    let per_sample = a.len() / (b.len() / c).max(1);
    for ((ys, as_), bs) in y
        .chunks_mut(per_sample)
        .zip(a.chunks(per_sample))
        .zip(b.chunks(c))
    {
        for (yr, ar) in ys.chunks_mut(c).zip(as_.chunks(c)) {
            for ((y, a), b) in yr.iter_mut().zip(ar).zip(bs) {
                *y = *a * *b;
            }
        }
    }
}

/// da = dy · b and db = dy · a (summed over space when `broadcast`), each when wanted.
pub fn multiply_backward<T: Real>(
    c: usize,
    broadcast: bool,
    a: &[T],
    b: &[T],
    dy: &[T],
    da: Option<&mut [T]>,
    db: Option<&mut [T]>,
) {
    if !broadcast {
        if let Some(da) = da {
            for ((d, g), b) in da.iter_mut().zip(dy).zip(b) {
                *d = *g * *b;
            }
        }
        if let Some(db) = db {
            for ((d, g), a) in db.iter_mut().zip(dy).zip(a) {
                *d = *g * *a;
            }
        }
        return;
    }
    let per_sample = a.len() / (b.len() / c).max(1);
    if let Some(da) = da {
        for ((ds, gs), bs) in da
            .chunks_mut(per_sample)
            .zip(dy.chunks(per_sample))
            .zip(b.chunks(c))
        {
            for (dr, gr) in ds.chunks_mut(c).zip(gs.chunks(c)) {
                for ((d, g), b) in dr.iter_mut().zip(gr).zip(bs) {
                    *d = *g * *b;
                }
            }
        }
    }
    if let Some(db) = db {
        for ((ds, gs), as_) in db
            .chunks_mut(c)
            .zip(dy.chunks(per_sample))
            .zip(a.chunks(per_sample))
        {
            ds.fill(T::ZERO);
            for (gr, ar) in gs.chunks(c).zip(as_.chunks(c)) {
                for ((d, g), a) in ds.iter_mut().zip(gr).zip(ar) {
                    *d += *g * *a;
                }
            }
        }
    }
}

/// The normalised fusion weights relu(w_k) / (ε + Σ_j relu(w_j)) and their denominator.
fn fusion_weights<T: Real>(w: &[T], epsilon: T) -> (Vec<T>, T) {
    let relu: Vec<T> = w.iter().map(|v| v.max(T::ZERO)).collect();
    let sum = relu.iter().fold(epsilon, |s, v| s + *v);
    (relu.iter().map(|v| *v / sum).collect(), sum)
}

/// y = Σ_k relu(w_k) · x_k / (ε + Σ_j relu(w_j)) (BiFPN's fast normalised fusion).
pub fn weighted_sum_forward<T: Real>(w: &[T], epsilon: T, xs: &[&[T]], y: &mut [T]) {
    let (norm, _) = fusion_weights(w, epsilon);
    y.fill(T::ZERO);
    for (x, nw) in xs.iter().zip(&norm) {
        for (y, x) in y.iter_mut().zip(x.iter()) {
            *y += *nw * *x;
        }
    }
}

/// dx_k = dy · ŵ_k for each wanted input; with `dw`, d loss / d w_j = [w_j > 0] ·
/// Σ dy · (x_j − y) / (ε + Σ relu(w)), written (not accumulated).
pub fn weighted_sum_backward<T: Real>(
    w: &[T],
    epsilon: T,
    xs: &[&[T]],
    y: &[T],
    dy: &[T],
    dxs: &mut [Option<&mut [T]>],
    dw: Option<&mut [T]>,
) {
    let (norm, sum) = fusion_weights(w, epsilon);
    for (dx, nw) in dxs.iter_mut().zip(&norm) {
        if let Some(dx) = dx {
            for (d, g) in dx.iter_mut().zip(dy) {
                *d = *g * *nw;
            }
        }
    }
    if let Some(dw) = dw {
        for ((d, x), wj) in dw.iter_mut().zip(xs).zip(w) {
            *d = if *wj > T::ZERO {
                let s = dy
                    .iter()
                    .zip(x.iter())
                    .zip(y)
                    .fold(T::ZERO, |s, ((g, x), y)| s + *g * (*x - *y));
                s / sum
            } else {
                T::ZERO
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    #[test]
    fn add_and_concat_gradients_match_finite_differences() {
        let (a, b, c) = (values(12, 1), values(12, 2), values(12, 3));
        let r = values(12, 4);
        let add = |xs: [&[f64]; 3]| {
            let mut y = vec![0.0; 12];
            add_forward(&xs, &mut y);
            dot(&y, &r)
        };
        // The gradient of a sum w.r.t. each input is dy itself.
        assert_gradient("add a", &a, &r, |a| add([a, &b, &c]));
        assert_gradient("add c", &c, &r, |c| add([&a, &b, c]));

        let channels = [3, 2, 1];
        let rows = 4;
        let xs = [values(12, 5), values(8, 6), values(4, 7)];
        let r = values(rows * 6, 8);
        let (mut d0, mut d2) = (vec![0.0; 12], vec![0.0; 4]);
        concat_backward(&channels, &r, &mut [Some(&mut d0), None, Some(&mut d2)]);
        let cat = |x: [&[f64]; 3]| {
            let mut y = vec![0.0; rows * 6];
            concat_forward(&channels, &x, &mut y);
            dot(&y, &r)
        };
        assert_gradient("concat 0", &xs[0], &d0, |x| cat([x, &xs[1], &xs[2]]));
        assert_gradient("concat 2", &xs[2], &d2, |x| cat([&xs[0], &xs[1], x]));
    }

    #[test]
    fn multiply_gradients_match_finite_differences() {
        // Two samples of 3 pixels x 4 channels, times a per-sample channel vector.
        let (n, pixels, c) = (2, 3, 4);
        for broadcast in [true, false] {
            let a = values(n * pixels * c, 9);
            let b = values(if broadcast { n * c } else { n * pixels * c }, 10);
            let r = values(a.len(), 11);
            let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
            multiply_backward(c, broadcast, &a, &b, &r, Some(&mut da), Some(&mut db));
            let f = |a: &[f64], b: &[f64]| {
                let mut y = vec![0.0; a.len()];
                multiply_forward(c, broadcast, a, b, &mut y);
                dot(&y, &r)
            };
            assert_gradient(&format!("multiply a {broadcast}"), &a, &da, |a| f(a, &b));
            assert_gradient(&format!("multiply b {broadcast}"), &b, &db, |b| f(&a, b));
        }
    }

    #[test]
    fn weighted_sum_gradients_match_finite_differences() {
        let eps = 1e-4;
        let xs = [values(10, 12), values(10, 13), values(10, 14)];
        // One weight below zero: clamped by the ReLU, so it gets no gradient.
        let w = vec![0.7, 1.3, -0.4];
        let r = values(10, 15);
        let f = |w: &[f64], xs: [&[f64]; 3]| {
            let mut y = vec![0.0; 10];
            weighted_sum_forward(w, eps, &xs, &mut y);
            dot(&y, &r)
        };
        let mut y = vec![0.0; 10];
        let refs = [&xs[0][..], &xs[1][..], &xs[2][..]];
        weighted_sum_forward(&w, eps, &refs, &mut y);
        let (mut d0, mut d1, mut dw) = (vec![0.0; 10], vec![0.0; 10], vec![0.0; 3]);
        weighted_sum_backward(
            &w,
            eps,
            &refs,
            &y,
            &r,
            &mut [Some(&mut d0), Some(&mut d1), None],
            Some(&mut dw),
        );
        assert_gradient("weighted_sum x0", &xs[0], &d0, |x| {
            f(&w, [x, refs[1], refs[2]])
        });
        assert_gradient("weighted_sum x1", &xs[1], &d1, |x| {
            f(&w, [refs[0], x, refs[2]])
        });
        assert_gradient("weighted_sum w", &w, &dw, |w| f(w, refs));
        // Equal inputs fuse to themselves whatever the weights (up to ε).
        let same = [&xs[0][..], &xs[0][..], &xs[0][..]];
        weighted_sum_forward(&w, eps, &same, &mut y);
        for (a, b) in y.iter().zip(&xs[0]) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
}
