//! Max pooling (argmax stored in the forward pass; first maximum wins ties, like PyTorch),
//! average pooling (Keras "same" averages only the real pixels) and global average pooling.

use super::super::ir::Padding;
use super::super::real::Real;
use super::axis_geometry;
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
    /// The in-bounds input rows and columns of output pixel (oy, ox).
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let y0 = (oy * self.sh) as isize - self.pad_top as isize;
        let x0 = (ox * self.sw) as isize - self.pad_left as isize;
        let ys = y0.max(0) as usize..((y0 + self.kh as isize).min(self.h as isize)) as usize;
        let xs = x0.max(0) as usize..((x0 + self.kw as isize).min(self.w as isize)) as usize;
        (ys, xs)
    }
}

/// Max over each window. With `argmax` (training) it also records, per output element, the
/// index inside the sample of the first maximum in scan order (ties go to the first, like
/// PyTorch); without it (inference) it is a plain vectorisable max.
pub fn maxpool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T], argmax: Option<&mut [u32]>) {
    let c = g.c;
    match argmax {
        None => x
            .par_chunks(g.in_len())
            .zip(y.par_chunks_mut(g.out_len()))
            .for_each(|(xs, ys)| {
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
            }),
        Some(argmax) => x
            .par_chunks(g.in_len())
            .zip(
                y.par_chunks_mut(g.out_len())
                    .zip(argmax.par_chunks_mut(g.out_len())),
            )
            .for_each(|(xs, (ys, am))| {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = (oy * g.ow + ox) * c;
                        let (yr, ar) = (&mut ys[o..o + c], &mut am[o..o + c]);
                        let (rows, cols) = g.window(oy, ox);
                        let mut first = true;
                        for iy in rows {
                            for ix in cols.clone() {
                                let base = (iy * g.w + ix) * c;
                                let xr = &xs[base..base + c];
                                if first {
                                    yr.copy_from_slice(xr);
                                    for (ch, a) in ar.iter_mut().enumerate() {
                                        *a = (base + ch) as u32;
                                    }
                                    first = false;
                                    continue;
                                }
                                // Strict `>` keeps the first maximum; selects, not branches,
                                // because random data mispredicts half of them.
                                let base32 = base as u32;
                                for (ch, ((yv, av), xv)) in
                                    yr.iter_mut().zip(ar.iter_mut()).zip(xr).enumerate()
                                {
                                    let greater = *xv > *yv;
                                    *yv = if greater { *xv } else { *yv };
                                    *av = if greater { base32 + ch as u32 } else { *av };
                                }
                            }
                        }
                    }
                }
            }),
    }
}

/// Training backward: scatter through the stored argmax.
pub fn maxpool_backward<T: Real>(g: &PoolGeom, dy: &[T], argmax: &[u32], dx: &mut [T]) {
    dx.par_chunks_mut(g.in_len())
        .zip(
            dy.par_chunks(g.out_len())
                .zip(argmax.par_chunks(g.out_len())),
        )
        .for_each(|(dxs, (dys, am))| {
            dxs.fill(T::ZERO);
            for (d, &a) in dys.iter().zip(am) {
                dxs[a as usize] += *d;
            }
        });
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
