//! 2-D convolution (stride, Keras valid/same padding incl. asymmetric, dilation, groups and
//! depthwise) by im2col + GEMM, forward and backward; convolutions of few input channels go
//! to the direct kernels of `conv_direct.rs` instead, and depthwise ones (one filter per
//! channel) to `conv_depthwise.rs` (`ConvGeom::method`), and pointwise ones (1×1, stride 1,
//! no groups) to one GEMM straight on the input, with no im2col copy.
//!
//! Per sample, im2col writes one row per output pixel holding the (ky, kx, channel) patch,
//! which is exactly the row order of a Keras HWIO kernel seen as a [kh·kw·cin, cout] matrix,
//! so the product needs no transposition. Several small-map samples share one GEMM (up to
//! `GEMM_ROWS` rows) so deep layers with 4×4 outputs still get efficient products.

use super::super::gemm::{gemm, timed_product, MatRef};
use super::super::ir::Padding;
use super::super::real::Real;
use super::super::simd::multiversion;
use super::conv_depthwise::{self as depthwise, Isa};
use super::conv_direct::{self as direct, MAX_CHANNELS};
use super::{axis_geometry, samples_per_part};
use rayon::prelude::*;

/// Rows (output pixels) of one im2col GEMM before a chunk of samples is split.
const GEMM_ROWS: usize = 2048;

/// How a convolution is computed: both give the same sums up to rounding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMethod {
    Im2col,
    /// Direct, with no im2col copy: forward, parameter gradients and, at stride 1, the
    /// input gradient (`conv_direct.rs`).
    Direct,
    /// Depthwise (groups = channels = filters): all three passes (`conv_depthwise.rs`).
    Depthwise,
    /// Pointwise (1×1, stride 1, no padding, no groups): all three passes by GEMM on the
    /// caller's slices. A method of its own rather than a branch inside im2col, so tests and
    /// benches can still run such a geometry by im2col and compare; the products are the same
    /// ones im2col makes (same operands, strides and chunks), so the results are the same
    /// bits: im2col's rows for this geometry are a plain copy of the sample.
    Pointwise,
}

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
    /// The engine's choice: direct for up to `MAX_CHANNELS` input channels without groups,
    /// the depthwise kernel for one filter per channel, GEMM on the input for pointwise
    /// geometries, direct again for other ungrouped ones at least `WIDE_MIN_WIDTH` wide
    /// where the CPU has AVX-512 (`conv_direct::wide`), im2col otherwise.
    pub fn method(&self) -> ConvMethod {
        if self.groups == 1 && self.c <= MAX_CHANNELS {
            ConvMethod::Direct
        } else if depthwise::is_depthwise(self) {
            ConvMethod::Depthwise
        } else if self.is_pointwise() {
            ConvMethod::Pointwise
        } else if self.groups == 1 && self.ow >= direct::WIDE_MIN_WIDTH && direct::wide() {
            ConvMethod::Direct
        } else {
            ConvMethod::Im2col
        }
    }
    /// Whether each output pixel is one input pixel times the kernel matrix: a 1×1 kernel
    /// (its dilation is then moot) at stride 1, without padding or groups, so one sample's
    /// input already is its im2col matrix ([pixels, channels]).
    pub fn is_pointwise(&self) -> bool {
        (self.kh, self.kw, self.sh, self.sw, self.groups) == (1, 1, 1, 1, 1)
            && (self.pad_top, self.pad_left) == (0, 0)
            && (self.oh, self.ow) == (self.h, self.w)
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
    /// The packed kernel and bias of the direct method (empty for im2col geometries).
    packed: Vec<T>,
    /// The direct input gradient's kernel (`conv_direct::transpose_kernel`), and packed.
    flipped: Vec<T>,
    packed_flipped: Vec<T>,
}

struct ConvPart<T> {
    cols: Vec<T>,
    /// One zero-padded sample for the direct method.
    padded: Vec<T>,
    /// One sample of the output, for the direct method (`grow_sample`).
    sample: Vec<T>,
    dkernel: Vec<T>,
    dbias: Vec<T>,
}

impl<T: Real> ConvScratch<T> {
    pub fn new(g: &ConvGeom, n: usize, backward: bool) -> Self {
        let per_part = samples_per_part(n);
        let parts = n.div_ceil(per_part);
        let is_direct = g.method() == ConvMethod::Direct;
        // The direct method's own input gradient, where it has one.
        let transposed = direct::transposed(g).filter(|_| is_direct && backward);
        // The depthwise and pointwise methods, and the direct one with its own input
        // gradient, need no im2col buffer (tests and the bench that run such a geometry by
        // im2col grow it on first use).
        let cols = if matches!(g.method(), ConvMethod::Depthwise | ConvMethod::Pointwise)
            || (is_direct && (transposed.is_some() || !backward))
        {
            0
        } else {
            im2col_len(g, per_part)
        };
        let padded = match (is_direct, &transposed) {
            (true, Some(t)) => direct::padded_len(g).max(direct::padded_len(t)),
            (true, None) => direct::padded_len(g),
            _ => 0,
        };
        let parts = (0..parts)
            .map(|_| ConvPart {
                cols: vec![T::ZERO; cols],
                padded: vec![T::ZERO; padded],
                sample: Vec::new(),
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
        let packed = if is_direct {
            vec![T::ZERO; direct::packed_len(g)]
        } else {
            Vec::new()
        };
        let (flipped, packed_flipped) = match &transposed {
            Some(t) => (
                vec![T::ZERO; g.kernel_len()],
                vec![T::ZERO; direct::packed_len(t)],
            ),
            None => (Vec::new(), Vec::new()),
        };
        ConvScratch {
            parts,
            packed,
            flipped,
            packed_flipped,
        }
    }

    pub fn bytes(&self) -> usize {
        let parts: usize = self
            .parts
            .iter()
            .map(|p| {
                p.cols.len() + p.padded.len() + p.sample.len() + p.dkernel.len() + p.dbias.len()
            })
            .sum();
        (parts + self.packed.len() + self.flipped.len() + self.packed_flipped.len())
            * std::mem::size_of::<T>()
    }
}

/// Length of one part's im2col buffer.
fn im2col_len(g: &ConvGeom, per_part: usize) -> usize {
    g.chunk(per_part) * g.pixels() * g.patch()
}

/// What a convolution applies to each finished part of its output while it is in cache:
/// `(first row, rows)`, a row being one output pixel's filters. Whole samples, except for the
/// depthwise kernel, whose parts are image rows. The inference path fuses activation and
/// batchnorm; training, the activation and the batch moments.
pub type Epilogue<'a, T> = &'a (dyn Fn(usize, &mut [T]) + Sync);

/// What a convolution's backward applies to each block of its output gradient, in place,
/// before the products: `(first row, rows)` (the activation's backward, a fused batchnorm's).
pub type Prologue<'a, T> = &'a (dyn Fn(usize, &mut [T]) + Sync);

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
    conv2d_forward_by(g.method(), g, n, x, kernel, bias, y, scratch, epilogue)
}

/// `conv2d_forward` by a given method (tests and `gpl bench engine` compare the two); the
/// direct method needs a geometry whose `method` is `Direct` (its scratch).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_by<T: Real>(
    method: ConvMethod,
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    y: &mut [T],
    scratch: &mut ConvScratch<T>,
    epilogue: Option<Epilogue<T>>,
) {
    match method {
        ConvMethod::Im2col => forward_im2col(g, n, x, kernel, bias, y, scratch, epilogue),
        ConvMethod::Direct => {
            forward_direct(g, n, x, kernel, bias, Output::Whole(y), scratch, epilogue)
        }
        ConvMethod::Depthwise => {
            depthwise::forward(Isa::native(), g, n, x, kernel, bias, y, epilogue)
        }
        ConvMethod::Pointwise => forward_pointwise(g, n, x, kernel, bias, y, epilogue),
    }
}

/// A pool applied to each sample of a convolution's output while it is in cache
/// (`conv2d_forward_pooled`): `(sample, pooled sample)`.
pub type SamplePool<'a, T> = &'a (dyn Fn(&[T], &mut [T]) + Sync);

/// `conv2d_forward` with each finished sample of the output (after the epilogue) put through
/// `pool` into `pooled` ([n, pooled_len]) at once, so the full output is never written to
/// memory and read back: the inference fusion of a convolution with the max-pool after it.
/// The direct method only, whose parts are whole samples computed one at a time (callers
/// check `conv_pools_in_cache`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_pooled<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    pooled: &mut [T],
    pooled_len: usize,
    scratch: &mut ConvScratch<T>,
    epilogue: Option<Epilogue<T>>,
    pool: SamplePool<T>,
) {
    assert!(
        conv_pools_in_cache(g),
        "only the direct method pools in cache"
    );
    let output = Output::Pooled {
        y: pooled,
        len: pooled_len,
        pool,
    };
    forward_direct(g, n, x, kernel, bias, output, scratch, epilogue)
}

/// Whether `conv2d_forward_pooled` takes this geometry.
pub fn conv_pools_in_cache(g: &ConvGeom) -> bool {
    g.method() == ConvMethod::Direct
}

/// Bytes of a batch's output above which the direct forward streams it out: twice this
/// machine's L2 (2 MB a core), so what streams would not have stayed in cache anyway.
const STREAM_BYTES: usize = 4 << 20;

/// Where the direct forward puts each finished sample: into the output, or through a pool.
enum Output<'a, T> {
    Whole(&'a mut [T]),
    Pooled {
        y: &'a mut [T],
        len: usize,
        pool: SamplePool<'a, T>,
    },
}

#[allow(clippy::too_many_arguments)]
fn forward_direct<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    output: Output<T>,
    scratch: &mut ConvScratch<T>,
    epilogue: Option<Epilogue<T>>,
) {
    let per_part = samples_per_part(n);
    grow_padded(g, scratch);
    let (y, out_len, pool) = match output {
        Output::Whole(y) => (y, g.out_len(), None),
        Output::Pooled { y, len, pool } => (y, len, Some(pool)),
    };
    // An output too big for the cache is computed in the part's own buffer and streamed out
    // (a smaller one stays in cache for the next layer to read).
    let stream = pool.is_none() && n * g.out_len() * std::mem::size_of::<T>() > STREAM_BYTES;
    let in_part = pool.is_some() || stream;
    if in_part {
        grow_sample(g, scratch);
    }
    scratch.packed.resize(direct::packed_len(g), T::ZERO);
    direct::pack(g, kernel, bias, &mut scratch.packed);
    let packed = &scratch.packed;
    x.par_chunks(per_part * g.in_len())
        .zip(y.par_chunks_mut(per_part * out_len))
        .zip(scratch.parts.par_iter_mut())
        .enumerate()
        .for_each(|(p, ((xp, yp), part))| {
            let chunks = xp.chunks(g.in_len()).zip(yp.chunks_mut(out_len));
            for (s, (xs, ys)) in chunks.enumerate() {
                let frame = direct::framed(g, xs, &mut part.padded);
                // Pooled or streamed, the sample goes to the part's own buffer, in cache.
                let sample = if in_part {
                    &mut part.sample[..]
                } else {
                    &mut *ys
                };
                timed_product(|| direct::forward_sample(g, frame, packed, sample));
                if let Some(epilogue) = epilogue {
                    epilogue((p * per_part + s) * g.pixels(), sample);
                }
                if let Some(pool) = pool {
                    pool(&part.sample, ys);
                } else if stream {
                    direct::stream_copy(&part.sample, ys);
                }
            }
        });
}

/// Gives each part a padded sample where the scratch was made for another method (tests and
/// the bench run any geometry by the direct method).
fn grow_padded<T: Real>(g: &ConvGeom, scratch: &mut ConvScratch<T>) {
    let len = direct::padded_len(g);
    for part in scratch.parts.iter_mut().filter(|p| p.padded.len() < len) {
        part.padded.resize(len, T::ZERO);
    }
}

/// Gives each part a buffer for one sample of the output (grown on first use: only a pooled
/// or streamed forward and a backward that makes its output gradient need it).
fn grow_sample<T: Real>(g: &ConvGeom, scratch: &mut ConvScratch<T>) {
    for part in scratch.parts.iter_mut() {
        part.sample.resize(g.out_len(), T::ZERO);
    }
}

/// Gives each part an im2col buffer where the scratch was made for another method.
fn grow_cols<T: Real>(g: &ConvGeom, per_part: usize, scratch: &mut ConvScratch<T>) {
    let len = im2col_len(g, per_part);
    for part in scratch.parts.iter_mut().filter(|p| p.cols.len() < len) {
        part.cols.resize(len, T::ZERO);
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_im2col<T: Real>(
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
    grow_cols(g, per_part, scratch);
    x.par_chunks(per_part * g.in_len())
        .zip(y.par_chunks_mut(per_part * g.out_len()))
        .zip(scratch.parts.par_iter_mut())
        .enumerate()
        .for_each(|(p, ((xp, yp), part))| {
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
                    epilogue(
                        (p * per_part + s0) * pixels,
                        &mut yp[s0 * pixels * f..s1 * pixels * f],
                    );
                }
            }
        });
}

/// `forward_im2col` for a pointwise geometry: the same products, the input sample standing
/// for its im2col rows ([pixels, c] with row stride c, the im2col layout of a 1×1 patch).
fn forward_pointwise<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    y: &mut [T],
    epilogue: Option<Epilogue<T>>,
) {
    assert!(g.is_pointwise(), "pointwise convolution of {g:?}");
    let per_part = samples_per_part(n);
    let chunk = g.chunk(per_part);
    let (pixels, c, f) = (g.pixels(), g.c, g.filters);
    x.par_chunks(per_part * g.in_len())
        .zip(y.par_chunks_mut(per_part * g.out_len()))
        .enumerate()
        .for_each(|(p, (xp, yp))| {
            for row in yp.chunks_mut(f) {
                row.copy_from_slice(bias);
            }
            let samples = xp.len() / g.in_len();
            for s0 in (0..samples).step_by(chunk) {
                let s1 = (s0 + chunk).min(samples);
                // y[rows, f] += x[rows, c] × K[c, f]
                gemm(
                    (s1 - s0) * pixels,
                    c,
                    f,
                    MatRef::rows(&xp[s0 * pixels * c..], c),
                    MatRef::rows(kernel, f),
                    &mut yp[s0 * pixels * f..],
                    f,
                    true,
                    1,
                );
                if let Some(epilogue) = epilogue {
                    epilogue(
                        (p * per_part + s0) * pixels,
                        &mut yp[s0 * pixels * f..s1 * pixels * f],
                    );
                }
            }
        });
}

/// Gradients of conv2d given `dy`, the gradient of its output; with a prologue (the
/// activation's backward, a fused batchnorm's), `dy` goes through it first, in place, block
/// by block together with the bias gradient's sum. Each output is optional: frozen layers
/// skip the kernel/bias products, the first layer skips the input gradient.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    dy: &mut [T],
    prologue: Option<Prologue<T>>,
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    conv2d_backward_by(
        g.method(),
        g,
        n,
        x,
        kernel,
        dy,
        prologue,
        dx,
        params,
        scratch,
    )
}

/// `conv2d_backward` by a given method; the direct method leaves only a strided layer's
/// input gradient to im2col.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_by<T: Real>(
    method: ConvMethod,
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    dy: &mut [T],
    prologue: Option<Prologue<T>>,
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    // The direct method with its own input gradient (or none wanted) takes each sample
    // through the prologue and both products while its output gradient is in cache.
    let transposed = direct::transposed(g).filter(|_| method == ConvMethod::Direct);
    if method == ConvMethod::Direct && (dx.is_none() || transposed.is_some()) {
        let dx = dx.map(|dx| (transposed.expect("checked"), dx));
        return backward_direct(g, n, x, kernel, Some(dy), prologue, dx, params, scratch);
    }
    // The depthwise kernel sums its bias gradient inside its own pass.
    let bias = params.is_some() && method != ConvMethod::Depthwise;
    if prologue.is_some() || bias {
        prepare_output_gradient(g, n, dy, prologue, bias, scratch);
    }
    let dy: &[T] = dy;
    match (method, params) {
        // Only a strided layer's input gradient gets here (`backward_direct` takes the rest):
        // the direct kernel gradient, the input gradient by im2col.
        (ConvMethod::Direct, params) => {
            if let Some(params) = params {
                direct_params(g, n, x, dy, params, scratch);
            }
            backward_im2col(g, n, x, kernel, dy, dx, None, scratch)
        }
        (ConvMethod::Depthwise, params) => {
            if let Some(params) = params {
                depthwise_params(g, n, x, dy, params, scratch);
            }
            if let Some(dx) = dx {
                depthwise::backward_input(Isa::native(), g, n, kernel, dy, dx);
            }
        }
        (ConvMethod::Pointwise, params) => {
            backward_pointwise(g, n, x, kernel, dy, dx, params, scratch)
        }
        (_, params) => backward_im2col(g, n, x, kernel, dy, dx, params, scratch),
    }
}

/// Values of the output gradient a prologue handles at once: a block that stays in L1.
const PROLOGUE_VALUES: usize = 4096;

/// Each part's output gradient through `prologue`, block by block, and (with `bias`) summed
/// into the part's bias gradient in row order, while the block is in cache: one pass where
/// the activation's backward and the bias sum were two.
fn prepare_output_gradient<T: Real>(
    g: &ConvGeom,
    n: usize,
    dy: &mut [T],
    prologue: Option<Prologue<T>>,
    bias: bool,
    scratch: &mut ConvScratch<T>,
) {
    let part_rows = samples_per_part(n) * g.pixels();
    dy.par_chunks_mut(part_rows * g.filters)
        .zip(scratch.parts.par_iter_mut())
        .enumerate()
        .for_each(|(p, (dyp, part))| {
            if bias {
                part.dbias.fill(T::ZERO);
            }
            let dbias = bias.then_some(&mut part.dbias[..]);
            prepare_rows(g.filters, p * part_rows, dyp, prologue, dbias);
        });
}

/// Rows `first ..` of an output gradient through `prologue` in blocks that stay in L1, each
/// block added to `dbias` (when given) row by row as soon as it is done.
fn prepare_rows<T: Real>(
    f: usize,
    first: usize,
    rows: &mut [T],
    prologue: Option<Prologue<T>>,
    mut dbias: Option<&mut [T]>,
) {
    let block_rows = (PROLOGUE_VALUES / f).max(1);
    for (b, block) in rows.chunks_mut(block_rows * f).enumerate() {
        if let Some(prologue) = prologue {
            prologue(first + b * block_rows, block);
        }
        if let Some(dbias) = dbias.as_deref_mut() {
            multiversion!(fn [T: Real] (f: usize, block: &[T], dbias: &mut [T]) {
                for row in block.chunks(f) {
                    for (s, d) in dbias.iter_mut().zip(row) {
                        *s += *d;
                    }
                }
            });
        }
    }
}

/// The direct method's backward, sample by sample: the sample's output gradient through the
/// prologue and into the bias sum, then its kernel-gradient products and its input gradient
/// (by `transposed`, the direct input gradient's geometry), all while that sample's output
/// gradient is in cache. Run as passes over the whole batch instead, the first layer's
/// 37 MB output gradient went to memory once and came back once per product. The same
/// operations in the same order per part as those passes, so the same bits.
#[allow(clippy::too_many_arguments)]
fn backward_direct<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    dy: Option<&mut [T]>,
    prologue: Option<Prologue<T>>,
    dx: Option<(ConvGeom, &mut [T])>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    let per_part = samples_per_part(n);
    grow_padded(g, scratch);
    let t = dx.as_ref().map(|(t, _)| *t);
    if let Some(t) = &t {
        pack_transposed(g, t, kernel, scratch);
    }
    if dy.is_none() {
        grow_sample(g, scratch);
    }
    // Each part's share of dy and dx, where they are stored.
    let parts = n.div_ceil(per_part);
    let dy_parts = parts_of(dy, per_part * g.out_len(), parts);
    let dx_parts = parts_of(dx.map(|(_, dx)| dx), per_part * g.in_len(), parts);
    let with_params = params.is_some();
    let (packed_flipped, parts) = (&scratch.packed_flipped, &mut scratch.parts);
    x.par_chunks(per_part * g.in_len())
        .zip(parts.par_iter_mut())
        .zip(dy_parts.into_par_iter().zip(dx_parts))
        .enumerate()
        .for_each(|(p, ((xp, part), (mut dyp, mut dxp)))| {
            let ConvPart {
                padded,
                sample,
                dkernel,
                dbias,
                ..
            } = part;
            if with_params {
                dkernel.fill(T::ZERO);
                dbias.fill(T::ZERO);
            }
            for (s, xs) in xp.chunks(g.in_len()).enumerate() {
                let first = (p * per_part + s) * g.pixels();
                let dys = match dyp.as_deref_mut() {
                    Some(dyp) => &mut dyp[s * g.out_len()..][..g.out_len()],
                    None => &mut sample[..],
                };
                let dbias = with_params.then_some(&mut dbias[..]);
                prepare_rows(g.filters, first, dys, prologue, dbias);
                if with_params {
                    let frame = direct::framed(g, xs, padded);
                    timed_product(|| direct::dkernel_sample(g, frame, dys, dkernel));
                }
                if let (Some(t), Some(dxp)) = (&t, dxp.as_deref_mut()) {
                    let dxs = &mut dxp[s * g.in_len()..][..g.in_len()];
                    let frame = direct::framed(t, dys, padded);
                    timed_product(|| direct::forward_sample(t, frame, packed_flipped, dxs));
                }
            }
        });
    if let Some(params) = params {
        add_parts(&scratch.parts, params.0, params.1);
    }
}

/// `v` in `parts` chunks of `len`, or `parts` times none.
fn parts_of<T>(v: Option<&mut [T]>, len: usize, parts: usize) -> Vec<Option<&mut [T]>> {
    match v {
        Some(v) => v.chunks_mut(len).map(Some).collect(),
        None => (0..parts).map(|_| None).collect(),
    }
}

/// Whether `conv2d_backward_made` takes this geometry, with or without an input gradient:
/// the direct method, with its own input gradient where one is wanted.
pub fn backward_in_cache(g: &ConvGeom, dx: bool) -> bool {
    g.method() == ConvMethod::Direct && (!dx || direct::transposed(g).is_some())
}

/// `conv2d_backward` for an output gradient that the prologue makes itself, block by block
/// (a fused max-pool's routed gradient): each sample's is made in the part's own buffer, in
/// cache, and never stored. Callers check `backward_in_cache`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_made<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    prologue: Prologue<T>,
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    assert!(
        backward_in_cache(g, dx.is_some()),
        "only the direct method makes its output gradient in cache"
    );
    let dx = dx.map(|dx| (direct::transposed(g).expect("checked"), dx));
    backward_direct(g, n, x, kernel, None, Some(prologue), dx, params, scratch)
}

/// The direct input gradient's kernel: `kernel` flipped and transposed, packed for `t`.
fn pack_transposed<T: Real>(
    g: &ConvGeom,
    t: &ConvGeom,
    kernel: &[T],
    scratch: &mut ConvScratch<T>,
) {
    // Scratch made for another method (tests and the bench) grows here.
    scratch.flipped.resize(g.kernel_len(), T::ZERO);
    scratch
        .packed_flipped
        .resize(direct::packed_len(t), T::ZERO);
    direct::transpose_kernel(g, kernel, &mut scratch.flipped);
    let no_bias = vec![T::ZERO; t.filters];
    direct::pack(t, &scratch.flipped, &no_bias, &mut scratch.packed_flipped);
    grow_padded(t, scratch);
}

/// Kernel and bias gradients by the direct method: per part, then the parts added in order.
fn direct_params<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    dy: &[T],
    (dkernel, dbias): (&mut [T], &mut [T]),
    scratch: &mut ConvScratch<T>,
) {
    let per_part = samples_per_part(n);
    grow_padded(g, scratch);
    x.par_chunks(per_part * g.in_len())
        .zip(dy.par_chunks(per_part * g.out_len()))
        .zip(scratch.parts.par_iter_mut())
        .for_each(|((xp, dyp), part)| {
            part.dkernel.fill(T::ZERO);
            for (xs, dys) in xp.chunks(g.in_len()).zip(dyp.chunks(g.out_len())) {
                let frame = direct::framed(g, xs, &mut part.padded);
                timed_product(|| direct::dkernel_sample(g, frame, dys, &mut part.dkernel));
            }
        });
    add_parts(&scratch.parts, dkernel, dbias);
}

/// Kernel and bias gradients by the depthwise kernel: per part, then the parts added in order.
fn depthwise_params<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    dy: &[T],
    (dkernel, dbias): (&mut [T], &mut [T]),
    scratch: &mut ConvScratch<T>,
) {
    assert_eq!(g.method(), ConvMethod::Depthwise, "depthwise convolution");
    let per_part = samples_per_part(n);
    let isa = Isa::native();
    x.par_chunks(per_part * g.in_len())
        .zip(dy.par_chunks(per_part * g.out_len()))
        .zip(scratch.parts.par_iter_mut())
        .for_each(|((xp, dyp), part)| {
            part.dkernel.fill(T::ZERO);
            part.dbias.fill(T::ZERO);
            timed_product(|| {
                depthwise::params_part(isa, g, xp, dyp, &mut part.dkernel, &mut part.dbias)
            });
        });
    add_parts(&scratch.parts, dkernel, dbias);
}

/// The parts' parameter gradients added in part order (the same bits on any thread count).
fn add_parts<T: Real>(parts: &[ConvPart<T>], dkernel: &mut [T], dbias: &mut [T]) {
    dkernel.fill(T::ZERO);
    dbias.fill(T::ZERO);
    for part in parts {
        for (a, b) in dkernel.iter_mut().zip(&part.dkernel) {
            *a += *b;
        }
        for (a, b) in dbias.iter_mut().zip(&part.dbias) {
            *a += *b;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_im2col<T: Real>(
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
    grow_cols(g, per_part, scratch);
    let want_params = params.is_some();
    let work = |((xp, dyp), (part, dxp)): PartWork<T>| {
        if want_params {
            part.dkernel.fill(T::ZERO);
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
    for_each_part(g, n, x, dy, dx, scratch, work);
    if let Some((dkernel, dbias)) = params {
        add_parts(&scratch.parts, dkernel, dbias);
    }
}

/// Runs `work` on every part of the batch in parallel: the part's x and dy, its scratch and
/// its slice of dx (empty when the input gradient is not wanted).
fn for_each_part<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    scratch: &mut ConvScratch<T>,
    work: impl Fn(PartWork<T>) + Sync + Send,
) {
    let per_part = samples_per_part(n);
    let xs = x.par_chunks(per_part * g.in_len());
    let dys = dy.par_chunks(per_part * g.out_len());
    if let Some(dx) = dx {
        xs.zip(dys)
            .zip(
                scratch
                    .parts
                    .par_iter_mut()
                    .zip(dx.par_chunks_mut(per_part * g.in_len())),
            )
            .for_each(work);
    } else {
        let mut empties: Vec<&mut [T]> = Vec::with_capacity(scratch.parts.len());
        for _ in 0..scratch.parts.len() {
            empties.push(&mut []);
        }
        xs.zip(dys)
            .zip(scratch.parts.par_iter_mut().zip(empties.into_par_iter()))
            .for_each(work);
    }
}

/// `backward_im2col` for a pointwise geometry: the same products and chunks, reading x and
/// writing dx in place of the im2col buffer (col2im of a 1×1 patch at stride 1 is a copy).
#[allow(clippy::too_many_arguments)]
fn backward_pointwise<T: Real>(
    g: &ConvGeom,
    n: usize,
    x: &[T],
    kernel: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    params: Option<(&mut [T], &mut [T])>,
    scratch: &mut ConvScratch<T>,
) {
    assert!(g.is_pointwise(), "pointwise convolution of {g:?}");
    let chunk = g.chunk(samples_per_part(n));
    let (pixels, c, f) = (g.pixels(), g.c, g.filters);
    let want_params = params.is_some();
    let work = |((xp, dyp), (part, dxp)): PartWork<T>| {
        if want_params {
            part.dkernel.fill(T::ZERO);
        }
        let samples = xp.len() / g.in_len();
        for s0 in (0..samples).step_by(chunk) {
            let rows = ((s0 + chunk).min(samples) - s0) * pixels;
            let dy_chunk = &dyp[s0 * pixels * f..];
            if want_params {
                // dK[c, f] += x^T [c, rows] × dy [rows, f]
                gemm(
                    c,
                    rows,
                    f,
                    MatRef::rows(&xp[s0 * pixels * c..], c).t(),
                    MatRef::rows(dy_chunk, f),
                    &mut part.dkernel,
                    f,
                    true,
                    1,
                );
            }
            if !dxp.is_empty() {
                // dx[rows, c] = dy [rows, f] × K^T [f, c]
                gemm(
                    rows,
                    f,
                    c,
                    MatRef::rows(dy_chunk, f),
                    MatRef::rows(kernel, f).t(),
                    &mut dxp[s0 * pixels * c..],
                    c,
                    false,
                    1,
                );
            }
        }
    };
    for_each_part(g, n, x, dy, dx, scratch, work);
    if let Some((dkernel, dbias)) = params {
        add_parts(&scratch.parts, dkernel, dbias);
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
            &mut r.clone(),
            None,
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
        conv2d_backward(
            &g,
            n,
            &x,
            &k,
            &mut r.clone(),
            None,
            Some(&mut dx2),
            None,
            &mut scratch,
        );
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
        let pointwise = ConvGeom::new([4, 5, 9], 7, [1, 1], [1, 1], Padding::Same, [1, 1], 1);
        assert_eq!(pointwise.method(), ConvMethod::Pointwise);
        check("pointwise", pointwise, 3);
        check("pointwise one sample", pointwise, 1);
    }

    /// One method's forward (through an epilogue), dx, dkernel and dbias; and dx again
    /// without parameter gradients, the parameter gradients again without dx.
    fn run_method<T: Real>(
        method: ConvMethod,
        g: &ConvGeom,
        n: usize,
        [x, k, b, r]: [&[T]; 4],
    ) -> [Vec<T>; 6] {
        let mut scratch = ConvScratch::<T>::new(g, n, true);
        // Stale values in the outputs must not leak into the results.
        let stale = |len: usize| vec![T::from_f64(f64::NAN); len];
        let mut y = stale(n * g.out_len());
        let epilogue = |_: usize, part: &mut [T]| {
            for v in part {
                *v = *v * T::from_f64(0.5) + T::ONE;
            }
        };
        conv2d_forward_by(method, g, n, x, k, b, &mut y, &mut scratch, Some(&epilogue));
        let (mut dx, mut dk, mut db) = (stale(x.len()), stale(k.len()), stale(b.len()));
        conv2d_backward_by(
            method,
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
        let mut dx_only = stale(x.len());
        conv2d_backward_by(
            method,
            g,
            n,
            x,
            k,
            &mut r.to_vec(),
            None,
            Some(&mut dx_only),
            None,
            &mut scratch,
        );
        let (mut dk_only, mut db_only) = (stale(k.len()), stale(b.len()));
        conv2d_backward_by(
            method,
            g,
            n,
            x,
            k,
            &mut r.to_vec(),
            None,
            None,
            Some((&mut dk_only, &mut db_only)),
            &mut scratch,
        );
        [y, dx, dk, db, dx_only, [dk_only, db_only].concat()]
    }

    /// The pointwise method against im2col: the same products on the same operands, so the
    /// same bits, in f64 and in the engine's f32.
    fn check_pointwise(name: &str, g: ConvGeom, n: usize) {
        assert_eq!(g.method(), ConvMethod::Pointwise, "{name}");
        let x = values(n * g.in_len(), 31);
        let k = values(g.kernel_len(), 32);
        let b = values(g.filters, 33);
        let r = values(n * g.out_len(), 34);
        let same = |precision: &str, ours: &[Vec<u64>], im2col: &[Vec<u64>]| {
            let whats = [
                "forward",
                "dx",
                "dkernel",
                "dbias",
                "dx alone",
                "params alone",
            ];
            for ((what, a), w) in whats.into_iter().zip(ours).zip(im2col) {
                assert!(
                    a == w,
                    "{name} {precision} {what}: pointwise differs from im2col"
                );
            }
        };
        let bits64 = |v: [Vec<f64>; 6]| v.map(|v| v.iter().map(|e| e.to_bits()).collect());
        let inputs = [&x[..], &k[..], &b[..], &r[..]];
        let pointwise = run_method(ConvMethod::Pointwise, &g, n, inputs);
        let im2col = run_method(ConvMethod::Im2col, &g, n, inputs);
        assert!(
            pointwise.iter().flatten().all(|v| v.is_finite()),
            "{name}: stale NaN"
        );
        assert_eq!(pointwise[4], pointwise[1], "{name}: dx alone");
        assert_eq!(
            pointwise[5],
            [pointwise[2].clone(), pointwise[3].clone()].concat(),
            "{name}: parameter gradients alone"
        );
        same("f64", &bits64(pointwise), &bits64(im2col));
        let f32s = |v: &[f64]| v.iter().map(|&e| e as f32).collect::<Vec<f32>>();
        let bits32 = |v: [Vec<f32>; 6]| v.map(|v| v.iter().map(|e| e.to_bits() as u64).collect());
        let (x, k, b, r) = (f32s(&x), f32s(&k), f32s(&b), f32s(&r));
        let inputs = [&x[..], &k[..], &b[..], &r[..]];
        same(
            "f32",
            &bits32(run_method(ConvMethod::Pointwise, &g, n, inputs)),
            &bits32(run_method(ConvMethod::Im2col, &g, n, inputs)),
        );
    }

    #[test]
    fn pointwise_convolution_is_im2col_bit_for_bit() {
        let geom = |input: [usize; 3], filters: usize, padding: Padding| {
            ConvGeom::new(input, filters, [1, 1], [1, 1], padding, [1, 1], 1)
        };
        check_pointwise("small", geom([5, 7, 9], 6, Padding::Valid), 3);
        check_pointwise("one sample", geom([3, 5, 12], 5, Padding::Same), 1);
        // 11 samples in parts of 2: the last part holds one.
        check_pointwise("uneven parts", geom([4, 4, 17], 33, Padding::Same), 11);
        // 700 pixels: GEMMs of 2 samples; 17 samples in parts of 3, 3 and 2: chunks of 2
        // then 1 in most parts.
        check_pointwise("uneven chunks", geom([20, 35, 10], 8, Padding::Valid), 17);
        // 2304 pixels: one sample per GEMM, two per part.
        check_pointwise("big maps", geom([48, 48, 6], 16, Padding::Same), 9);
        // Dilation does not move a 1×1 kernel's single tap.
        let dilated = ConvGeom::new([6, 5, 8], 4, [1, 1], [1, 1], Padding::Valid, [2, 3], 1);
        check_pointwise("dilated", dilated, 2);
    }

    #[test]
    fn only_unit_stride_ungrouped_1x1_many_channels_is_pointwise() {
        let g = |c: usize, kernel: [usize; 2], stride: [usize; 2], groups: usize| {
            ConvGeom::new([8, 6, c], 8, kernel, stride, Padding::Same, [1, 1], groups).method()
        };
        assert_eq!(g(16, [1, 1], [1, 1], 1), ConvMethod::Pointwise);
        assert_eq!(
            g(MAX_CHANNELS + 1, [1, 1], [1, 1], 1),
            ConvMethod::Pointwise
        );
        assert_eq!(g(MAX_CHANNELS, [1, 1], [1, 1], 1), ConvMethod::Direct);
        assert_eq!(g(16, [1, 1], [2, 2], 1), ConvMethod::Im2col);
        assert_eq!(g(16, [1, 1], [1, 2], 1), ConvMethod::Im2col);
        assert_eq!(g(16, [1, 2], [1, 1], 1), ConvMethod::Im2col);
        assert_eq!(g(16, [3, 3], [1, 1], 1), ConvMethod::Im2col);
        assert_eq!(g(16, [1, 1], [1, 1], 2), ConvMethod::Im2col);
        // The scratch holds the parameter gradients' parts only: no im2col buffers.
        let geom = ConvGeom::new([32, 32, 16], 24, [1, 1], [1, 1], Padding::Same, [1, 1], 1);
        let scratch = ConvScratch::<f32>::new(&geom, 16, true);
        assert!(scratch.parts.iter().all(|p| p.cols.is_empty()));
        let gradients = scratch.parts.len() * (geom.kernel_len() + geom.filters);
        assert_eq!(scratch.bytes(), gradients * std::mem::size_of::<f32>());
        assert_eq!(ConvScratch::<f32>::new(&geom, 16, false).bytes(), 0);
    }

    /// `run_method` by `method` on one thread and on three: the results must be the same
    /// bits, and not all zero.
    fn same_on_any_thread_count(method: ConvMethod, g: &ConvGeom, seed: u64) -> [Vec<f32>; 6] {
        let n = 7;
        let f32s = |v: Vec<f64>| v.into_iter().map(|e| e as f32).collect::<Vec<f32>>();
        let x = f32s(values(n * g.in_len(), seed));
        let k = f32s(values(g.kernel_len(), seed + 1));
        let b = f32s(values(g.filters, seed + 2));
        let r = f32s(values(n * g.out_len(), seed + 3));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let inputs = [&x[..], &k[..], &b[..], &r[..]];
            pool.install(|| run_method(method, g, n, inputs))
        };
        let one = run(1);
        assert_eq!(one, run(3), "{method:?} {g:?}");
        one
    }

    #[test]
    fn pointwise_does_not_depend_on_the_thread_count() {
        let g = ConvGeom::new([24, 20, 12], 10, [1, 1], [1, 1], Padding::Same, [1, 1], 1);
        let out = same_on_any_thread_count(ConvMethod::Pointwise, &g, 61);
        assert!(out[2].iter().any(|&v| v != 0.0));
    }

    /// The direct method against im2col (forward, all three gradients) and finite
    /// differences, on scratch made for whichever method the engine picks here.
    fn check_direct(name: &str, g: ConvGeom, n: usize) {
        let x = values(n * g.in_len(), 11);
        let k = values(g.kernel_len(), 12);
        let b = values(g.filters, 13);
        let r = values(n * g.out_len(), 14);
        let mut scratch = ConvScratch::<f64>::new(&g, n, true);
        let mut y = [vec![0.0; n * g.out_len()], vec![0.0; n * g.out_len()]];
        let mut dk = [vec![0.0; k.len()], vec![0.0; k.len()]];
        let mut db = [vec![0.0; b.len()], vec![0.0; b.len()]];
        let mut dx = [vec![0.0; x.len()], vec![0.0; x.len()]];
        for (i, method) in [ConvMethod::Im2col, ConvMethod::Direct]
            .into_iter()
            .enumerate()
        {
            let bump = |v: &mut Vec<f64>| v.iter_mut().for_each(|e| *e = 7.0);
            // Stale values in the outputs must not leak into the results.
            bump(&mut y[i]);
            bump(&mut dk[i]);
            bump(&mut db[i]);
            bump(&mut dx[i]);
            let [ys, dks, dbs, dxs] = [&mut y[i], &mut dk[i], &mut db[i], &mut dx[i]];
            conv2d_forward_by(method, &g, n, &x, &k, &b, ys, &mut scratch, None);
            conv2d_backward_by(
                method,
                &g,
                n,
                &x,
                &k,
                &mut r.clone(),
                None,
                Some(dxs),
                Some((dks, dbs)),
                &mut scratch,
            );
        }
        let close = |what: &str, a: &[f64], w: &[f64]| {
            for (a, w) in a.iter().zip(w) {
                assert!(
                    (a - w).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{name} {what}: direct {a} vs im2col {w}"
                );
            }
        };
        close("forward", &y[1], &y[0]);
        close("dkernel", &dk[1], &dk[0]);
        close("dbias", &db[1], &db[0]);
        close("dx", &dx[1], &dx[0]);
        assert_gradient(&format!("{name} direct dx"), &x, &dx[1], |x| {
            dot(&naive(&g, n, x, &k, &b), &r)
        });
        assert_gradient(&format!("{name} direct dkernel"), &k, &dk[1], |k| {
            dot(&naive(&g, n, &x, k, &b), &r)
        });
        assert_gradient(&format!("{name} direct dbias"), &b, &db[1], |b| {
            dot(&naive(&g, n, &x, &k, b), &r)
        });
        let want = naive(&g, n, &x, &k, &b);
        close("forward against the definition", &y[1], &want);
    }

    #[test]
    fn direct_convolution_matches_im2col_and_finite_differences() {
        // Filter counts across the 16-wide blocks (a partial block, one, two and a bit),
        // output widths across the 4-pixel blocks, padding, stride and dilation.
        check_direct(
            "first layer 3 channels",
            ConvGeom::new([9, 11, 3], 20, [3, 3], [1, 1], Padding::Valid, [1, 1], 1),
            3,
        );
        check_direct(
            "same stride 2",
            ConvGeom::new([7, 9, 2], 5, [3, 3], [2, 2], Padding::Same, [1, 1], 1),
            2,
        );
        check_direct(
            "same even kernel asymmetric",
            ConvGeom::new([6, 7, 3], 33, [4, 2], [1, 1], Padding::Same, [1, 1], 1),
            2,
        );
        check_direct(
            "dilated one channel",
            ConvGeom::new([9, 8, 1], 16, [3, 3], [1, 2], Padding::Valid, [2, 2], 1),
            9,
        );
        // Many channels (the AVX-512 kernels' geometries where the CPU has them): a channel
        // count that is not a multiple of the 8-tap block, filters of a pair of blocks plus a
        // partial one, a row longer than one 14-pixel block, dilation, an even kernel.
        check_direct(
            "wide same",
            ConvGeom::new([5, 17, 11], 40, [3, 3], [1, 1], Padding::Same, [1, 1], 1),
            2,
        );
        check_direct(
            "wide dilated valid even kernel",
            ConvGeom::new([8, 10, 9], 17, [2, 4], [1, 1], Padding::Valid, [2, 1], 1),
            2,
        );
        check_direct(
            "wide same even kernel stride 2",
            ConvGeom::new([9, 12, 6], 16, [4, 2], [2, 2], Padding::Same, [1, 1], 1),
            3,
        );
    }

    #[test]
    fn direct_convolution_in_f32_is_as_accurate_as_im2col() {
        // The bigger CNN's first and second layers at full size, in the engine's precision
        // (on an AVX-512 CPU, its kernels; the first with enough samples that its output
        // streams out, `STREAM_BYTES`), and two odd geometries: each method's rounding
        // error against im2col in f64 on the same values.
        let g = |input, filters, kernel, stride, padding, dilation| {
            ConvGeom::new(input, filters, kernel, stride, padding, dilation, 1)
        };
        let (one, valid, same) = ([1, 1], Padding::Valid, Padding::Same);
        let first = g([69, 69, 3], 32, [3, 3], one, valid, one);
        let streamed = STREAM_BYTES.div_ceil(first.out_len() * 4) + 1;
        f32_accuracy(first, streamed);
        f32_accuracy(g([31, 31, 32], 64, [3, 3], one, same, one), 2);
        f32_accuracy(g([13, 15, 20], 40, [3, 3], one, same, [2, 1]), 3);
        f32_accuracy(g([16, 16, 24], 24, [3, 3], [2, 2], same, one), 2);
    }

    fn f32_accuracy(g: ConvGeom, n: usize) {
        let f32s = |v: Vec<f64>| v.into_iter().map(|e| e as f32).collect::<Vec<f32>>();
        let x = f32s(values(n * g.in_len(), 21));
        let k = f32s(values(g.kernel_len(), 22));
        let b = f32s(values(g.filters, 23));
        let r = f32s(values(n * g.out_len(), 24));
        let f64s = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
        let mut exact_scratch = ConvScratch::<f64>::new(&g, n, true);
        let mut y64 = vec![0.0f64; n * g.out_len()];
        let (mut dk64, mut db64) = (vec![0.0f64; k.len()], vec![0.0f64; b.len()]);
        let mut dx64 = vec![0.0f64; x.len()];
        let (x64, k64) = (f64s(&x), f64s(&k));
        conv2d_forward_by(
            ConvMethod::Im2col,
            &g,
            n,
            &x64,
            &k64,
            &f64s(&b),
            &mut y64,
            &mut exact_scratch,
            None,
        );
        conv2d_backward_by(
            ConvMethod::Im2col,
            &g,
            n,
            &x64,
            &k64,
            &mut f64s(&r),
            None,
            Some(&mut dx64),
            Some((&mut dk64, &mut db64)),
            &mut exact_scratch,
        );
        let mut scratch = ConvScratch::<f32>::new(&g, n, true);
        let mut errors = Vec::new();
        for method in [ConvMethod::Im2col, ConvMethod::Direct] {
            let mut y = vec![0.0f32; n * g.out_len()];
            let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
            let mut dx = vec![0.0f32; x.len()];
            conv2d_forward_by(method, &g, n, &x, &k, &b, &mut y, &mut scratch, None);
            conv2d_backward_by(
                method,
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
            // The worst error relative to the result's scale.
            let error = |a: &[f32], w: &[f64]| {
                let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                a.iter()
                    .zip(w)
                    .fold(0.0f64, |m, (&a, w)| m.max((a as f64 - w).abs()))
                    / scale
            };
            errors.push([
                error(&y, &y64),
                error(&dk, &dk64),
                error(&db, &db64),
                error(&dx, &dx64),
            ]);
        }
        for (i, what) in ["forward", "dkernel", "dbias", "dx"]
            .into_iter()
            .enumerate()
        {
            let (gemm, direct) = (errors[0][i], errors[1][i]);
            // The direct input gradient sums kh·kw·filters products in one chain where
            // im2col's GEMM sums the filters and col2im then adds the taps: its error is
            // that of a forward pass of the same length (measured 6–9e-7 here, against
            // 1.5–1.9e-7), so it is held to a few f32 roundings of the scale instead.
            let bound = if what == "dx" {
                1.5e-6
            } else {
                2.0 * gemm.max(1e-7)
            };
            assert!(
                direct <= bound,
                "{g:?} {what}: direct error {direct:e}, im2col {gemm:e}"
            );
        }
    }

    #[test]
    fn direct_does_not_depend_on_the_thread_count() {
        let g = ConvGeom::new([11, 19, 16], 24, [3, 3], [1, 1], Padding::Same, [1, 1], 1);
        let out = same_on_any_thread_count(ConvMethod::Direct, &g, 71);
        assert!(out.iter().all(|v| v.iter().any(|&e| e != 0.0)));
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
