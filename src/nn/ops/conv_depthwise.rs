//! Depthwise convolution (one filter per input channel: groups = channels = filters), forward,
//! input gradient and parameter gradients, for any kernel size, stride, dilation and Keras
//! valid/same padding.
//!
//! On the im2col path a depthwise layer is one GEMM per channel with K = kh·kw and a single
//! output column: all copying and no arithmetic. The work is memory-bound (kh·kw multiply-adds
//! per value read), so here it is a plain loop over output pixels with the channels innermost
//! (NHWC), vectorised across channels in blocks of `CW`, and no copy of the input at all:
//! the taps that fall inside the image are listed per output row and per output column
//! (`Taps`), so padding costs nothing and needs no branch in the inner loop.
//!
//! The input gradient is the same gather with the roles swapped: each input pixel sums the
//! output gradients of the pixels whose windows cover it (listed per input row and column,
//! which handles stride and dilation), so each value of dx is written once, never
//! read-modified-written. The kernel gradient sums x · dy over each output row for one tap
//! and one block of channels in registers (four pixels at a time in four accumulators), and
//! adds each row's sum into the part's total.
//!
//! The forward pass and the input gradient split the batch's rows into tasks (every value
//! computed by the same arithmetic whatever the split), so even a batch of one uses both cores;
//! the parameter gradients are per part of the batch and added in part order by `conv.rs`.
//! Like `conv_direct.rs`, every loop is compiled twice, for baseline x86-64 and for AVX2 + FMA,
//! and chosen at run time (`Isa`). Its time counts as the convolution's product in the
//! bench's profile (`gemm::timed_product`), as the GEMMs it replaces did.

use super::super::gemm::timed_product;
use super::super::real::Real;
use super::conv::{ConvGeom, Epilogue};
use rayon::prelude::*;

/// Channels per vector block (two AVX registers of f32); the rest go 8 then 1 at a time.
const CW: usize = 16;
/// Output pixels summed in separate accumulators in the kernel gradient, and output pixels
/// computed together (sharing each tap's kernel load) in the gather passes.
const PX: usize = 4;
/// Values of output per rayon task in the row-parallel passes (at least one row).
const TASK_VALUES: usize = 16 * 1024;

/// Whether the engine computes a geometry by this kernel: depthwise with a channel
/// multiplier of one. Other grouped convolutions stay on im2col.
pub fn is_depthwise(g: &ConvGeom) -> bool {
    g.groups > 1 && g.groups == g.c && g.filters == g.c
}

/// The instruction set the loops run with. Only `native` can select AVX2 + FMA, and only
/// where the CPU has them, so the unsafe calls below are sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa {
    fma: bool,
}

impl Isa {
    /// Baseline x86-64 (or any other target): separate multiply and add.
    pub const SCALAR: Isa = Isa { fma: false };

    /// AVX2 + FMA where the CPU has them, otherwise `SCALAR`.
    pub fn native() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa { fma: true };
        }
        Isa::SCALAR
    }

    /// Every instruction set this CPU can run (the tests check each).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::SCALAR];
        if Isa::native() != Isa::SCALAR {
            out.push(Isa::native());
        }
        out
    }

    pub fn name(self) -> &'static str {
        if self.fma {
            "avx2+fma"
        } else {
            "baseline"
        }
    }
}

/// For each position along one axis of the output, the (kernel index, source position)
/// pairs that fall inside the source, in kernel order. Stored flat (CSR).
struct Taps {
    start: Vec<usize>,
    pairs: Vec<(usize, usize)>,
    /// `Some(shift)` where positions p .. p + PX have the same kernel indices and their
    /// sources advance by `shift` per position: a block the gather computes together.
    block: Vec<Option<usize>>,
}

impl Taps {
    /// Forward taps: output o reads source o·stride + k·dilation − pad for each k in range.
    fn forward(out: usize, src: usize, k: usize, stride: usize, dil: usize, pad: usize) -> Taps {
        Taps::collect(out, |o, pairs| {
            for ki in 0..k {
                let i = (o * stride + ki * dil) as isize - pad as isize;
                if i >= 0 && (i as usize) < src {
                    pairs.push((ki, i as usize));
                }
            }
        })
    }

    /// Backward taps: input i receives from every output o with o·stride + k·dilation − pad = i.
    fn backward(inp: usize, out: usize, k: usize, stride: usize, dil: usize, pad: usize) -> Taps {
        Taps::collect(inp, |i, pairs| {
            for ki in 0..k {
                let t = (i + pad) as isize - (ki * dil) as isize;
                if t >= 0 && (t as usize).is_multiple_of(stride) && (t as usize / stride) < out {
                    pairs.push((ki, t as usize / stride));
                }
            }
        })
    }

    fn collect(len: usize, mut each: impl FnMut(usize, &mut Vec<(usize, usize)>)) -> Taps {
        let mut start = Vec::with_capacity(len + 1);
        let mut pairs = Vec::new();
        for p in 0..len {
            start.push(pairs.len());
            each(p, &mut pairs);
        }
        start.push(pairs.len());
        let mut taps = Taps {
            start,
            pairs,
            block: Vec::new(),
        };
        taps.block = (0..len).map(|p| taps.regular_from(p)).collect();
        taps
    }

    fn regular_from(&self, p: usize) -> Option<usize> {
        if p + PX > self.start.len() - 1 {
            return None;
        }
        let first = self.of(p);
        let (&(_, s0), &(_, s1)) = (first.first()?, self.of(p + 1).first()?);
        let shift = s1.checked_sub(s0)?;
        (1..PX)
            .all(|q| {
                let other = self.of(p + q);
                other.len() == first.len()
                    && other
                        .iter()
                        .zip(first)
                        .all(|(&(k, s), &(k0, s0))| k == k0 && s == s0 + q * shift)
            })
            .then_some(shift)
    }

    fn of(&self, p: usize) -> &[(usize, usize)] {
        &self.pairs[self.start[p]..self.start[p + 1]]
    }
}

/// One gather pass: out[s, r, q, c] = init[c] + Σ_(ky, sy) Σ_(kx, sx) src[s, sy, sx, c] ·
/// kernel[ky, kx, c], over `rows` × `cols` per sample. The forward pass and the input gradient.
struct Gather<'a, T> {
    rows: Taps,
    cols: Taps,
    /// Values per source sample and per source row.
    src_sample: usize,
    src_row: usize,
    out_rows: usize,
    out_cols: usize,
    c: usize,
    kw: usize,
    kernel: &'a [T],
    init: Option<&'a [T]>,
}

impl<T: Real> Gather<'_, T> {
    /// Output rows `first ..` (counted across the batch) into `out`, a whole number of rows.
    fn rows(&self, isa: Isa, src: &[T], first: usize, out: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if isa.fma {
            // SAFETY: `Isa { fma: true }` is only built where the CPU has AVX2 and FMA.
            return unsafe { self.rows_fma(src, first, out) };
        }
        let _ = isa;
        self.rows_body::<false>(src, first, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_fma(&self, src: &[T], first: usize, out: &mut [T]) {
        self.rows_body::<true>(src, first, out)
    }

    #[inline(always)]
    fn rows_body<const FMA: bool>(&self, src: &[T], first: usize, out: &mut [T]) {
        let (c, row_len) = (self.c, self.out_cols * self.c);
        for (i, row) in out.chunks_mut(row_len).enumerate() {
            let (s, r) = ((first + i) / self.out_rows, (first + i) % self.out_rows);
            let src = &src[s * self.src_sample..][..self.src_sample];
            let ys = self.rows.of(r);
            let mut q = 0;
            while q < self.out_cols {
                let xs = self.cols.of(q);
                let o = &mut row[q * c..];
                let n = match self.cols.block[q] {
                    Some(shift) => {
                        self.channels::<FMA, PX>(src, ys, xs, shift, o);
                        PX
                    }
                    None => {
                        self.channels::<FMA, 1>(src, ys, xs, 0, o);
                        1
                    }
                };
                q += n;
            }
        }
    }

    /// All channels of `P` output pixels whose column taps are `xs` shifted by `shift` source
    /// columns per pixel, block by block of channels.
    #[inline(always)]
    fn channels<const FMA: bool, const P: usize>(
        &self,
        src: &[T],
        ys: &[(usize, usize)],
        xs: &[(usize, usize)],
        shift: usize,
        out: &mut [T],
    ) {
        let c = self.c;
        let mut c0 = 0;
        while c0 + CW <= c {
            self.pixels::<FMA, P, CW>(src, ys, xs, shift, c0, out);
            c0 += CW;
        }
        if c0 + 8 <= c {
            self.pixels::<FMA, P, 8>(src, ys, xs, shift, c0, out);
            c0 += 8;
        }
        while c0 < c {
            self.pixels::<FMA, P, 1>(src, ys, xs, shift, c0, out);
            c0 += 1;
        }
    }

    /// Channels `c0 .. c0 + W` of `P` output pixels.
    #[inline(always)]
    fn pixels<const FMA: bool, const P: usize, const W: usize>(
        &self,
        src: &[T],
        ys: &[(usize, usize)],
        xs: &[(usize, usize)],
        shift: usize,
        c0: usize,
        out: &mut [T],
    ) {
        let c = self.c;
        let mut acc = [match self.init {
            Some(init) => *block::<T, W>(init, c0),
            None => [T::ZERO; W],
        }; P];
        for &(ky, sy) in ys {
            let src_row = &src[sy * self.src_row..][..self.src_row];
            let k_row = &self.kernel[ky * self.kw * c..][..self.kw * c];
            for &(kx, sx) in xs {
                let k = block::<T, W>(k_row, kx * c + c0);
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = block::<T, W>(src_row, (sx + p * shift) * c + c0);
                    for j in 0..W {
                        a[j] = madd::<T, FMA>(v[j], k[j], a[j]);
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            out[p * c + c0..][..W].copy_from_slice(a);
        }
    }
}

#[inline(always)]
fn block<T: Real, const W: usize>(v: &[T], at: usize) -> &[T; W] {
    v[at..at + W].try_into().expect("W-long slice")
}

#[inline(always)]
fn madd<T: Real, const FMA: bool>(a: T, b: T, acc: T) -> T {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// Output rows per task for `total` rows of `row_len` values: at least `TASK_VALUES` values.
fn rows_per_task(total: usize, row_len: usize) -> usize {
    TASK_VALUES.div_ceil(row_len.max(1)).clamp(1, total.max(1))
}

/// y = depthwise(x, kernel) + bias for a batch of `n` ([n, oh, ow, c]); each task's rows go
/// through `epilogue` while in cache.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Real>(
    isa: Isa,
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    y: &mut [T],
    epilogue: Option<Epilogue<T>>,
) {
    assert!(is_depthwise(g), "depthwise geometry");
    let gather = Gather {
        rows: Taps::forward(g.oh, g.h, g.kh, g.sh, g.dh, g.pad_top),
        cols: Taps::forward(g.ow, g.w, g.kw, g.sw, g.dw, g.pad_left),
        src_sample: g.in_len(),
        src_row: g.w * g.c,
        out_rows: g.oh,
        out_cols: g.ow,
        c: g.c,
        kw: g.kw,
        kernel,
        init: Some(bias),
    };
    let row_len = g.ow * g.c;
    let per_task = rows_per_task(n * g.oh, row_len);
    y[..n * g.out_len()]
        .par_chunks_mut(per_task * row_len)
        .enumerate()
        .for_each(|(t, out)| {
            timed_product(|| gather.rows(isa, x, t * per_task, out));
            if let Some(epilogue) = epilogue {
                epilogue(t * per_task * g.ow, out);
            }
        });
}

/// dx = ∂(Σ y · dy)/∂x for a batch of `n`: overwrites `dx` ([n, h, w, c]).
pub fn backward_input<T: Real>(
    isa: Isa,
    g: &ConvGeom,
    n: usize,
    kernel: &[T],
    dy: &[T],
    dx: &mut [T],
) {
    assert!(is_depthwise(g), "depthwise geometry");
    let gather = Gather {
        rows: Taps::backward(g.h, g.oh, g.kh, g.sh, g.dh, g.pad_top),
        cols: Taps::backward(g.w, g.ow, g.kw, g.sw, g.dw, g.pad_left),
        src_sample: g.out_len(),
        src_row: g.ow * g.c,
        out_rows: g.h,
        out_cols: g.w,
        c: g.c,
        kw: g.kw,
        kernel,
        init: None,
    };
    let row_len = g.w * g.c;
    let per_task = rows_per_task(n * g.h, row_len);
    dx[..n * g.in_len()]
        .par_chunks_mut(per_task * row_len)
        .enumerate()
        .for_each(|(t, out)| timed_product(|| gather.rows(isa, dy, t * per_task, out)));
}

/// Adds the kernel gradient ([kh, kw, 1, c]) and bias gradient of the samples in `x` / `dy`
/// (whole samples, one part of the batch) onto `dkernel` and `dbias`, in sample order.
pub fn params_part<T: Real>(
    isa: Isa,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dkernel: &mut [T],
    dbias: &mut [T],
) {
    assert!(is_depthwise(g), "depthwise geometry");
    // The bias gradient summed over each output row, then the rows added into `dbias`:
    // shorter rounding chains than one sum over the part.
    let mut row_sum = vec![T::ZERO; g.c];
    for row in dy.chunks(g.ow * g.c) {
        row_sum.fill(T::ZERO);
        for pixel in row.chunks(g.c) {
            for (b, d) in row_sum.iter_mut().zip(pixel) {
                *b += *d;
            }
        }
        for (b, r) in dbias.iter_mut().zip(&row_sum) {
            *b += *r;
        }
    }
    for (xs, dys) in x.chunks(g.in_len()).zip(dy.chunks(g.out_len())) {
        dkernel_sample(isa, g, xs, dys, dkernel);
    }
}

fn dkernel_sample<T: Real>(isa: Isa, g: &ConvGeom, x: &[T], dy: &[T], dkernel: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if isa.fma {
        // SAFETY: `Isa { fma: true }` is only built where the CPU has AVX2 and FMA.
        return unsafe { dkernel_sample_fma(g, x, dy, dkernel) };
    }
    let _ = isa;
    dkernel_sample_body::<T, false>(g, x, dy, dkernel)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dkernel_sample_fma<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dkernel: &mut [T]) {
    dkernel_sample_body::<T, true>(g, x, dy, dkernel)
}

/// The output columns whose tap `kx` falls inside the input: `ox0 .. ox1`.
fn col_range(g: &ConvGeom, kx: usize) -> (usize, usize) {
    let off = kx * g.dw;
    // ix = ox·sw + off − pad_left must lie in 0 .. w.
    let lo = g.pad_left.saturating_sub(off).div_ceil(g.sw);
    let hi = (g.w + g.pad_left)
        .saturating_sub(off)
        .div_ceil(g.sw)
        .min(g.ow);
    (lo, hi.max(lo))
}

#[inline(always)]
fn dkernel_sample_body<T: Real, const FMA: bool>(
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dkernel: &mut [T],
) {
    let ranges: Vec<(usize, usize)> = (0..g.kw).map(|kx| col_range(g, kx)).collect();
    let c = g.c;
    for oy in 0..g.oh {
        let dy_row = &dy[oy * g.ow * c..][..g.ow * c];
        let mut c0 = 0;
        while c0 + CW <= c {
            dkernel_row::<T, FMA, CW>(g, x, dy_row, oy, c0, &ranges, dkernel);
            c0 += CW;
        }
        if c0 + 8 <= c {
            dkernel_row::<T, FMA, 8>(g, x, dy_row, oy, c0, &ranges, dkernel);
            c0 += 8;
        }
        while c0 < c {
            dkernel_row::<T, FMA, 1>(g, x, dy_row, oy, c0, &ranges, dkernel);
            c0 += 1;
        }
    }
}

/// Every tap × channels `c0 .. c0 + W`, summed over output row `oy`, added onto `dkernel`.
#[inline(always)]
fn dkernel_row<T: Real, const FMA: bool, const W: usize>(
    g: &ConvGeom,
    x: &[T],
    dy_row: &[T],
    oy: usize,
    c0: usize,
    ranges: &[(usize, usize)],
    dkernel: &mut [T],
) {
    let c = g.c;
    for ky in 0..g.kh {
        let iy = (oy * g.sh + ky * g.dh) as isize - g.pad_top as isize;
        if iy < 0 || iy as usize >= g.h {
            continue;
        }
        let x_row = &x[iy as usize * g.w * c..][..g.w * c];
        for (kx, &(lo, hi)) in ranges.iter().enumerate() {
            // x column of output column ox: ox·sw + kx·dw − pad_left (≥ 0 from lo on).
            let base = kx * g.dw;
            let at = |ox: usize| (ox * g.sw + base - g.pad_left) * c + c0;
            let mut acc = [[T::ZERO; W]; PX];
            let mut ox = lo;
            while ox + PX <= hi {
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = block::<T, W>(x_row, at(ox + p));
                    let d = block::<T, W>(dy_row, (ox + p) * c + c0);
                    for j in 0..W {
                        a[j] = madd::<T, FMA>(v[j], d[j], a[j]);
                    }
                }
                ox += PX;
            }
            while ox < hi {
                let v = block::<T, W>(x_row, at(ox));
                let d = block::<T, W>(dy_row, ox * c + c0);
                for j in 0..W {
                    acc[0][j] = madd::<T, FMA>(v[j], d[j], acc[0][j]);
                }
                ox += 1;
            }
            let dk = &mut dkernel[(ky * g.kw + kx) * c + c0..][..W];
            for j in 0..W {
                dk[j] += (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::ir::Padding;
    use super::super::check::{assert_gradient, dot, values};
    use super::super::conv::{conv2d_backward_by, conv2d_forward_by, ConvMethod, ConvScratch};
    use super::*;

    /// The grouped im2col path, the reference: y, dx, dkernel, dbias.
    fn im2col(g: &ConvGeom, n: usize, x: &[f64], k: &[f64], b: &[f64], r: &[f64]) -> [Vec<f64>; 4] {
        let mut scratch = ConvScratch::<f64>::new(g, n, true);
        let mut y = vec![0.0; n * g.out_len()];
        conv2d_forward_by(
            ConvMethod::Im2col,
            g,
            n,
            x,
            k,
            b,
            &mut y,
            &mut scratch,
            None,
        );
        let (mut dx, mut dk, mut db) = (vec![0.0; x.len()], vec![0.0; k.len()], vec![0.0; b.len()]);
        conv2d_backward_by(
            ConvMethod::Im2col,
            g,
            n,
            x,
            k,
            &mut r.to_vec(),
            None,
            Some(&mut dx),
            Some((&mut dk, &mut db)),
            &mut scratch,
        );
        [y, dx, dk, db]
    }

    fn depthwise(
        isa: Isa,
        g: &ConvGeom,
        n: usize,
        x: &[f64],
        k: &[f64],
        b: &[f64],
        r: &[f64],
    ) -> [Vec<f64>; 4] {
        // Stale values in the outputs must not leak into the results.
        let mut y = vec![7.0; n * g.out_len()];
        let mut dx = vec![7.0; x.len()];
        let (mut dk, mut db) = (vec![0.0; k.len()], vec![0.0; b.len()]);
        forward(isa, g, n, x, k, b, &mut y, None);
        backward_input(isa, g, n, k, r, &mut dx);
        params_part(isa, g, x, r, &mut dk, &mut db);
        [y, dx, dk, db]
    }

    fn check(name: &str, g: ConvGeom, n: usize) {
        assert!(is_depthwise(&g), "{name}");
        assert_eq!(g.method(), ConvMethod::Depthwise, "{name}");
        let x = values(n * g.in_len(), 31);
        let k = values(g.kernel_len(), 32);
        let b = values(g.filters, 33);
        let r = values(n * g.out_len(), 34);
        let want = im2col(&g, n, &x, &k, &b, &r);
        for isa in Isa::available() {
            let got = depthwise(isa, &g, n, &x, &k, &b, &r);
            for (what, (a, w)) in ["forward", "dx", "dkernel", "dbias"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                assert_eq!(a.len(), w.len());
                for (i, (a, w)) in a.iter().zip(w).enumerate() {
                    assert!(
                        (a - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{name} {} {what}[{i}]: depthwise {a} vs im2col {w}",
                        isa.name()
                    );
                }
            }
            // Finite differences of the objective Σ y·r computed by this kernel.
            let loss_x = |x: &[f64]| {
                let mut y = vec![0.0; n * g.out_len()];
                forward(isa, &g, n, x, &k, &b, &mut y, None);
                dot(&y, &r)
            };
            assert_gradient(&format!("{name} {} dx", isa.name()), &x, &got[1], loss_x);
            let loss_k = |k: &[f64]| {
                let mut y = vec![0.0; n * g.out_len()];
                forward(isa, &g, n, &x, k, &b, &mut y, None);
                dot(&y, &r)
            };
            assert_gradient(
                &format!("{name} {} dkernel", isa.name()),
                &k,
                &got[2],
                loss_k,
            );
            let loss_b = |b: &[f64]| {
                let mut y = vec![0.0; n * g.out_len()];
                forward(isa, &g, n, &x, &k, b, &mut y, None);
                dot(&y, &r)
            };
            assert_gradient(&format!("{name} {} dbias", isa.name()), &b, &got[3], loss_b);
        }
    }

    fn geom(
        hwc: [usize; 3],
        kernel: usize,
        stride: [usize; 2],
        padding: Padding,
        dilation: usize,
    ) -> ConvGeom {
        let c = hwc[2];
        ConvGeom::new(
            hwc,
            c,
            [kernel, kernel],
            stride,
            padding,
            [dilation, dilation],
            c,
        )
    }

    #[test]
    fn depthwise_matches_im2col_and_finite_differences() {
        // Channel counts across the 16-, 8- and 1-wide blocks; odd sizes; both paddings.
        check(
            "3x3 same stride 1",
            geom([7, 6, 19], 3, [1, 1], Padding::Same, 1),
            2,
        );
        check(
            "3x3 valid stride 1",
            geom([6, 9, 8], 3, [1, 1], Padding::Valid, 1),
            3,
        );
        check(
            "3x3 same stride 2 odd",
            geom([9, 7, 5], 3, [2, 2], Padding::Same, 1),
            2,
        );
        check(
            "3x3 valid stride 2",
            geom([9, 10, 17], 3, [2, 2], Padding::Valid, 1),
            2,
        );
        check(
            "5x5 same stride 1",
            geom([8, 7, 24], 5, [1, 1], Padding::Same, 1),
            2,
        );
        check(
            "5x5 same stride 2 even size",
            geom([10, 8, 3], 5, [2, 2], Padding::Same, 1),
            2,
        );
        check(
            "3x3 dilation 2 same",
            geom([9, 11, 12], 3, [1, 1], Padding::Same, 2),
            2,
        );
        check(
            "3x3 dilation 2 valid stride (1, 2)",
            geom([9, 11, 2], 3, [1, 2], Padding::Valid, 2),
            3,
        );
        // Even kernel: Keras's asymmetric same padding (one more after than before).
        check(
            "4x2 same asymmetric",
            ConvGeom::new([6, 7, 9], 9, [4, 2], [1, 1], Padding::Same, [1, 1], 9),
            2,
        );
        // A kernel wider than the padded image on one axis leaves columns with no taps.
        check(
            "5x5 same stride 2 tiny",
            geom([2, 3, 4], 5, [2, 2], Padding::Same, 1),
            2,
        );
    }

    #[test]
    fn only_channel_multiplier_one_is_depthwise() {
        let grouped = ConvGeom::new([5, 5, 4], 8, [3, 3], [1, 1], Padding::Same, [1, 1], 4);
        assert!(!is_depthwise(&grouped));
        assert_eq!(grouped.method(), ConvMethod::Im2col);
        let halves = ConvGeom::new([5, 5, 4], 4, [3, 3], [1, 1], Padding::Same, [1, 1], 2);
        assert_eq!(halves.method(), ConvMethod::Im2col);
        let one = ConvGeom::new([5, 5, 1], 1, [3, 3], [1, 1], Padding::Same, [1, 1], 1);
        assert_eq!(one.method(), ConvMethod::Direct);
        let dw = ConvGeom::new([5, 5, 3], 3, [3, 3], [1, 1], Padding::Same, [1, 1], 3);
        assert_eq!(dw.method(), ConvMethod::Depthwise);
    }

    #[test]
    fn depthwise_in_f32_is_as_accurate_as_im2col() {
        // A MobileNet-shaped layer in the engine's precision against im2col in f64.
        let g = geom([33, 31, 32], 3, [1, 1], Padding::Same, 1);
        let n = 3;
        let f32s = |v: Vec<f64>| v.into_iter().map(|e| e as f32).collect::<Vec<f32>>();
        let f64s = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
        let x = f32s(values(n * g.in_len(), 41));
        let k = f32s(values(g.kernel_len(), 42));
        let b = f32s(values(g.filters, 43));
        let r = f32s(values(n * g.out_len(), 44));
        let exact = im2col(&g, n, &f64s(&x), &f64s(&k), &f64s(&b), &f64s(&r));
        let error = |a: &[f32], w: &[f64]| {
            let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            a.iter()
                .zip(w)
                .fold(0.0f64, |m, (&a, w)| m.max((a as f64 - w).abs()))
                / scale
        };
        // im2col in f32.
        let mut scratch = ConvScratch::<f32>::new(&g, n, true);
        let mut y = vec![0.0f32; n * g.out_len()];
        conv2d_forward_by(
            ConvMethod::Im2col,
            &g,
            n,
            &x,
            &k,
            &b,
            &mut y,
            &mut scratch,
            None,
        );
        let mut dx = vec![0.0f32; x.len()];
        let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
        conv2d_backward_by(
            ConvMethod::Im2col,
            &g,
            n,
            &x,
            &k,
            &mut r.clone(),
            None,
            Some(&mut dx),
            Some((&mut dk, &mut db)),
            &mut scratch,
        );
        let gemm = [&y, &dx, &dk, &db].map(|v| v.clone());
        for isa in Isa::available() {
            let mut y = vec![0.0f32; n * g.out_len()];
            let mut dx = vec![0.0f32; x.len()];
            let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
            forward(isa, &g, n, &x, &k, &b, &mut y, None);
            backward_input(isa, &g, n, &k, &r, &mut dx);
            params_part(isa, &g, &x, &r, &mut dk, &mut db);
            for (i, (what, ours)) in ["forward", "dx", "dkernel", "dbias"]
                .into_iter()
                .zip([&y, &dx, &dk, &db])
                .enumerate()
            {
                let (ours, theirs) = (error(ours, &exact[i]), error(&gemm[i], &exact[i]));
                assert!(
                    ours <= 2.0 * theirs.max(1e-7),
                    "{} {what}: depthwise error {ours:e}, im2col {theirs:e}",
                    isa.name()
                );
            }
        }
    }

    #[test]
    fn depthwise_does_not_depend_on_the_thread_count() {
        // Enough rows for several tasks; the parameter gradients go through conv.rs's parts.
        let g = geom([40, 36, 24], 3, [2, 1], Padding::Same, 1);
        let n = 5;
        let f32s = |v: Vec<f64>| v.into_iter().map(|e| e as f32).collect::<Vec<f32>>();
        let x = f32s(values(n * g.in_len(), 51));
        let k = f32s(values(g.kernel_len(), 52));
        let b = f32s(values(g.filters, 53));
        let r = f32s(values(n * g.out_len(), 54));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut scratch = ConvScratch::<f32>::new(&g, n, true);
                let mut y = vec![0.0f32; n * g.out_len()];
                let mut dx = vec![0.0f32; x.len()];
                let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
                let m = ConvMethod::Depthwise;
                conv2d_forward_by(m, &g, n, &x, &k, &b, &mut y, &mut scratch, None);
                conv2d_backward_by(
                    m,
                    &g,
                    n,
                    &x,
                    &k,
                    &mut r.clone(),
                    None,
                    Some(&mut dx),
                    Some((&mut dk, &mut db)),
                    &mut scratch,
                );
                [y, dx, dk, db]
            })
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert!(one[2].iter().any(|&v| v != 0.0));
    }
}
