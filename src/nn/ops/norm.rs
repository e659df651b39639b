//! Batch normalisation over every axis but the last (channels), Keras semantics:
//! training normalises with the batch's biased variance and moves the running averages by
//! `momentum` (moving = moving·momentum + batch·(1 − momentum)); inference uses the averages.

use super::super::ir::Activation;
use super::super::real::Real;
use super::super::simd::multiversion;
use super::pool::{routed_rows, routed_value, PoolGeom, WindowWalk};
use super::{activation, lanes, PARTS};
use rayon::prelude::*;

/// Rows summed in `T` before they are added into the f64 totals: vectorisable inner loops,
/// with f64 accuracy over the hundreds of thousands of rows of a batch.
const BLOCK: usize = 256;

/// Per-channel sums of `width` values per row, over rows in fixed parts added in order
/// (deterministic on any thread count), each part in blocks of `BLOCK` rows summed in `T`
/// and then added into f64 totals. `f(rows, acc, scratch)` adds the rows' values to `acc` in
/// order (`scratch`: the part's own buffer, for rows made on the fly).
fn channel_sums<T: Real>(
    rows: usize,
    width: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [T], &mut Vec<T>) + Sync,
) -> Vec<f64> {
    let per_part = rows.div_ceil(PARTS).max(1);
    let partials: Vec<Vec<f64>> = (0..rows.div_ceil(per_part))
        .into_par_iter()
        .map(|p| {
            let end = ((p + 1) * per_part).min(rows);
            let mut total = vec![0.0f64; width];
            let mut block = vec![T::ZERO; width];
            let mut scratch = Vec::new();
            for start in (p * per_part..end).step_by(BLOCK) {
                block.fill(T::ZERO);
                f(start..(start + BLOCK).min(end), &mut block, &mut scratch);
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

/// The shift the batch moments are taken about, per channel: the running mean, so the
/// one-pass variance `E[(x − k)²] − E[x − k]²` does not cancel once the averages have moved.
pub fn moment_shift<T: Real>(moving_mean: &[T]) -> Vec<f64> {
    moving_mean.iter().map(|m| m.to_f64()).collect()
}

/// One sample's moments about `shift`: `out[..c]` = Σ (x − k), `out[c..]` = Σ (x − k)², in f64,
/// rows in order. The unfused batchnorm and a convolution's epilogue (training fusion) both
/// call this on whole samples, so they get the same bits.
pub fn sample_moments<T: Real>(c: usize, shift: &[f64], rows: &[T], out: &mut [f64]) {
    if c.is_multiple_of(MOMENT_LANES) {
        sample_moments_blocks(c, shift, rows, out)
    } else {
        sample_moments_rows(c, shift, rows, out)
    }
}

/// `sample_moments` row by row, any channel count.
fn sample_moments_rows<T: Real>(c: usize, shift: &[f64], rows: &[T], out: &mut [f64]) {
    multiversion!(fn [T: Real] (c: usize, shift: &[f64], rows: &[T], out: &mut [f64]) {
        let (s1, s2) = out.split_at_mut(c);
        s1.fill(0.0);
        s2.fill(0.0);
        for row in rows.chunks(c) {
            for (((a, b), v), k) in s1.iter_mut().zip(s2.iter_mut()).zip(row).zip(shift) {
                let d = v.to_f64() - *k;
                *a += d;
                *b += d * d;
            }
        }
    })
}

/// Channels whose moments `sample_moments_blocks` keeps in registers at once.
const MOMENT_LANES: usize = 8;

/// `sample_moments` where the channels come in whole blocks of lanes: each block's sums
/// stay in registers over all the rows, where the row-by-row loop stored and reloaded them
/// every row. Each channel adds its rows in the same order, so the same bits.
fn sample_moments_blocks<T: Real>(c: usize, shift: &[f64], rows: &[T], out: &mut [f64]) {
    multiversion!(fn [T: Real] (c: usize, shift: &[f64], rows: &[T], out: &mut [f64]) {
        const B: usize = MOMENT_LANES;
        let (s1, s2) = out.split_at_mut(c);
        for cb in (0..c).step_by(B) {
            let k: [f64; B] = lanes(shift, cb);
            let (mut a, mut b) = ([0.0f64; B], [0.0f64; B]);
            for row in rows.chunks_exact(c) {
                let v: [T; B] = lanes(row, cb);
                for j in 0..B {
                    let d = v[j].to_f64() - k[j];
                    a[j] += d;
                    b[j] += d * d;
                }
            }
            s1[cb..cb + B].copy_from_slice(&a);
            s2[cb..cb + B].copy_from_slice(&b);
        }
    })
}

/// `sample_moments` of each of the `n` samples of `x`, `[n, 2c]`.
pub fn batch_moments<T: Real>(c: usize, n: usize, shift: &[f64], x: &[T]) -> Vec<f64> {
    let mut moments = vec![0.0; n * 2 * c];
    x.par_chunks(x.len() / n.max(1))
        .zip(moments.par_chunks_mut(2 * c))
        .for_each(|(xs, m)| sample_moments(c, shift, xs, m));
    moments
}

/// Training forward: the batch's moments (one pass), then the normalisation. Writes `mean`,
/// `inv_std` (1/sqrt(var + eps)) and the biased `var` for the backward and running averages.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_forward<T: Real>(
    c: usize,
    eps: f32,
    n: usize,
    shift: &[f64],
    x: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
    stats: BatchStats<T>,
) {
    let moments = batch_moments(c, n, shift, x);
    batchnorm_train_normalise(
        c,
        eps,
        shift,
        &moments,
        x,
        gamma,
        beta,
        y,
        stats,
        Activation::Linear,
    );
}

/// Where a training forward writes the batch's statistics, per channel.
pub struct BatchStats<'a, T> {
    pub mean: &'a mut [T],
    pub inv_std: &'a mut [T],
    pub var: &'a mut [T],
}

/// The rest of the training forward once the per-sample `moments` are known (by
/// `batch_moments`, or in a convolution's epilogue): the statistics, then
/// `y = post((x − mean) · inv_std · gamma + beta)`, `post` applied while each part is in cache
/// (an activation layer fused after the batchnorm).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_normalise<T: Real>(
    c: usize,
    eps: f32,
    shift: &[f64],
    moments: &[f64],
    x: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
    mut stats: BatchStats<T>,
    post: Activation,
) {
    batch_statistics(c, eps, x.len() / c, shift, moments, &mut stats);
    normalise(c, x, gamma, beta, stats.mean, stats.inv_std, y, post);
}

/// The batch's mean, biased variance and 1/sqrt(var + eps) over `rows` rows, from the
/// per-sample `moments` about `shift` (samples added in order).
pub fn batch_statistics<T: Real>(
    c: usize,
    eps: f32,
    rows: usize,
    shift: &[f64],
    moments: &[f64],
    stats: &mut BatchStats<T>,
) {
    let rows = rows as f64;
    let mut total = vec![0.0f64; 2 * c];
    for sample in moments.chunks(2 * c) {
        for (t, v) in total.iter_mut().zip(sample) {
            *t += v;
        }
    }
    for ch in 0..c {
        let d = total[ch] / rows;
        let var = (total[c + ch] / rows - d * d).max(0.0);
        stats.mean[ch] = T::from_f64(shift[ch] + d);
        stats.var[ch] = T::from_f64(var);
        stats.inv_std[ch] = T::from_f64(1.0 / (var + eps as f64).sqrt());
    }
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

/// A batchnorm as a per-channel affine map `(scale, shift)` of its input, from its mean and
/// 1/sqrt(var + eps): the arithmetic `normalise` applies (a max-pool fused after a training
/// batchnorm applies it as it reads).
pub fn affine<T: Real>(gamma: &[T], beta: &[T], mean: &[T], inv_std: &[T]) -> (Vec<T>, Vec<T>) {
    let scale: Vec<T> = gamma.iter().zip(inv_std).map(|(g, s)| *g * *s).collect();
    let shift: Vec<T> = (0..gamma.len())
        .map(|ch| beta[ch] - mean[ch] * scale[ch])
        .collect();
    (scale, shift)
}

/// `y = y · scale + shift` per channel, in place on the calling thread (`y` is whole rows).
pub fn affine_part<T: Real>(scale: &[T], shift: &[T], y: &mut [T]) {
    multiversion!(fn [T: Real] (scale: &[T], shift: &[T], y: &mut [T]) {
        // Zipped, not indexed: an index check in the loop would stop its vectorisation.
        for row in y.chunks_mut(scale.len()) {
            for ((v, s), t) in row.iter_mut().zip(scale).zip(shift) {
                *v = *v * *s + *t;
            }
        }
    })
}

/// `y = post(x · scale + shift)` per channel, `post` applied to each part while in cache.
#[allow(clippy::too_many_arguments)]
fn normalise<T: Real>(
    c: usize,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    inv_std: &[T],
    y: &mut [T],
    post: Activation,
) {
    let (scale, shift) = affine(gamma, beta, mean, inv_std);
    y.par_chunks_mut(c * 256)
        .zip(x.par_chunks(c * 256))
        .for_each(|(ys, xs)| {
            let (scale, shift) = (&scale[..], &shift[..]);
            multiversion!(fn [T: Real] (c: usize, scale: &[T], shift: &[T], xs: &[T], ys: &mut [T]) {
                for (yr, xr) in ys.chunks_mut(c).zip(xs.chunks(c)) {
                    for (((y, x), s), t) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                        *y = *x * *s + *t;
                    }
                }
            });
            activation::activate_part(post, ys);
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
    let input = batchnorm_param_gradients(c, x, dy, gamma, mean, inv_std, dgamma, dbeta);
    if let Some(dx) = dx {
        dx.par_chunks_mut(c * 256)
            .zip(x.par_chunks(c * 256).zip(dy.par_chunks(c * 256)))
            .for_each(|(dxs, (xs, dys))| {
                dxs.copy_from_slice(dys);
                input.apply(xs, dxs);
            });
    }
}

/// The parameter gradients of a training batchnorm (one pass over x and dy), and what its
/// input gradient needs from them.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_param_gradients<T: Real>(
    c: usize,
    x: &[T],
    dy: &[T],
    gamma: &[T],
    mean: &[T],
    inv_std: &[T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> InputGradient<T> {
    let stats = (gamma, mean, inv_std);
    param_gradients(c, x, stats, dgamma, dbeta, |rows, acc, _| {
        let (x, dy) = (
            &x[rows.start * c..rows.end * c],
            &dy[rows.start * c..rows.end * c],
        );
        param_sums(c, mean, inv_std, x, dy, acc)
    })
}

/// `batchnorm_param_gradients` where the output gradient is not stored: it is a fused
/// max-pool's, routed through its argmax (`pool::routed_rows`). Where the channels come in
/// whole groups of `LANES`, the routed values are made lane by lane inside the sums and never
/// written; otherwise block by block into the part's buffer first. The same sums in the same
/// order either way, so the same bits as routing the whole gradient first.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_param_gradients_routed<T: Real>(
    c: usize,
    x: &[T],
    gamma: &[T],
    mean: &[T],
    inv_std: &[T],
    dgamma: &mut [T],
    dbeta: &mut [T],
    (pool, dy, argmax): (&PoolGeom, &[T], &[u8]),
) -> InputGradient<T> {
    let stats = (gamma, mean, inv_std);
    let in_registers = c.is_multiple_of(LANES);
    param_gradients(c, x, stats, dgamma, dbeta, |rows, acc, routed| {
        let x = &x[rows.start * c..rows.end * c];
        if in_registers {
            routed_param_sums(pool, dy, argmax, rows.start, mean, inv_std, x, acc)
        } else {
            routed.resize(x.len(), T::ZERO);
            routed_rows(pool, dy, argmax, rows.start, routed);
            param_sums(c, mean, inv_std, x, routed, acc)
        }
    })
}

/// Channels per group in the loops that keep a group's per-channel values in registers
/// (four AVX2 registers of f32) while they go down the rows.
const LANES: usize = 32;

/// `param_sums` of the rows from `first` of a fused max-pool's routed gradient, made lane by
/// lane (`pool::routed_value`): for each group of `LANES` channels, both sums stay in
/// registers down the rows, where the row loop loaded and stored them for every row. Each
/// channel's terms are the same and added in the same order, so the same bits.
#[allow(clippy::too_many_arguments)]
fn routed_param_sums<T: Real>(
    pool: &PoolGeom,
    dy: &[T],
    argmax: &[u8],
    first: usize,
    mean: &[T],
    inv_std: &[T],
    x: &[T],
    acc: &mut [T],
) {
    multiversion!(fn [T: Real] (pool: &PoolGeom, dy: &[T], argmax: &[u8], first: usize, mean: &[T], inv_std: &[T], x: &[T], acc: &mut [T]) {
        const B: usize = LANES;
        let c = pool.c;
        let (dg, db) = acc.split_at_mut(c);
        for cb in (0..c).step_by(B) {
            let m: [T; B] = lanes(mean, cb);
            let s: [T; B] = lanes(inv_std, cb);
            let (mut g, mut b): ([T; B], [T; B]) = (lanes(dg, cb), lanes(db, cb));
            let mut walk = WindowWalk::new(pool, first);
            for row in x.chunks_exact(c) {
                let v: [T; B] = lanes(row, cb);
                let d: [T; B] = routed_lanes(dy, argmax, walk.window(), cb);
                for j in 0..B {
                    g[j] += d[j] * ((v[j] - m[j]) * s[j]);
                    b[j] += d[j];
                }
                walk.advance();
            }
            dg[cb..cb + B].copy_from_slice(&g);
            db[cb..cb + B].copy_from_slice(&b);
        }
    })
}

/// Channels `cb .. cb + B` of the routed gradient at a pixel whose window is `window`
/// (`WindowWalk::window`).
#[inline(always)]
fn routed_lanes<T: Real, const B: usize>(
    dy: &[T],
    argmax: &[u8],
    window: Option<(usize, u8)>,
    cb: usize,
) -> [T; B] {
    let mut d = [T::ZERO; B];
    if let Some((o, position)) = window {
        let (dv, av): ([T; B], [u8; B]) = (lanes(dy, o + cb), lanes(argmax, o + cb));
        for j in 0..B {
            d[j] = routed_value(dv[j], av[j], position);
        }
    }
    d
}

/// Σ dy·x̂ and Σ dy per channel over `block`'s rows, in order, onto `acc` ([2c]).
fn param_sums<T: Real>(c: usize, mean: &[T], inv_std: &[T], x: &[T], dy: &[T], acc: &mut [T]) {
    multiversion!(fn [T: Real] (c: usize, mean: &[T], inv_std: &[T], x: &[T], dy: &[T], acc: &mut [T]) {
        let (dg, db) = acc.split_at_mut(c);
        for (xr, dr) in x.chunks(c).zip(dy.chunks(c)) {
            let per_channel = dg.iter_mut().zip(db.iter_mut()).zip(mean.iter().zip(inv_std));
            for (((dg, db), (m, s)), (x, d)) in per_channel.zip(xr.iter().zip(dr)) {
                *dg += *d * ((*x - *m) * *s);
                *db += *d;
            }
        }
    })
}

/// The sums by `block_sums` (see `channel_sums`), written to the parameter gradients, and
/// the input gradient they make.
fn param_gradients<T: Real>(
    c: usize,
    x: &[T],
    (gamma, mean, inv_std): (&[T], &[T], &[T]),
    dgamma: &mut [T],
    dbeta: &mut [T],
    block_sums: impl Fn(std::ops::Range<usize>, &mut [T], &mut Vec<T>) + Sync,
) -> InputGradient<T> {
    let rows = x.len() / c;
    let sums = channel_sums::<T>(rows, 2 * c, block_sums);
    for ch in 0..c {
        dgamma[ch] = T::from_f64(sums[ch]);
        dbeta[ch] = T::from_f64(sums[c + ch]);
    }
    let m = rows as f64;
    InputGradient {
        k: (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect(),
        mean_dgamma: (0..c).map(|ch| T::from_f64(sums[ch] / m)).collect(),
        mean_dbeta: (0..c).map(|ch| T::from_f64(sums[c + ch] / m)).collect(),
        mean: mean.to_vec(),
        inv_std: inv_std.to_vec(),
    }
}

/// A training batchnorm's input gradient, `dx = γ·inv_std · (dy − mean(dy) − x̂ · mean(dy·x̂))`,
/// applied to any rows: the unfused layer's pass and a fused convolution's backward prologue
/// run this one loop, so they get the same bits.
pub struct InputGradient<T> {
    k: Vec<T>,
    mean_dgamma: Vec<T>,
    mean_dbeta: Vec<T>,
    mean: Vec<T>,
    inv_std: Vec<T>,
}

impl<T: Real> InputGradient<T> {
    /// `d` (rows of dy, the rows of `x` they belong to) becomes dx, in place.
    pub fn apply(&self, x: &[T], d: &mut [T]) {
        let g = self;
        multiversion!(fn [T: Real] (g: &InputGradient<T>, x: &[T], d: &mut [T]) {
            let c = g.k.len();
            let per_channel = g
                .k
                .iter()
                .zip(&g.mean_dbeta)
                .zip(&g.mean_dgamma)
                .zip(g.mean.iter().zip(&g.inv_std));
            for (dr, xr) in d.chunks_mut(c).zip(x.chunks(c)) {
                for ((d, x), (((k, mdb), mdg), (m, s))) in
                    dr.iter_mut().zip(xr).zip(per_channel.clone())
                {
                    let xhat = (*x - *m) * *s;
                    *d = *k * (*d - *mdb - xhat * *mdg);
                }
            }
        })
    }
}

impl InputGradient<f32> {
    /// The prologue of a convolution whose output goes through an activation, this
    /// batchnorm and a fused max-pool (`pool::windows_disjoint`): rows `first ..` of the
    /// routed gradient (`pool::routed_rows`) through `apply` and the activation's backward
    /// (`y`: the activation's output, which is this batchnorm's input), into `d`. Where the
    /// channels come in whole groups of `LANES` and the activation is ReLU or linear, one
    /// pass with each group's per-channel values in registers; otherwise the three passes.
    /// The same operations on each value either way, so the same bits.
    pub fn apply_routed(
        &self,
        (pool, dy, argmax): (&PoolGeom, &[f32], &[u8]),
        act: Activation,
        first: usize,
        y: &[f32],
        d: &mut [f32],
    ) {
        let c = self.k.len();
        match act {
            Activation::Linear | Activation::Relu if c.is_multiple_of(LANES) => {
                self.routed_pass(pool, dy, argmax, first, y, d, act == Activation::Relu)
            }
            _ => {
                routed_rows(pool, dy, argmax, first, d);
                self.apply(y, d);
                activation::activate_backward_part(act, y, d);
            }
        }
    }

    /// `apply_routed`'s single pass: each group of channels goes down the rows.
    #[allow(clippy::too_many_arguments)]
    fn routed_pass(
        &self,
        pool: &PoolGeom,
        dy: &[f32],
        argmax: &[u8],
        first: usize,
        y: &[f32],
        d: &mut [f32],
        relu: bool,
    ) {
        let g = self;
        multiversion!(fn [] (g: &InputGradient<f32>, pool: &PoolGeom, dy: &[f32], argmax: &[u8], first: usize, y: &[f32], d: &mut [f32], relu: bool) {
            const B: usize = LANES;
            let c = pool.c;
            for cb in (0..c).step_by(B) {
                let k: [f32; B] = lanes(&g.k, cb);
                let mdb: [f32; B] = lanes(&g.mean_dbeta, cb);
                let mdg: [f32; B] = lanes(&g.mean_dgamma, cb);
                let m: [f32; B] = lanes(&g.mean, cb);
                let s: [f32; B] = lanes(&g.inv_std, cb);
                let mut walk = WindowWalk::new(pool, first);
                for (dr, yr) in d.chunks_exact_mut(c).zip(y.chunks_exact(c)) {
                    let r = routed_lanes::<f32, B>(dy, argmax, walk.window(), cb);
                    let v: [f32; B] = lanes(yr, cb);
                    let out = &mut dr[cb..cb + B];
                    for j in 0..B {
                        let xhat = (v[j] - m[j]) * s[j];
                        let n = k[j] * (r[j] - mdb[j] - xhat * mdg[j]);
                        out[j] = if !relu || v[j] > 0.0 { n } else { 0.0 };
                    }
                    walk.advance();
                }
            }
        })
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
    normalise(
        c,
        x,
        gamma,
        beta,
        moving_mean,
        &inv_std,
        y,
        Activation::Linear,
    );
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

    /// Moments taken about a shift away from the data's mean, as after some steps.
    const SHIFT: [f64; 3] = [0.3, -0.2, 0.1];

    fn train_loss(c: usize, x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64]) -> f64 {
        let mut y = vec![0.0; x.len()];
        let (mut m, mut s, mut v) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        let stats = BatchStats {
            mean: &mut m,
            inv_std: &mut s,
            var: &mut v,
        };
        batchnorm_train_forward(c, 1e-3, 1, &SHIFT[..c], x, gamma, beta, &mut y, stats);
        dot(&y, r)
    }

    #[test]
    fn block_moments_are_the_row_loop_bit_for_bit() {
        for c in [8, 16, 32] {
            let rows: Vec<f32> = values(37 * c, c as u64).iter().map(|&v| v as f32).collect();
            let shift: Vec<f64> = values(c, 9).iter().map(|v| v * 0.1).collect();
            let (mut blocks, mut by_row) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
            sample_moments_blocks(c, &shift, &rows, &mut blocks);
            sample_moments_rows(c, &shift, &rows, &mut by_row);
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&blocks), bits(&by_row), "{c} channels");
        }
    }

    #[test]
    fn routed_loops_are_the_three_passes_bit_for_bit() {
        // The routed sums and prologue against routing first, then the row loops: whole
        // groups of channels (32, 64) and the fallback (8), gaps past the last window and
        // "same" padding, ties, negatives for ReLU, −0 gradients, blocks that start and end
        // mid-sample.
        use super::super::super::ir::Padding;
        use super::super::pool::maxpool_forward;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let n = 3;
        for c in [8, 32, 64] {
            for pool in [
                PoolGeom::new([9, 7, c], [2, 2], [2, 2], Padding::Valid),
                PoolGeom::new([5, 7, c], [2, 2], [2, 2], Padding::Same),
            ] {
                let x: Vec<f32> = values(n * pool.in_len(), c as u64)
                    .iter()
                    .map(|v| ((v - 0.3) * 4.0).round() as f32 * 0.25)
                    .collect();
                let mut dy: Vec<f32> = values(n * pool.out_len(), 7)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                dy.iter_mut().step_by(5).for_each(|v| *v = -0.0);
                let (mut pooled, mut argmax) = (vec![0.0; dy.len()], vec![0u8; dy.len()]);
                maxpool_forward(&pool, &x, &mut pooled, Some(&mut argmax));
                let gamma: Vec<f32> = values(c, 2).iter().map(|v| 1.0 + *v as f32).collect();
                let mean: Vec<f32> = values(c, 3).iter().map(|v| *v as f32 * 0.1).collect();
                let inv_std: Vec<f32> = values(c, 4).iter().map(|v| 1.5 + *v as f32).collect();
                let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
                let mut routed_all = vec![f32::NAN; x.len()];
                routed_rows(&pool, &dy, &argmax, 0, &mut routed_all);
                let want = batchnorm_param_gradients(
                    c,
                    &x,
                    &routed_all,
                    &gamma,
                    &mean,
                    &inv_std,
                    &mut dg,
                    &mut db,
                );
                let (mut dg2, mut db2) = (vec![0.0; c], vec![0.0; c]);
                let routed = (&pool, &dy[..], &argmax[..]);
                let got = batchnorm_param_gradients_routed(
                    c, &x, &gamma, &mean, &inv_std, &mut dg2, &mut db2, routed,
                );
                assert_eq!((bits(&dg), bits(&db)), (bits(&dg2), bits(&db2)), "{c} sums");
                assert_eq!(bits(&want.mean_dgamma), bits(&got.mean_dgamma));
                let rows = x.len() / c;
                for act in [Activation::Relu, Activation::Linear, Activation::Sigmoid] {
                    let mut first = 0;
                    for block in [1, 5, 13, rows] {
                        let end = (first + block).min(rows);
                        let y = &x[first * c..end * c];
                        let mut want_d = vec![f32::NAN; y.len()];
                        routed_rows(&pool, &dy, &argmax, first, &mut want_d);
                        want.apply(y, &mut want_d);
                        activation::activate_backward_part(act, y, &mut want_d);
                        let mut got_d = vec![f32::NAN; y.len()];
                        got.apply_routed(routed, act, first, y, &mut got_d);
                        assert_eq!(bits(&want_d), bits(&got_d), "{c} channels, {act:?}");
                        first = end;
                    }
                }
            }
        }
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
        let stats = BatchStats {
            mean: &mut m,
            inv_std: &mut s,
            var: &mut v,
        };
        batchnorm_train_forward(c, 1e-3, 1, &SHIFT[..c], &x, &gamma, &beta, &mut y, stats);
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
        let stats = BatchStats {
            mean: &mut m,
            inv_std: &mut s,
            var: &mut v,
        };
        batchnorm_train_forward(1, 1e-3, 2, &[0.5], &x, &[1.0], &[0.0], &mut y, stats);
        assert_eq!((m[0], v[0]), (2.0, 1.0));
        let (mut mm, mut mv) = (vec![0.0], vec![1.0]);
        update_running(0.99, &m, &v, &mut mm, &mut mv);
        assert!(
            (mm[0] - 0.02).abs() < 1e-6 && (mv[0] - 1.0).abs() < 1e-6,
            "{mm:?} {mv:?}"
        );
    }
}
