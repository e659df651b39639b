//! Batch normalisation over every axis but the last (channels), Keras semantics:
//! training normalises with the batch's biased variance and moves the running averages by
//! `momentum` (moving = moving·momentum + batch·(1 − momentum)); inference uses the averages.

use super::super::real::Real;
use super::PARTS;
use rayon::prelude::*;

/// Rows summed in `T` before they are added into the f64 totals: vectorisable inner loops,
/// with f64 accuracy over the hundreds of thousands of rows of a batch.
const BLOCK: usize = 256;

/// Per-channel sums of `width` values per row, over rows in fixed parts added in order
/// (deterministic on any thread count). `f(row, acc)` adds one row's values to `acc`.
fn channel_sums<T: Real>(
    rows: usize,
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<f64> {
    let per_part = rows.div_ceil(PARTS).max(1);
    let partials: Vec<Vec<f64>> = (0..rows.div_ceil(per_part))
        .into_par_iter()
        .map(|p| {
            let mut total = vec![0.0f64; width];
            let mut block = vec![T::ZERO; width];
            let end = ((p + 1) * per_part).min(rows);
            for start in (p * per_part..end).step_by(BLOCK) {
                block.fill(T::ZERO);
                for r in start..(start + BLOCK).min(end) {
                    f(r, &mut block);
                }
                for (t, b) in total.iter_mut().zip(&block) {
                    *t += b.to_f64();
                }
            }
            total
        })
        .collect();
    let mut total = vec![0.0f64; width];
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

/// Training forward. Writes `mean` and `inv_std` (1/sqrt(var + eps)) for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_forward<T: Real>(
    c: usize,
    eps: f32,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
    mean: &mut [T],
    inv_std: &mut [T],
    var_out: &mut [T],
) {
    let rows = x.len() / c;
    let sums = channel_sums::<T>(rows, c, |r, acc| {
        for (a, v) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]) {
            *a += *v;
        }
    });
    let mu: Vec<f64> = sums.iter().map(|s| s / rows as f64).collect();
    let mu_t: Vec<T> = mu.iter().map(|m| T::from_f64(*m)).collect();
    let sq = channel_sums::<T>(rows, c, |r, acc| {
        for ((a, v), m) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]).zip(&mu_t) {
            let d = *v - *m;
            *a += d * d;
        }
    });
    for ch in 0..c {
        let var = sq[ch] / rows as f64;
        mean[ch] = T::from_f64(mu[ch]);
        var_out[ch] = T::from_f64(var);
        inv_std[ch] = T::from_f64(1.0 / (var + eps as f64).sqrt());
    }
    normalise(c, x, gamma, beta, mean, inv_std, y);
}

/// Inference batchnorm as a per-channel affine map, `(scale, shift)`, the same arithmetic as
/// `batchnorm_infer_forward` so a fused kernel epilogue gives bit-identical outputs.
pub fn infer_affine<T: Real>(
    eps: f32,
    gamma: &[T],
    beta: &[T],
    moving_mean: &[T],
    moving_var: &[T],
) -> (Vec<T>, Vec<T>) {
    let inv_std: Vec<T> = moving_var
        .iter()
        .map(|v| T::ONE / (*v + T::from_f64(eps as f64)).sqrt())
        .collect();
    affine(gamma, beta, moving_mean, &inv_std)
}

fn affine<T: Real>(gamma: &[T], beta: &[T], mean: &[T], inv_std: &[T]) -> (Vec<T>, Vec<T>) {
    let scale: Vec<T> = gamma.iter().zip(inv_std).map(|(g, s)| *g * *s).collect();
    let shift: Vec<T> = (0..gamma.len())
        .map(|ch| beta[ch] - mean[ch] * scale[ch])
        .collect();
    (scale, shift)
}

/// `y = y · scale + shift` per channel, in place on the calling thread (`y` is whole rows).
pub fn affine_part<T: Real>(scale: &[T], shift: &[T], y: &mut [T]) {
    for row in y.chunks_mut(scale.len()) {
        for ch in 0..scale.len() {
            row[ch] = row[ch] * scale[ch] + shift[ch];
        }
    }
}

fn normalise<T: Real>(
    c: usize,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    inv_std: &[T],
    y: &mut [T],
) {
    let (scale, shift) = affine(gamma, beta, mean, inv_std);
    y.par_chunks_mut(c * 256)
        .zip(x.par_chunks(c * 256))
        .for_each(|(ys, xs)| {
            for (yr, xr) in ys.chunks_mut(c).zip(xs.chunks(c)) {
                for ch in 0..c {
                    yr[ch] = xr[ch] * scale[ch] + shift[ch];
                }
            }
        });
}

/// Moves the running averages towards this batch's statistics.
pub fn update_running<T: Real>(
    momentum: f32,
    mean: &[T],
    var: &[T],
    moving_mean: &mut [T],
    moving_var: &mut [T],
) {
    let m = T::from_f64(momentum as f64);
    let rest = T::ONE - m;
    for ch in 0..mean.len() {
        moving_mean[ch] = moving_mean[ch] * m + mean[ch] * rest;
        moving_var[ch] = moving_var[ch] * m + var[ch] * rest;
    }
}

/// Training backward: dx, dgamma, dbeta from the saved mean and inv_std.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_backward<T: Real>(
    c: usize,
    x: &[T],
    dy: &[T],
    gamma: &[T],
    mean: &[T],
    inv_std: &[T],
    dx: Option<&mut [T]>,
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let rows = x.len() / c;
    let sums = channel_sums::<T>(rows, 2 * c, |r, acc| {
        let (xr, dr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        let (dg, db) = acc.split_at_mut(c);
        for ch in 0..c {
            dg[ch] += dr[ch] * ((xr[ch] - mean[ch]) * inv_std[ch]);
            db[ch] += dr[ch];
        }
    });
    for ch in 0..c {
        dgamma[ch] = T::from_f64(sums[ch]);
        dbeta[ch] = T::from_f64(sums[c + ch]);
    }
    if let Some(dx) = dx {
        let m = rows as f64;
        let k: Vec<T> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
        let mg: Vec<T> = (0..c).map(|ch| T::from_f64(sums[ch] / m)).collect();
        let mb: Vec<T> = (0..c).map(|ch| T::from_f64(sums[c + ch] / m)).collect();
        dx.par_chunks_mut(c * 256)
            .zip(x.par_chunks(c * 256).zip(dy.par_chunks(c * 256)))
            .for_each(|(dxs, (xs, dys))| {
                for ((dxr, xr), dr) in dxs.chunks_mut(c).zip(xs.chunks(c)).zip(dys.chunks(c)) {
                    for ch in 0..c {
                        let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
                        dxr[ch] = k[ch] * (dr[ch] - mb[ch] - xhat * mg[ch]);
                    }
                }
            });
    }
}

/// Inference forward with the running averages.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_infer_forward<T: Real>(
    c: usize,
    eps: f32,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    moving_mean: &[T],
    moving_var: &[T],
    y: &mut [T],
) {
    let inv_std: Vec<T> = moving_var
        .iter()
        .map(|v| T::ONE / (*v + T::from_f64(eps as f64)).sqrt())
        .collect();
    normalise(c, x, gamma, beta, moving_mean, &inv_std, y);
}

/// Inference backward (input gradient only: saliency through a trained network).
pub fn batchnorm_infer_backward<T: Real>(
    c: usize,
    eps: f32,
    dy: &[T],
    gamma: &[T],
    moving_var: &[T],
    dx: &mut [T],
) {
    let k: Vec<T> = (0..c)
        .map(|ch| gamma[ch] / (moving_var[ch] + T::from_f64(eps as f64)).sqrt())
        .collect();
    for (dxr, dr) in dx.chunks_mut(c).zip(dy.chunks(c)) {
        for ch in 0..c {
            dxr[ch] = dr[ch] * k[ch];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    fn train_loss(c: usize, x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64]) -> f64 {
        let mut y = vec![0.0; x.len()];
        let (mut m, mut s, mut v) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        batchnorm_train_forward(c, 1e-3, x, gamma, beta, &mut y, &mut m, &mut s, &mut v);
        dot(&y, r)
    }

    #[test]
    fn batchnorm_gradients_match_finite_differences() {
        let (rows, c) = (13, 3);
        let x = values(rows * c, 1);
        let gamma: Vec<f64> = values(c, 2).iter().map(|v| 1.0 + v).collect();
        let beta = values(c, 3);
        let r = values(rows * c, 4);
        let mut y = vec![0.0; x.len()];
        let (mut m, mut s, mut v) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        batchnorm_train_forward(c, 1e-3, &x, &gamma, &beta, &mut y, &mut m, &mut s, &mut v);
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        batchnorm_train_backward(c, &x, &r, &gamma, &m, &s, Some(&mut dx), &mut dg, &mut db);
        assert_gradient("batchnorm dx", &x, &dx, |x| {
            train_loss(c, x, &gamma, &beta, &r)
        });
        assert_gradient("batchnorm dgamma", &gamma, &dg, |g| {
            train_loss(c, &x, g, &beta, &r)
        });
        assert_gradient("batchnorm dbeta", &beta, &db, |b| {
            train_loss(c, &x, &gamma, b, &r)
        });

        let mv: Vec<f64> = v.iter().map(|v| v + 0.5).collect();
        batchnorm_infer_backward(c, 1e-3, &r, &gamma, &mv, &mut dx);
        assert_gradient("batchnorm inference dx", &x, &dx, |x| {
            let mut y = vec![0.0; x.len()];
            batchnorm_infer_forward(c, 1e-3, x, &gamma, &beta, &m, &mv, &mut y);
            dot(&y, &r)
        });
    }

    #[test]
    fn running_averages_use_keras_momentum_and_biased_variance() {
        let x = [1.0f64, 3.0];
        let (mut y, mut m, mut s, mut v) = (vec![0.0; 2], vec![0.0], vec![0.0], vec![0.0]);
        batchnorm_train_forward(1, 1e-3, &x, &[1.0], &[0.0], &mut y, &mut m, &mut s, &mut v);
        assert_eq!((m[0], v[0]), (2.0, 1.0));
        let (mut mm, mut mv) = (vec![0.0], vec![1.0]);
        update_running(0.99, &m, &v, &mut mm, &mut mv);
        assert!(
            (mm[0] - 0.02).abs() < 1e-6 && (mv[0] - 1.0).abs() < 1e-6,
            "{mm:?} {mv:?}"
        );
    }
}
