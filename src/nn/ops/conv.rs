//! 2-D convolution (stride, Keras valid/same padding incl. asymmetric, dilation, groups and
//! depthwise) by im2col + GEMM, forward and backward.
//!
//! Per sample, im2col writes one row per output pixel holding the (ky, kx, channel) patch,
//! which is exactly the row order of a Keras HWIO kernel seen as a [kh·kw·cin, cout] matrix,
//! so the product needs no transposition. Several small-map samples share one GEMM (up to
//! `GEMM_ROWS` rows) so deep layers with 4×4 outputs still get efficient products.

use super::super::gemm::{gemm, MatRef};
use super::super::ir::Padding;
use super::super::real::Real;
use super::{axis_geometry, samples_per_part};
use rayon::prelude::*;

/// Rows (output pixels) of one im2col GEMM before a chunk of samples is split.
const GEMM_ROWS: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub filters: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub groups: usize,
}

impl ConvGeom {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: [usize; 3],
        filters: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        dilation: [usize; 2],
        groups: usize,
    ) -> ConvGeom {
        let [h, w, c] = input;
        let eff_h = dilation[0] * (kernel[0] - 1) + 1;
        let eff_w = dilation[1] * (kernel[1] - 1) + 1;
        let (oh, pad_top) = axis_geometry(h, eff_h, stride[0], padding);
        let (ow, pad_left) = axis_geometry(w, eff_w, stride[1], padding);
        ConvGeom {
            h,
            w,
            c,
            oh,
            ow,
            filters,
            kh: kernel[0],
            kw: kernel[1],
            sh: stride[0],
            sw: stride[1],
            dh: dilation[0],
            dw: dilation[1],
            pad_top,
            pad_left,
            groups,
        }
    }
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn fg(&self) -> usize {
        self.filters / self.groups
    }
    /// Patch length of one group: rows of that group's kernel matrix.
    fn patch(&self) -> usize {
        self.kh * self.kw * self.cg()
    }
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.c
    }
    pub fn out_len(&self) -> usize {
        self.pixels() * self.filters
    }
    pub fn kernel_len(&self) -> usize {
        self.patch() * self.filters
    }
    /// Samples per GEMM within a part.
    fn chunk(&self, per_part: usize) -> usize {
        (GEMM_ROWS / self.pixels().max(1)).clamp(1, per_part)
    }

    /// Writes the im2col rows of `group` for one sample into `cols` ([pixels, patch]).
    fn im2col<T: Real>(&self, group: usize, x: &[T], cols: &mut [T]) {
        let (cg, patch) = (self.cg(), self.patch());
        let c0 = group * cg;
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &mut cols[(oy * self.ow + ox) * patch..][..patch];
                for ky in 0..self.kh {
                    let iy = (oy * self.sh + ky * self.dh) as isize - self.pad_top as isize;
                    for kx in 0..self.kw {
                        let ix = (ox * self.sw + kx * self.dw) as isize - self.pad_left as isize;
                        let dst = &mut row[(ky * self.kw + kx) * cg..][..cg];
                        if iy < 0 || ix < 0 || iy as usize >= self.h || ix as usize >= self.w {
                            dst.fill(T::ZERO);
                        } else {
                            let src = (iy as usize * self.w + ix as usize) * self.c + c0;
                            dst.copy_from_slice(&x[src..src + cg]);
                        }
                    }
                }
            }
        }
    }

    /// Adds im2col-shaped gradients back onto one sample's input gradient.
    fn col2im<T: Real>(&self, group: usize, cols: &[T], dx: &mut [T]) {
        let (cg, patch) = (self.cg(), self.patch());
        let c0 = group * cg;
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &cols[(oy * self.ow + ox) * patch..][..patch];
                for ky in 0..self.kh {
                    let iy = (oy * self.sh + ky * self.dh) as isize - self.pad_top as isize;
                    if iy < 0 || iy as usize >= self.h {
                        continue;
                    }
                    for kx in 0..self.kw {
                        let ix = (ox * self.sw + kx * self.dw) as isize - self.pad_left as isize;
                        if ix < 0 || ix as usize >= self.w {
                            continue;
                        }
                        let src = &row[(ky * self.kw + kx) * cg..][..cg];
                        let dst =
                            &mut dx[(iy as usize * self.w + ix as usize) * self.c + c0..][..cg];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// One part's inputs (x, dy) and outputs (scratch, dx) in the backward pass.
type PartWork<'a, T> = ((&'a [T], &'a [T]), (&'a mut ConvPart<T>, &'a mut [T]));

/// Per-part buffers, allocated once per (model, batch size, mode) and reused every step.
pub struct ConvScratch<T> {
    parts: Vec<ConvPart<T>>,
}

struct ConvPart<T> {
    cols: Vec<T>,
    dkernel: Vec<T>,
    dbias: Vec<T>,
}

impl<T: Real> ConvScratch<T> {
    pub fn new(g: &ConvGeom, n: usize, backward: bool) -> Self {
        let per_part = samples_per_part(n);
        let parts = n.div_ceil(per_part);
        let cols = g.chunk(per_part) * g.pixels() * g.patch();
        let parts = (0..parts)
            .map(|_| ConvPart {
                cols: vec![T::ZERO; cols],
                dkernel: if backward {
                    vec![T::ZERO; g.kernel_len()]
                } else {
                    Vec::new()
                },
                dbias: if backward {
                    vec![T::ZERO; g.filters]
                } else {
                    Vec::new()
                },
            })
            .collect();
        ConvScratch { parts }
    }

    pub fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| (p.cols.len() + p.dkernel.len() + p.dbias.len()) * std::mem::size_of::<T>())
            .sum()
    }
}

/// What a convolution applies to each finished part of its output while it is in cache
/// (whole output pixels of whole samples): the inference path fuses activation and batchnorm.
pub type Epilogue<'a, T> = &'a (dyn Fn(&mut [T]) + Sync);

/// y = conv(x, kernel) + bias for a batch of `n`; `y` is [n, oh, ow, filters]. With an
/// epilogue, each part of `y` goes through it as soon as it is computed.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    y: &mut [T],
    scratch: &mut ConvScratch<T>,
    epilogue: Option<Epilogue<T>>,
) {
    let per_part = samples_per_part(n);
    let chunk = g.chunk(per_part);
    let (pixels, patch, fg, f) = (g.pixels(), g.patch(), g.fg(), g.filters);
    x.par_chunks(per_part * g.in_len())
        .zip(y.par_chunks_mut(per_part * g.out_len()))
        .zip(scratch.parts.par_iter_mut())
        .for_each(|((xp, yp), part)| {
            for row in yp.chunks_mut(f) {
                row.copy_from_slice(bias);
            }
            let samples = xp.len() / g.in_len();
            for s0 in (0..samples).step_by(chunk) {
                let s1 = (s0 + chunk).min(samples);
                let rows = (s1 - s0) * pixels;
                for group in 0..g.groups {
                    for s in s0..s1 {
                        g.im2col(
                            group,
                            &xp[s * g.in_len()..][..g.in_len()],
                            &mut part.cols[(s - s0) * pixels * patch..][..pixels * patch],
                        );
                    }
                    gemm(
                        rows,
                        patch,
                        fg,
                        MatRef::rows(&part.cols, patch),
                        MatRef::rows(&kernel[group * fg..], f),
                        &mut yp[s0 * pixels * f + group * fg..],
                        f,
                        true,
                        1,
                    );
                }
                if let Some(epilogue) = epilogue {
                    epilogue(&mut yp[s0 * pixels * f..s1 * pixels * f]);
                }
            }
        });
}

/// Gradients of conv2d given `dy` (already through the activation). Each output is optional:
/// frozen layers skip the kernel/bias products, the first layer skips the input gradient.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    let per_part = samples_per_part(n);
    let chunk = g.chunk(per_part);
    let (pixels, patch, fg, f) = (g.pixels(), g.patch(), g.fg(), g.filters);
    let want_params = params.is_some();
    let mut empty: Vec<T> = Vec::new();
    let (dx_all, dx_stride) = match dx {
        Some(d) => (d, per_part * g.in_len()),
        None => (empty.as_mut_slice(), 0),
    };
    let work = |((xp, dyp), (part, dxp)): PartWork<T>| {
        if want_params {
            part.dkernel.fill(T::ZERO);
            part.dbias.fill(T::ZERO);
            for row in dyp.chunks(f) {
                for (b, d) in part.dbias.iter_mut().zip(row) {
                    *b += *d;
                }
            }
        }
        dxp.fill(T::ZERO);
        let samples = xp.len() / g.in_len();
        for s0 in (0..samples).step_by(chunk) {
            let s1 = (s0 + chunk).min(samples);
            let rows = (s1 - s0) * pixels;
            let dy_chunk = &dyp[s0 * pixels * f..];
            for group in 0..g.groups {
                if want_params {
                    for s in s0..s1 {
                        g.im2col(
                            group,
                            &xp[s * g.in_len()..][..g.in_len()],
                            &mut part.cols[(s - s0) * pixels * patch..][..pixels * patch],
                        );
                    }
                    // dK[patch, fg] += cols^T [patch, rows] × dy [rows, fg]
                    gemm(
                        patch,
                        rows,
                        fg,
                        MatRef::rows(&part.cols, patch).t(),
                        MatRef::rows(&dy_chunk[group * fg..], f),
                        &mut part.dkernel[group * fg..],
                        f,
                        true,
                        1,
                    );
                }
                if !dxp.is_empty() {
                    // dcols[rows, patch] = dy [rows, fg] × K^T [fg, patch]
                    gemm(
                        rows,
                        fg,
                        patch,
                        MatRef::rows(&dy_chunk[group * fg..], f),
                        MatRef::rows(&kernel[group * fg..], f).t(),
                        &mut part.cols,
                        patch,
                        false,
                        1,
                    );
                    for s in s0..s1 {
                        g.col2im(
                            group,
                            &part.cols[(s - s0) * pixels * patch..][..pixels * patch],
                            &mut dxp[s * g.in_len()..][..g.in_len()],
                        );
                    }
                }
            }
        }
    };
    let parts = scratch.parts.len();
    if dx_stride > 0 {
        x.par_chunks(per_part * g.in_len())
            .zip(dy.par_chunks(per_part * g.out_len()))
            .zip(
                scratch
                    .parts
                    .par_iter_mut()
                    .zip(dx_all.par_chunks_mut(dx_stride)),
            )
            .for_each(work);
    } else {
        let mut empties: Vec<&mut [T]> = Vec::with_capacity(parts);
        for _ in 0..parts {
            empties.push(&mut []);
        }
        x.par_chunks(per_part * g.in_len())
            .zip(dy.par_chunks(per_part * g.out_len()))
            .zip(scratch.parts.par_iter_mut().zip(empties.into_par_iter()))
            .for_each(work);
    }
    if let Some((dkernel, dbias)) = params {
        dkernel.fill(T::ZERO);
        dbias.fill(T::ZERO);
        for part in &scratch.parts {
            for (a, b) in dkernel.iter_mut().zip(&part.dkernel) {
                *a += *b;
            }
            for (a, b) in dbias.iter_mut().zip(&part.dbias) {
                *a += *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    /// Direct definition of the convolution, for checking im2col.
    fn naive(g: &ConvGeom, n: usize, x: &[f64], k: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; n * g.out_len()];
        let (cg, fg) = (g.c / g.groups, g.filters / g.groups);
        for s in 0..n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for o in 0..g.filters {
                        let group = o / fg;
                        let mut acc = b[o];
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.sh + ky * g.dh) as isize - g.pad_top as isize;
                                let ix = (ox * g.sw + kx * g.dw) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                for ci in 0..cg {
                                    let xv = x[s * g.in_len()
                                        + (iy as usize * g.w + ix as usize) * g.c
                                        + group * cg
                                        + ci];
                                    acc += xv * k[((ky * g.kw + kx) * cg + ci) * g.filters + o];
                                }
                            }
                        }
                        y[s * g.out_len() + (oy * g.ow + ox) * g.filters + o] = acc;
                    }
                }
            }
        }
        y
    }

    fn check(name: &str, g: ConvGeom, n: usize) {
        let x = values(n * g.in_len(), 1);
        let k = values(g.kernel_len(), 2);
        let b = values(g.filters, 3);
        let r = values(n * g.out_len(), 4);
        let mut scratch = ConvScratch::<f64>::new(&g, n, true);
        let mut y = vec![0.0; n * g.out_len()];
        conv2d_forward(&g, n, &x, &k, &b, &mut y, &mut scratch, None);
        let want = naive(&g, n, &x, &k, &b);
        for (a, w) in y.iter().zip(&want) {
            assert!((a - w).abs() < 1e-12, "{name}: forward {a} vs {w}");
        }
        let mut dx = vec![0.0; x.len()];
        let mut dk = vec![0.0; k.len()];
        let mut db = vec![0.0; b.len()];
        conv2d_backward(
            &g,
            n,
            &x,
            &k,
            &r,
            Some(&mut dx),
            Some((&mut dk, &mut db)),
            &mut scratch,
        );
        assert_gradient(&format!("{name} dx"), &x, &dx, |x| {
            dot(&naive(&g, n, x, &k, &b), &r)
        });
        assert_gradient(&format!("{name} dkernel"), &k, &dk, |k| {
            dot(&naive(&g, n, &x, k, &b), &r)
        });
        assert_gradient(&format!("{name} dbias"), &b, &db, |b| {
            dot(&naive(&g, n, &x, &k, b), &r)
        });
        // Frozen layer path: only dx, same values.
        let mut dx2 = vec![0.0; x.len()];
        conv2d_backward(&g, n, &x, &k, &r, Some(&mut dx2), None, &mut scratch);
        assert_eq!(dx, dx2, "{name}: dx without parameter gradients");
    }

    #[test]
    fn conv_gradients_match_finite_differences() {
        check(
            "valid 3x3",
            ConvGeom::new([5, 6, 3], 4, [3, 3], [1, 1], Padding::Valid, [1, 1], 1),
            3,
        );
        check(
            "same stride 2 odd",
            ConvGeom::new([7, 5, 2], 3, [3, 3], [2, 2], Padding::Same, [1, 1], 1),
            2,
        );
        check(
            "same even kernel asymmetric",
            ConvGeom::new([6, 6, 2], 2, [4, 2], [1, 1], Padding::Same, [1, 1], 1),
            2,
        );
        check(
            "dilated",
            ConvGeom::new([9, 8, 2], 3, [3, 3], [1, 2], Padding::Valid, [2, 2], 1),
            2,
        );
        check(
            "grouped",
            ConvGeom::new([5, 5, 4], 6, [3, 3], [1, 1], Padding::Same, [1, 1], 2),
            2,
        );
        check(
            "depthwise",
            ConvGeom::new([6, 5, 3], 3, [3, 3], [2, 1], Padding::Same, [1, 1], 3),
            9,
        );
    }

    #[test]
    fn same_padding_is_keras_asymmetric() {
        // TensorFlow: in 6, kernel 4, stride 1 → total pad 3: 1 before, 2 after.
        let g = ConvGeom::new([6, 6, 1], 1, [4, 4], [1, 1], Padding::Same, [1, 1], 1);
        assert_eq!((g.oh, g.pad_top), (6, 1));
        // in 7, kernel 3, stride 2 → out 4, total pad 2: 1 before.
        let g = ConvGeom::new([7, 7, 1], 1, [3, 3], [2, 2], Padding::Same, [1, 1], 1);
        assert_eq!((g.oh, g.pad_top), (4, 1));
    }
}
