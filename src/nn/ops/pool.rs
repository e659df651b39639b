//! Max pooling (in training the forward stores, per output, the position of the first maximum
//! inside its window as one byte; ties go to the first, like PyTorch), average pooling (Keras
//! "same" averages only the real pixels) and global average pooling.

use super::super::ir::Padding;
use super::super::real::Real;
use super::super::simd::multiversion;
use super::{axis_geometry, lanes};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl PoolGeom {
    pub fn new(
        input: [usize; 3],
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> PoolGeom {
        let [h, w, c] = input;
        let (oh, pad_top) = axis_geometry(h, size[0], stride[0], padding);
        let (ow, pad_left) = axis_geometry(w, size[1], stride[1], padding);
        PoolGeom {
            h,
            w,
            c,
            oh,
            ow,
            kh: size[0],
            kw: size[1],
            sh: stride[0],
            sw: stride[1],
            pad_top,
            pad_left,
        }
    }
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.c
    }
    pub fn out_len(&self) -> usize {
        self.oh * self.ow * self.c
    }
    /// The input row and column of output pixel (oy, ox)'s unclipped window origin (negative
    /// inside "same" padding).
    fn origin(&self, oy: usize, ox: usize) -> (isize, isize) {
        (
            (oy * self.sh) as isize - self.pad_top as isize,
            (ox * self.sw) as isize - self.pad_left as isize,
        )
    }
    /// The in-bounds input rows and columns of output pixel (oy, ox).
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (y0, x0) = self.origin(oy, ox);
        let ys = y0.max(0) as usize..((y0 + self.kh as isize).min(self.h as isize)) as usize;
        let xs = x0.max(0) as usize..((x0 + self.kw as isize).min(self.w as isize)) as usize;
        (ys, xs)
    }
}

/// The most positions a max-pool window may have: the training argmax is one byte per output
/// element, the window position `ky * kw + kx` in scan order (0..=255).
pub const MAX_POOL_WINDOW: usize = 256;

/// Max over each window. With `argmax` (training) it also records, per output element, the
/// position of the first maximum inside its window, `ky * kw + kx` counted from the
/// *unclipped* window's origin (row `oy * sh - pad_top`, column `ox * sw - pad_left`), so with
/// "same" padding an edge window's first real pixel need not be position 0. Ties go to the
/// first in scan order, like PyTorch. Without it (inference) it is a plain vectorisable max.
/// Windows must have at most [`MAX_POOL_WINDOW`] positions (the model checker refuses more).
pub fn maxpool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T], argmax: Option<&mut [u8]>) {
    match argmax {
        None => x
            .par_chunks(g.in_len())
            .zip(y.par_chunks_mut(g.out_len()))
            .for_each(|(xs, ys)| maxpool_sample(g, xs, ys)),
        Some(argmax) => maxpool_argmax(g, x, y, argmax, |_, _: &mut [T; ARGMAX_LANES]| {}),
    }
}

/// The inference max-pool of one sample (`maxpool_forward` without an argmax, and the pool
/// an inference convolution applies to each sample in cache).
pub fn maxpool_sample<T: Real>(g: &PoolGeom, xs: &[T], ys: &mut [T]) {
    let c = g.c;
    multiversion!(fn [T: Real] (g: &PoolGeom, c: usize, xs: &[T], ys: &mut [T]) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let yr = &mut ys[(oy * g.ow + ox) * c..][..c];
                yr.fill(T::NEG_INFINITY);
                let (rows, cols) = g.window(oy, ox);
                for iy in rows {
                    for ix in cols.clone() {
                        let xr = &xs[(iy * g.w + ix) * c..][..c];
                        for ch in 0..c {
                            yr[ch] = yr[ch].max(xr[ch]);
                        }
                    }
                }
            }
        }
    })
}

/// The training max-pool of a batchnorm's output `x · scale + shift` (per channel), reading
/// its input `x` (the fusion of a training batchnorm with the max-pool after it): the same
/// values and argmax as normalising first, without writing the normalised tensor.
pub fn maxpool_forward_affine<T: Real>(
    g: &PoolGeom,
    x: &[T],
    scale: &[T],
    shift: &[T],
    y: &mut [T],
    argmax: &mut [u8],
) {
    // Per block of channels, as wide as the registers the pool keeps; lanes past the last
    // channel map −∞ to itself.
    let blocks = g.c.div_ceil(ARGMAX_LANES);
    let mut maps = vec![([T::ONE; ARGMAX_LANES], [T::ZERO; ARGMAX_LANES]); blocks];
    for (ch, (s, t)) in scale.iter().zip(shift).enumerate() {
        let (b, j) = (ch / ARGMAX_LANES, ch % ARGMAX_LANES);
        maps[b].0[j] = *s;
        maps[b].1[j] = *t;
    }
    maxpool_argmax(g, x, y, argmax, |cb, v: &mut [T; ARGMAX_LANES]| {
        let (s, t) = &maps[cb / ARGMAX_LANES];
        for j in 0..ARGMAX_LANES {
            v[j] = v[j] * s[j] + t[j];
        }
    })
}

/// Channels the training max-pool keeps in registers at once.
const ARGMAX_LANES: usize = 8;

/// The max-pool that keeps each maximum's position in its window; `load(first channel,
/// values)` maps a block's values as they are read (nothing, or a batchnorm's affine map).
fn maxpool_argmax<T: Real>(
    g: &PoolGeom,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u8],
    load: impl Fn(usize, &mut [T; ARGMAX_LANES]) + Sync,
) {
    let c = g.c;
    assert!(
        g.kh * g.kw <= MAX_POOL_WINDOW,
        "max-pool window of {} positions reached the kernel; the checker refuses it",
        g.kh * g.kw
    );
    // Channels in blocks of 8 kept in registers across the window: the running
    // index in 32-bit lanes, as wide as the compare's mask, so each select is one
    // blend; narrowed to bytes once per block. Lanes past the last channel hold -inf,
    // never greater, and are not stored.
    x.par_chunks(g.in_len())
        .zip(
            y.par_chunks_mut(g.out_len())
                .zip(argmax.par_chunks_mut(g.out_len())),
        )
        .for_each(|(xs, (ys, am))| {
            let load = &load;
            if c.is_multiple_of(ARGMAX_LANES) {
                return maxpool_argmax_blocks(g, load, xs, ys, am);
            }
            multiversion!(fn [T: Real, L: Fn(usize, &mut [T; ARGMAX_LANES])] (
                g: &PoolGeom,
                c: usize,
                load: &L,
                xs: &[T],
                ys: &mut [T],
                am: &mut [u8],
            ) {
                const B: usize = ARGMAX_LANES;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = (oy * g.ow + ox) * c;
                        let (y0, x0) = g.origin(oy, ox);
                        let (rows, cols) = g.window(oy, ox);
                        let position = |iy: usize, ix: usize| {
                            ((iy as isize - y0) as usize * g.kw + (ix as isize - x0) as usize) as u32
                        };
                        let first = (rows.start * g.w + cols.start) * c;
                        let mut cb = 0;
                        while cb < c {
                            let width = B.min(c - cb);
                            let mut m = [T::NEG_INFINITY; B];
                            let mut id = [position(rows.start, cols.start); B];
                            m[..width].copy_from_slice(&xs[first + cb..][..width]);
                            load(cb, &mut m);
                            let mut skip = true;
                            for iy in rows.clone() {
                                for ix in cols.clone() {
                                    if skip {
                                        skip = false;
                                        continue;
                                    }
                                    let p = position(iy, ix);
                                    let mut xv = [T::NEG_INFINITY; B];
                                    xv[..width]
                                        .copy_from_slice(&xs[(iy * g.w + ix) * c + cb..][..width]);
                                    load(cb, &mut xv);
                                    // Strict `>` keeps the first maximum; selects, not
                                    // branches: random data mispredicts half of them.
                                    for j in 0..B {
                                        let greater = xv[j] > m[j];
                                        m[j] = if greater { xv[j] } else { m[j] };
                                        id[j] = if greater { p } else { id[j] };
                                    }
                                }
                            }
                            ys[o + cb..][..width].copy_from_slice(&m[..width]);
                            for (a, i) in am[o + cb..][..width].iter_mut().zip(&id) {
                                *a = *i as u8;
                            }
                            cb += B;
                        }
                    }
                }
            })
        })
}

/// One sample of `maxpool_argmax` where the channels come in whole blocks of lanes: the
/// same comparisons in the same order, with each window's offsets worked out once for all
/// blocks and fixed-width loads, so the running maxima and indices stay in registers (the
/// general loop's partial-width copies spilled them: 2 ns per input value).
fn maxpool_argmax_blocks<T: Real, L: Fn(usize, &mut [T; ARGMAX_LANES])>(
    g: &PoolGeom,
    load: &L,
    xs: &[T],
    ys: &mut [T],
    am: &mut [u8],
) {
    multiversion!(fn [T: Real, L: Fn(usize, &mut [T; ARGMAX_LANES])] (
        g: &PoolGeom,
        load: &L,
        xs: &[T],
        ys: &mut [T],
        am: &mut [u8],
    ) {
        const B: usize = ARGMAX_LANES;
        let c = g.c;
        // The window's input offsets and positions, in scan order.
        let mut window = [(0usize, 0u32); MAX_POOL_WINDOW];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let o = (oy * g.ow + ox) * c;
                let (y0, x0) = g.origin(oy, ox);
                let (rows, cols) = g.window(oy, ox);
                let mut len = 0;
                for iy in rows {
                    for ix in cols.clone() {
                        let p = (iy as isize - y0) as usize * g.kw + (ix as isize - x0) as usize;
                        window[len] = ((iy * g.w + ix) * c, p as u32);
                        len += 1;
                    }
                }
                let (&(first, p0), rest) = window[..len].split_first().expect("a window");
                for cb in (0..c).step_by(B) {
                    let mut m: [T; B] = lanes(xs, first + cb);
                    load(cb, &mut m);
                    let mut id = [p0; B];
                    for &(at, p) in rest {
                        let mut xv: [T; B] = lanes(xs, at + cb);
                        load(cb, &mut xv);
                        // Strict `>` keeps the first maximum, as in `maxpool_argmax`.
                        for j in 0..B {
                            let greater = xv[j] > m[j];
                            m[j] = if greater { xv[j] } else { m[j] };
                            id[j] = if greater { p } else { id[j] };
                        }
                    }
                    ys[o + cb..][..B].copy_from_slice(&m);
                    for (a, i) in am[o + cb..][..B].iter_mut().zip(&id) {
                        *a = *i as u8;
                    }
                }
            }
        }
    })
}

/// Training backward: each output gradient is added to the input its window index names
/// (position recomputed from the output position), outputs in order, so overlapping windows
/// add in the same order as a scatter through full input positions.
pub fn maxpool_backward<T: Real>(g: &PoolGeom, dy: &[T], argmax: &[u8], dx: &mut [T]) {
    let c = g.c;
    dx.par_chunks_mut(g.in_len())
        .zip(
            dy.par_chunks(g.out_len())
                .zip(argmax.par_chunks(g.out_len())),
        )
        .for_each(|(dxs, (dys, am))| {
            multiversion!(fn [T: Real] (g: &PoolGeom, c: usize, dys: &[T], am: &[u8], dxs: &mut [T]) {
            dxs.fill(T::ZERO);
            // Per window position, the offset of its pixel in the sample (wrapping for the
            // positions a clipped window lacks; the forward never names those).
            let mut offset = vec![0usize; g.kh * g.kw];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (y0, x0) = g.origin(oy, ox);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let pixel = (y0 + ky as isize) * g.w as isize + x0 + kx as isize;
                            offset[ky * g.kw + kx] = (pixel * c as isize) as usize;
                        }
                    }
                    let o = (oy * g.ow + ox) * c;
                    for (ch, (d, &a)) in dys[o..o + c].iter().zip(&am[o..o + c]).enumerate() {
                        dxs[offset[a as usize].wrapping_add(ch)] += *d;
                    }
                }
            }
            })
        });
}

/// Whether every input pixel lies in at most one window (stride at least the size on both
/// axes, as in every galaxy net's 2×2 pools): the input gradient is then a gather,
/// `routed_rows`, which a fused convolution's backward computes block by block in cache
/// instead of reading a routed tensor.
pub fn windows_disjoint(g: &PoolGeom) -> bool {
    g.sh >= g.kh && g.sw >= g.kw
}

/// The pixels of a max-pool's input (rows of the batch, sample-major) walked in order from
/// row `first`, each with its window and position in it kept up to date as the rows advance:
/// divisions only once per image row (four per pixel cost about as much as the rest of a
/// gather). For windows that do not overlap (`windows_disjoint`), where a pixel is in at
/// most one window.
#[derive(Clone, Copy)]
pub struct WindowWalk<'g> {
    g: &'g PoolGeom,
    sample: usize,
    y: usize,
    x: usize,
    oy: usize,
    ky: usize,
    ox: usize,
    kx: usize,
}

impl<'g> WindowWalk<'g> {
    #[inline(always)]
    pub fn new(g: &'g PoolGeom, first: usize) -> WindowWalk<'g> {
        debug_assert!(windows_disjoint(g), "a walk over overlapping windows");
        let pixels = g.h * g.w;
        let (sample, at) = (first / pixels, first % pixels);
        let (y, x) = (at / g.w, at % g.w);
        let mut walk = WindowWalk {
            g,
            sample,
            y,
            x,
            oy: 0,
            ky: 0,
            ox: 0,
            kx: 0,
        };
        walk.locate();
        walk
    }

    /// The window and position of pixel (y, x), by division: at the start and once per row.
    #[inline(always)]
    fn locate(&mut self) {
        let g = self.g;
        (self.oy, self.ky) = ((self.y + g.pad_top) / g.sh, (self.y + g.pad_top) % g.sh);
        (self.ox, self.kx) = ((self.x + g.pad_left) / g.sw, (self.x + g.pad_left) % g.sw);
    }

    /// The current pixel's window, as the offset of its output pixel's first channel in the
    /// batch's output, and the pixel's position in the window (what the argmax stores); none
    /// where the pixel is in no window (a gap, or a row or column past the last window).
    #[inline(always)]
    pub fn window(&self) -> Option<(usize, u8)> {
        let g = self.g;
        if self.ky >= g.kh || self.kx >= g.kw || self.oy >= g.oh || self.ox >= g.ow {
            None
        } else {
            let o = self.sample * g.out_len() + (self.oy * g.ow + self.ox) * g.c;
            Some((o, (self.ky * g.kw + self.kx) as u8))
        }
    }

    /// On to the next pixel.
    #[inline(always)]
    pub fn advance(&mut self) {
        let g = self.g;
        (self.x, self.kx) = (self.x + 1, self.kx + 1);
        if self.kx == g.sw {
            (self.ox, self.kx) = (self.ox + 1, 0);
        }
        if self.x == g.w {
            (self.x, self.y) = (0, self.y + 1);
            if self.y == g.h {
                (self.y, self.sample) = (0, self.sample + 1);
            }
            self.locate();
        }
    }
}

/// One channel's routed gradient: the pool's output gradient `d` where the argmax `a` names
/// this pixel's `position`, otherwise zero; `0 + d`, so a −0 arrives as +0, as
/// `maxpool_backward`'s sum into a zeroed gradient makes it. Read unconditionally, then
/// selected: a conditional read became a masked load.
#[inline(always)]
pub fn routed_value<T: Real>(d: T, a: u8, position: u8) -> T {
    let d = T::ZERO + d;
    if a == position {
        d
    } else {
        T::ZERO
    }
}

/// Rows `first ..` (pixels of the batch's input, sample-major) of the max-pool's input
/// gradient, for windows that do not overlap (`windows_disjoint`): each channel's output
/// gradient where the argmax names this pixel, otherwise zero; the same values, bit for bit,
/// as `maxpool_backward` writes.
pub fn routed_rows<T: Real>(g: &PoolGeom, dy: &[T], argmax: &[u8], first: usize, out: &mut [T]) {
    debug_assert!(windows_disjoint(g), "routed rows of overlapping windows");
    multiversion!(fn [T: Real] (g: &PoolGeom, dy: &[T], argmax: &[u8], first: usize, out: &mut [T]) {
        let c = g.c;
        let mut walk = WindowWalk::new(g, first);
        for row in out.chunks_mut(c) {
            match walk.window() {
                None => row.fill(T::ZERO),
                Some((o, position)) => {
                    for ((v, d), a) in row.iter_mut().zip(&dy[o..o + c]).zip(&argmax[o..o + c]) {
                        *v = routed_value(*d, *a, position);
                    }
                }
            }
            walk.advance();
        }
    })
}

/// Inference-mode backward (saliency, Grad-CAM), where no argmax was stored: routes each
/// output gradient to the first input of its window equal to the output.
pub fn maxpool_backward_recompute<T: Real>(g: &PoolGeom, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    let c = g.c;
    dx.par_chunks_mut(g.in_len())
        .zip(
            x.par_chunks(g.in_len())
                .zip(y.par_chunks(g.out_len()).zip(dy.par_chunks(g.out_len()))),
        )
        .for_each(|(dxs, (xs, (ys, dys)))| {
            dxs.fill(T::ZERO);
            let mut routed = vec![false; c];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let o = (oy * g.ow + ox) * c;
                    let (yr, dr) = (&ys[o..o + c], &dys[o..o + c]);
                    routed.fill(false);
                    let (rows, cols) = g.window(oy, ox);
                    for iy in rows {
                        for ix in cols.clone() {
                            let base = (iy * g.w + ix) * c;
                            let (xr, dxr) = (&xs[base..base + c], &mut dxs[base..base + c]);
                            for ch in 0..c {
                                let hit = !routed[ch] && xr[ch] == yr[ch];
                                if hit {
                                    dxr[ch] += dr[ch];
                                }
                                routed[ch] |= hit;
                            }
                        }
                    }
                }
            }
        });
}

pub fn avgpool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let c = g.c;
    x.par_chunks(g.in_len())
        .zip(y.par_chunks_mut(g.out_len()))
        .for_each(|(xs, ys)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let yr = &mut ys[(oy * g.ow + ox) * c..][..c];
                    yr.fill(T::ZERO);
                    let (rows, cols) = g.window(oy, ox);
                    let count = T::from_usize(rows.len() * cols.len());
                    for iy in rows {
                        for ix in cols.clone() {
                            for (a, b) in yr.iter_mut().zip(&xs[(iy * g.w + ix) * c..][..c]) {
                                *a += *b;
                            }
                        }
                    }
                    for a in yr.iter_mut() {
                        *a /= count;
                    }
                }
            }
        });
}

pub fn avgpool_backward<T: Real>(g: &PoolGeom, dy: &[T], dx: &mut [T]) {
    let c = g.c;
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.out_len()))
        .for_each(|(dxs, dys)| {
            dxs.fill(T::ZERO);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let dr = &dys[(oy * g.ow + ox) * c..][..c];
                    let (rows, cols) = g.window(oy, ox);
                    let count = T::from_usize(rows.len() * cols.len());
                    for iy in rows {
                        for ix in cols.clone() {
                            for (a, b) in dxs[(iy * g.w + ix) * c..][..c].iter_mut().zip(dr) {
                                *a += *b / count;
                            }
                        }
                    }
                }
            }
        });
}

/// [n, h·w, c] → [n, c] mean over pixels.
pub fn global_avgpool_forward<T: Real>(pixels: usize, c: usize, x: &[T], y: &mut [T]) {
    let scale = T::ONE / T::from_usize(pixels);
    for (xs, ys) in x.chunks(pixels * c).zip(y.chunks_mut(c)) {
        ys.fill(T::ZERO);
        for px in xs.chunks(c) {
            for (a, b) in ys.iter_mut().zip(px) {
                *a += *b;
            }
        }
        for a in ys.iter_mut() {
            *a *= scale;
        }
    }
}

pub fn global_avgpool_backward<T: Real>(pixels: usize, c: usize, dy: &[T], dx: &mut [T]) {
    let scale = T::ONE / T::from_usize(pixels);
    for (dxs, dys) in dx.chunks_mut(pixels * c).zip(dy.chunks(c)) {
        for px in dxs.chunks_mut(c) {
            for (a, b) in px.iter_mut().zip(dys) {
                *a = *b * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    fn max_loss(g: &PoolGeom, n: usize, x: &[f64], r: &[f64]) -> f64 {
        let mut y = vec![0.0; n * g.out_len()];
        maxpool_forward(g, x, &mut y, None);
        dot(&y, r)
    }

    #[test]
    fn pool_gradients_match_finite_differences() {
        let n = 2;
        for (name, g) in [
            (
                "2x2 odd input",
                PoolGeom::new([5, 7, 3], [2, 2], [2, 2], Padding::Valid),
            ),
            (
                "3x3 stride 2 overlapping",
                PoolGeom::new([7, 6, 2], [3, 3], [2, 2], Padding::Valid),
            ),
            (
                "same odd",
                PoolGeom::new([5, 5, 2], [2, 2], [2, 2], Padding::Same),
            ),
            (
                "same 3x3 stride 1",
                PoolGeom::new([4, 5, 1], [3, 3], [1, 1], Padding::Same),
            ),
        ] {
            let x = values(n * g.in_len(), 7);
            let r = values(n * g.out_len(), 8);
            let mut y = vec![0.0; n * g.out_len()];
            let mut am = vec![0; y.len()];
            maxpool_forward(&g, &x, &mut y, Some(&mut am));
            let mut dx = vec![0.0; x.len()];
            maxpool_backward(&g, &r, &am, &mut dx);
            let mut dx2 = vec![0.0; x.len()];
            maxpool_backward_recompute(&g, &x, &y, &r, &mut dx2);
            assert_eq!(dx, dx2, "{name}: both backward routes agree");
            assert_gradient(&format!("maxpool {name}"), &x, &dx, |x| {
                max_loss(&g, n, x, &r)
            });

            avgpool_forward(&g, &x, &mut y);
            avgpool_backward(&g, &r, &mut dx);
            assert_gradient(&format!("avgpool {name}"), &x, &dx, |x| {
                let mut y = vec![0.0; n * g.out_len()];
                avgpool_forward(&g, x, &mut y);
                dot(&y, &r)
            });
        }
    }

    #[test]
    fn max_ties_route_to_the_first_maximum() {
        let g = PoolGeom::new([2, 2, 1], [2, 2], [2, 2], Padding::Valid);
        let x = [1.0f64, 3.0, 3.0, 3.0];
        let (mut y, mut am) = (vec![0.0; 1], vec![0; 1]);
        maxpool_forward(&g, &x, &mut y, Some(&mut am));
        let mut dx = vec![0.0; 4];
        maxpool_backward(&g, &[1.0], &am, &mut dx);
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
        maxpool_backward_recompute(&g, &x, &y, &[1.0], &mut dx);
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
        // Overlapping windows: each output routes to its own first maximum.
        let g = PoolGeom::new([1, 3, 1], [1, 2], [1, 1], Padding::Valid);
        let x = [5.0f64, 5.0, 5.0];
        let (mut y, mut am) = (vec![0.0; 2], vec![0; 2]);
        maxpool_forward(&g, &x, &mut y, Some(&mut am));
        let mut dx = vec![0.0; 3];
        maxpool_backward(&g, &[1.0, 10.0], &am, &mut dx);
        assert_eq!(dx, vec![1.0, 10.0, 0.0]);
        maxpool_backward_recompute(&g, &x, &y, &[1.0, 10.0], &mut dx);
        assert_eq!(dx, vec![1.0, 10.0, 0.0]);
    }

    /// The routing the byte index must reproduce, written plainly: per sample, output pixel
    /// and channel, scan the clipped window, keep the first strict maximum and its position
    /// in the sample; backward adds each output gradient at that position, outputs in order.
    fn reference_maxpool(
        g: &PoolGeom,
        n: usize,
        x: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let (mut y, mut pos) = (vec![0.0; n * g.out_len()], vec![0; n * g.out_len()]);
        let mut dx = vec![0.0; x.len()];
        for s in 0..n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for ch in 0..g.c {
                        let o = s * g.out_len() + (oy * g.ow + ox) * g.c + ch;
                        let (rows, cols) = g.window(oy, ox);
                        let mut best: Option<(f32, usize)> = None;
                        for iy in rows {
                            for ix in cols.clone() {
                                let p = (iy * g.w + ix) * g.c + ch;
                                let v = x[s * g.in_len() + p];
                                if best.is_none_or(|(b, _)| v > b) {
                                    best = Some((v, p));
                                }
                            }
                        }
                        let (v, p) = best.unwrap();
                        y[o] = v;
                        pos[o] = p;
                        dx[s * g.in_len() + p] += dy[o];
                    }
                }
            }
        }
        (y, pos, dx)
    }

    #[test]
    fn routed_rows_are_the_backward_bit_for_bit() {
        // Disjoint windows only: with gaps, with "same" padding on an odd input, odd sizes;
        // the rows asked for in blocks that start and end mid-sample; −0 gradients included.
        let n = 3;
        for g in [
            PoolGeom::new([9, 7, 5], [2, 2], [2, 2], Padding::Valid),
            PoolGeom::new([5, 7, 16], [2, 2], [2, 2], Padding::Same),
            PoolGeom::new([8, 7, 3], [2, 2], [3, 3], Padding::Valid),
            PoolGeom::new([7, 9, 4], [3, 2], [3, 2], Padding::Same),
        ] {
            assert!(windows_disjoint(&g));
            let x: Vec<f32> = values(n * g.in_len(), 5)
                .iter()
                .map(|v| (v * 4.0).round() as f32 * 0.25)
                .collect();
            let mut dy: Vec<f32> = values(n * g.out_len(), 6)
                .iter()
                .map(|&v| v as f32)
                .collect();
            dy.iter_mut().step_by(7).for_each(|v| *v = -0.0);
            let (mut y, mut argmax) = (vec![0.0f32; dy.len()], vec![0u8; dy.len()]);
            maxpool_forward(&g, &x, &mut y, Some(&mut argmax));
            let mut want = vec![1.0f32; x.len()];
            maxpool_backward(&g, &dy, &argmax, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            let rows = x.len() / g.c;
            let mut first = 0;
            for block in [1, 5, 13, rows] {
                let end = (first + block).min(rows);
                routed_rows(&g, &dy, &argmax, first, &mut got[first * g.c..end * g.c]);
                first = end;
            }
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
        assert!(!windows_disjoint(&PoolGeom::new(
            [7, 8, 1],
            [3, 3],
            [2, 2],
            Padding::Valid
        )));
    }

    #[test]
    fn byte_argmax_routes_like_the_reference() {
        let n = 3;
        for channels in [1, 3, 16, 67] {
            for (name, g) in [
                (
                    "3x3 stride 2, overlapping",
                    PoolGeom::new([7, 8, channels], [3, 3], [2, 2], Padding::Valid),
                ),
                (
                    "3x3 stride 1 same, clipped at all edges",
                    PoolGeom::new([5, 6, channels], [3, 3], [1, 1], Padding::Same),
                ),
                (
                    "2x2 stride 3, gaps",
                    PoolGeom::new([8, 7, channels], [2, 2], [3, 3], Padding::Valid),
                ),
                (
                    "2x2 stride 2 same, odd input",
                    PoolGeom::new([5, 7, channels], [2, 2], [2, 2], Padding::Same),
                ),
                (
                    "2x3 stride 1x2 same",
                    PoolGeom::new([5, 6, channels], [2, 3], [1, 2], Padding::Same),
                ),
                (
                    "4x4 stride 3 same",
                    PoolGeom::new([7, 9, channels], [4, 4], [3, 3], Padding::Same),
                ),
                (
                    "16x16, index 255",
                    PoolGeom::new([17, 17, channels], [16, 16], [1, 1], Padding::Valid),
                ),
            ] {
                // Few levels, so ties are common and the first-maximum rule is exercised.
                let mut x = values(n * g.in_len(), 3 + channels as u64)
                    .iter()
                    .map(|v| (v * 4.0).round() as f32 * 0.25)
                    .collect::<Vec<f32>>();
                if name.starts_with("16x16") {
                    // A maximum at the last pixel of the first window: position 255.
                    x[(15 * g.w + 15) * channels] = 2.0;
                }
                let dy: Vec<f32> = values(n * g.out_len(), 5)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let (y_ref, pos_ref, dx_ref) = reference_maxpool(&g, n, &x, &dy);
                let run = |threads: usize| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                        .install(|| {
                            let mut y = vec![0.0; n * g.out_len()];
                            let mut am = vec![0u8; y.len()];
                            maxpool_forward(&g, &x, &mut y, Some(&mut am));
                            let mut dx = vec![f32::NAN; x.len()];
                            maxpool_backward(&g, &dy, &am, &mut dx);
                            (y, am, dx)
                        })
                };
                let (y, am, dx) = run(1);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&y),
                    bits(&y_ref),
                    "{name}, {channels} channels: forward"
                );
                assert_eq!(
                    bits(&dx),
                    bits(&dx_ref),
                    "{name}, {channels} channels: backward"
                );
                // The stored byte is the position in the unclipped window, origin in the padding.
                for (o, (&a, &p)) in am.iter().zip(&pos_ref).enumerate() {
                    let pixel = o % g.out_len() / channels;
                    let (y0, x0) = g.origin(pixel / g.ow, pixel % g.ow);
                    let (iy, ix) = ((p / channels / g.w) as isize, (p / channels % g.w) as isize);
                    let expect = (iy - y0) as usize * g.kw + (ix - x0) as usize;
                    assert_eq!(
                        a as usize, expect,
                        "{name}, {channels} channels: index at {o}"
                    );
                }
                if name.starts_with("16x16") {
                    assert_eq!(am[0], 255, "the last window position is reachable");
                }
                assert_eq!(
                    run(3),
                    (y, am, dx),
                    "{name}, {channels} channels: 3 threads"
                );
            }
        }
    }

    #[test]
    fn same_avgpool_averages_real_pixels_only() {
        let g = PoolGeom::new([3, 3, 1], [2, 2], [2, 2], Padding::Same);
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let mut y = vec![0.0; 4];
        avgpool_forward(&g, &x, &mut y);
        assert_eq!(y, vec![3.0, 4.5, 7.5, 9.0]);
    }

    #[test]
    fn global_avgpool_gradient() {
        let (n, px, c) = (2, 5, 3);
        let x = values(n * px * c, 1);
        let r = values(n * c, 2);
        let mut dx = vec![0.0; x.len()];
        global_avgpool_backward(px, c, &r, &mut dx);
        assert_gradient("global avg pool", &x, &dx, |x| {
            let mut y = vec![0.0; n * c];
            global_avgpool_forward(px, c, x, &mut y);
            dot(&y, &r)
        });
    }
}
