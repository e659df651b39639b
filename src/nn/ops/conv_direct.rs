//! Direct convolution: forward, the parameter gradients and (at stride 1) the input
//! gradient, read straight from a zero-padded copy of each sample with no im2col copy.
//!
//! The engine uses it for few input channels everywhere (the first layer of every galaxy
//! net: 3 channels, a 27-long patch, where the im2col copy costs as much as the product), and
//! for every ungrouped convolution of maps at least `WIDE_MIN_WIDTH` wide where the CPU has
//! AVX-512 (`wide`), whose f32 kernels are in `conv_direct_avx512.rs`. Elsewhere each block
//! of output pixels × filters is summed in registers over the taps by the portable loops
//! below: the kernel is packed in blocks of `FW` filters ([block][tap][FW], zeros past the
//! last filter) so every inner loop has a fixed length the compiler vectorises, and where the
//! CPU has AVX2 and FMA (detected at run time, as matrixmultiply does) the same code is
//! compiled for them and each multiply-add rounds once.
//!
//! The input gradient at stride 1 is itself a forward convolution (`transposed`): of the
//! output gradient, padded by kernel − 1 − pad, with the kernel flipped and its channels and
//! filters swapped. Strided layers take theirs from the im2col path (`conv.rs`).

use super::super::real::Real;
use super::conv::ConvGeom;
use std::any::TypeId;

/// Input channels up to which the engine convolves directly (groups of one only). Measured
/// in `gpl bench engine` (first-layer line): at 3 channels direct wins forward and backward.
pub const MAX_CHANNELS: usize = 4;
/// Filters per register block (one AVX-512 register of f32).
pub(super) const FW: usize = 16;
/// Output width from which a many-channel convolution goes direct on AVX-512: narrower maps
/// give a register block too few pixels to hide the multiply-add latency, and im2col
/// batches several samples into one product instead.
pub const WIDE_MIN_WIDTH: usize = 8;

/// Whether the AVX-512 kernels run here, making the direct method the engine's choice for
/// many-channel layers too (`ConvGeom::method`).
pub fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::conv_direct_avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `src` copied to `dst`, by non-temporal stores where the AVX-512 kernels run: for an
/// output too big to stay in cache, computed in a part's own buffer first.
pub fn stream_copy<T: Real>(src: &[T], dst: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(s), Some(d)) = (wide(), as_f32(src), as_f32_mut(dst)) {
        // SAFETY: `wide` checked the CPU's features.
        return unsafe { super::conv_direct_avx512::stream_copy(s, d) };
    }
    dst.copy_from_slice(src)
}

/// `s` as f32, when `T` is f32 (the AVX-512 kernels' type).
fn as_f32<T: Real>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 by the TypeId test, so the slice is reinterpreted as itself.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) })
}

fn as_f32_mut<T: Real>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) })
}

/// The geometry whose forward pass is `g`'s input gradient, at stride 1 without groups:
/// input the output gradient ([oh, ow, filters]), output [h, w, c], padded by
/// dilation·(kernel − 1) − pad before, with `transpose_kernel`'s kernel and no bias.
pub fn transposed(g: &ConvGeom) -> Option<ConvGeom> {
    if (g.sh, g.sw, g.groups) != (1, 1, 1) {
        return None;
    }
    Some(ConvGeom {
        h: g.oh,
        w: g.ow,
        c: g.filters,
        oh: g.h,
        ow: g.w,
        filters: g.c,
        pad_top: g.dh * (g.kh - 1) - g.pad_top,
        pad_left: g.dw * (g.kw - 1) - g.pad_left,
        ..*g
    })
}

/// `g`'s HWIO kernel flipped in both axes with channels and filters swapped: the kernel of
/// `transposed(g)`.
pub(super) fn transpose_kernel<T: Real>(g: &ConvGeom, kernel: &[T], out: &mut [T]) {
    let (c, f) = (g.c, g.filters);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let flipped = (g.kh - 1 - ky) * g.kw + (g.kw - 1 - kx);
            for ci in 0..c {
                for fi in 0..f {
                    out[(flipped * f + fi) * c + ci] = kernel[((ky * g.kw + kx) * c + ci) * f + fi];
                }
            }
        }
    }
}

/// Output pixels per register block in the forward pass.
const PB: usize = 4;

/// Rows and columns of the zero-padded input a sample is copied into.
pub(super) fn padded_dims(g: &ConvGeom) -> (usize, usize) {
    (
        (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1,
        (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1,
    )
}

pub(super) fn padded_len(g: &ConvGeom) -> usize {
    let (hp, wp) = padded_dims(g);
    hp * wp * g.c
}

fn blocks(g: &ConvGeom) -> usize {
    g.filters.div_ceil(FW)
}

fn taps(g: &ConvGeom) -> usize {
    g.kh * g.kw * g.c
}

/// Length of the packed kernel followed by the packed bias.
pub(super) fn packed_len(g: &ConvGeom) -> usize {
    blocks(g) * (taps(g) + 1) * FW
}

/// Packs the HWIO kernel ([tap, filters]) and the bias into `packed`.
pub(super) fn pack<T: Real>(g: &ConvGeom, kernel: &[T], bias: &[T], packed: &mut [T]) {
    let (taps, f) = (taps(g), g.filters);
    packed.fill(T::ZERO);
    let (k, b) = packed.split_at_mut(blocks(g) * taps * FW);
    for block in 0..blocks(g) {
        let valid = FW.min(f - block * FW);
        for t in 0..taps {
            k[(block * taps + t) * FW..][..valid]
                .copy_from_slice(&kernel[t * f + block * FW..][..valid]);
        }
        b[block * FW..][..valid].copy_from_slice(&bias[block * FW..][..valid]);
    }
}

/// Copies one sample into its zero-padded frame, zeroing only the border around it (the
/// frame is rewritten for every sample, so the copy is all the traffic there is).
pub(super) fn pad<T: Real>(g: &ConvGeom, x: &[T], padded: &mut [T]) {
    let (hp, wp) = padded_dims(g);
    let c = g.c;
    let frame = &mut padded[..hp * wp * c];
    let cols = g.w.min(wp.saturating_sub(g.pad_left));
    let rows = g.h.min(hp.saturating_sub(g.pad_top));
    frame[..g.pad_top.min(hp) * wp * c].fill(T::ZERO);
    for iy in 0..rows {
        let row = &mut frame[(iy + g.pad_top) * wp * c..][..wp * c];
        let (left, rest) = row.split_at_mut(g.pad_left.min(wp) * c);
        let (inside, right) = rest.split_at_mut(cols * c);
        left.fill(T::ZERO);
        inside.copy_from_slice(&x[iy * g.w * c..][..cols * c]);
        right.fill(T::ZERO);
    }
    frame[(g.pad_top + rows).min(hp) * wp * c..].fill(T::ZERO);
}

/// One sample as the direct kernels read it: `x` itself where its frame is the sample (a
/// "valid" convolution that reads every row and column), else `x` copied into `padded`
/// (`pad`). The copy was half of the `memmove` cycles of a bigger-CNN training step.
pub(super) fn framed<'a, T: Real>(g: &ConvGeom, x: &'a [T], padded: &'a mut [T]) -> &'a [T] {
    if g.pad_top == 0 && g.pad_left == 0 && padded_dims(g) == (g.h, g.w) {
        x
    } else {
        pad(g, x, padded);
        padded
    }
}

#[inline(always)]
fn madd<T: Real, const FMA: bool>(a: T, b: T, acc: T) -> T {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// Offsets of every tap (ky, kx, channel) from its output pixel's corner in the padded frame.
fn tap_offsets(g: &ConvGeom) -> Vec<usize> {
    let (_, wp) = padded_dims(g);
    let mut out = Vec::with_capacity(taps(g));
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            for ci in 0..g.c {
                out.push((ky * g.dh * wp + kx * g.dw) * g.c + ci);
            }
        }
    }
    out
}

/// One sample's output `y` ([oh, ow, filters]) from its padded input.
pub(super) fn forward_sample<T: Real>(g: &ConvGeom, xp: &[T], packed: &[T], y: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(xp), Some(packed), Some(y)) =
        (wide(), as_f32(xp), as_f32(packed), as_f32_mut(y))
    {
        // SAFETY: the CPU has AVX-512F (`wide`).
        return unsafe { super::conv_direct_avx512::forward_sample(g, xp, packed, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { forward_sample_fma(g, xp, packed, y) };
    }
    forward_sample_body::<T, false>(g, xp, packed, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_sample_fma<T: Real>(g: &ConvGeom, xp: &[T], packed: &[T], y: &mut [T]) {
    forward_sample_body::<T, true>(g, xp, packed, y)
}

#[inline(always)]
fn forward_sample_body<T: Real, const FMA: bool>(
    g: &ConvGeom,
    xp: &[T],
    packed: &[T],
    y: &mut [T],
) {
    let offsets = tap_offsets(g);
    let (_, wp) = padded_dims(g);
    for oy in 0..g.oh {
        let mut ox = 0;
        while ox + PB <= g.ow {
            forward_block::<T, FMA, PB>(g, xp, wp, &offsets, packed, oy, ox, y);
            ox += PB;
        }
        while ox < g.ow {
            forward_block::<T, FMA, 1>(g, xp, wp, &offsets, packed, oy, ox, y);
            ox += 1;
        }
    }
}

/// Output pixels (oy, ox .. ox + P) × all filters, block by block of `FW` filters.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block<T: Real, const FMA: bool, const P: usize>(
    g: &ConvGeom,
    xp: &[T],
    wp: usize,
    offsets: &[usize],
    packed: &[T],
    oy: usize,
    ox: usize,
    y: &mut [T],
) {
    let (taps, f) = (offsets.len(), g.filters);
    let (kernel, bias) = packed.split_at(blocks(g) * taps * FW);
    let corner: [usize; P] = std::array::from_fn(|p| (oy * g.sh * wp + (ox + p) * g.sw) * g.c);
    for block in 0..blocks(g) {
        let b: &[T; FW] = bias[block * FW..][..FW].try_into().expect("FW-long slice");
        let mut acc = [*b; P];
        let k = &kernel[block * taps * FW..][..taps * FW];
        for (t, &off) in offsets.iter().enumerate() {
            let kr: &[T; FW] = k[t * FW..][..FW].try_into().expect("FW-long slice");
            for p in 0..P {
                let xv = xp[corner[p] + off];
                for j in 0..FW {
                    acc[p][j] = madd::<T, FMA>(xv, kr[j], acc[p][j]);
                }
            }
        }
        let valid = FW.min(f - block * FW);
        for (p, a) in acc.iter().enumerate() {
            y[((oy * g.ow + ox + p) * f + block * FW)..][..valid].copy_from_slice(&a[..valid]);
        }
    }
}

/// Adds one sample's kernel gradient, dK[tap, filter] += Σ_pixels x(pixel, tap) · dy[pixel,
/// filter], onto `dkernel` (HWIO).
pub(super) fn dkernel_sample<T: Real>(g: &ConvGeom, xp: &[T], dy: &[T], dkernel: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(xp), Some(dy), Some(dkernel)) =
        (wide(), as_f32(xp), as_f32(dy), as_f32_mut(dkernel))
    {
        // SAFETY: the CPU has AVX-512F (`wide`).
        return unsafe { super::conv_direct_avx512::dkernel_sample(g, xp, dy, dkernel) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { dkernel_sample_fma(g, xp, dy, dkernel) };
    }
    dkernel_sample_body::<T, false>(g, xp, dy, dkernel)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dkernel_sample_fma<T: Real>(g: &ConvGeom, xp: &[T], dy: &[T], dkernel: &mut [T]) {
    dkernel_sample_body::<T, true>(g, xp, dy, dkernel)
}

#[inline(always)]
fn dkernel_sample_body<T: Real, const FMA: bool>(
    g: &ConvGeom,
    xp: &[T],
    dy: &[T],
    dkernel: &mut [T],
) {
    let offsets = tap_offsets(g);
    let taps = offsets.len();
    for block in 0..blocks(g) {
        let mut t = 0;
        while t + 4 <= taps {
            dkernel_taps::<T, FMA, 4>(g, xp, &offsets[t..t + 4], dy, block, t, dkernel);
            t += 4;
        }
        match taps - t {
            0 => {}
            1 => dkernel_taps::<T, FMA, 1>(g, xp, &offsets[t..], dy, block, t, dkernel),
            2 => dkernel_taps::<T, FMA, 2>(g, xp, &offsets[t..], dy, block, t, dkernel),
            _ => dkernel_taps::<T, FMA, 3>(g, xp, &offsets[t..], dy, block, t, dkernel),
        }
    }
}

/// Taps `t0 .. t0 + B` × filters of `block`, summed over every output pixel in registers.
#[inline(always)]
fn dkernel_taps<T: Real, const FMA: bool, const B: usize>(
    g: &ConvGeom,
    xp: &[T],
    offsets: &[usize],
    dy: &[T],
    block: usize,
    t0: usize,
    dkernel: &mut [T],
) {
    let (_, wp) = padded_dims(g);
    let f = g.filters;
    let valid = FW.min(f - block * FW);
    let off: [usize; B] = std::array::from_fn(|b| offsets[b]);
    // Summed row by row of output pixels, then the rows into `total`: shorter chains of
    // rounding than one sum over the whole map.
    let mut total = [[T::ZERO; FW]; B];
    let mut row = [T::ZERO; FW];
    for oy in 0..g.oh {
        let mut acc = [[T::ZERO; FW]; B];
        for ox in 0..g.ow {
            let d = &dy[(oy * g.ow + ox) * f + block * FW..];
            let d: &[T; FW] = if valid == FW {
                d[..FW].try_into().expect("FW-long slice")
            } else {
                row[..valid].copy_from_slice(&d[..valid]);
                &row
            };
            let corner = (oy * g.sh * wp + ox * g.sw) * g.c;
            for b in 0..B {
                let xv = xp[corner + off[b]];
                for j in 0..FW {
                    acc[b][j] = madd::<T, FMA>(xv, d[j], acc[b][j]);
                }
            }
        }
        for (t, a) in total.iter_mut().zip(&acc) {
            for (t, a) in t.iter_mut().zip(a) {
                *t += *a;
            }
        }
    }
    for (b, a) in total.iter().enumerate() {
        for (dk, v) in dkernel[(t0 + b) * f + block * FW..][..valid]
            .iter_mut()
            .zip(a)
        {
            *dk += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stream_copy;

    #[test]
    fn stream_copy_copies_every_value_at_any_alignment() {
        // Heads before a 64-byte boundary, whole vectors, tails after the last one.
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        for offset in 0..17 {
            for len in [0, 1, 15, 16, 17, 64, 100, 283 - offset] {
                let mut dst = vec![f32::NAN; 300];
                stream_copy(&src[..len], &mut dst[offset..offset + len]);
                assert_eq!(
                    &dst[offset..offset + len],
                    &src[..len],
                    "offset {offset}, {len}"
                );
                assert!(dst[..offset]
                    .iter()
                    .chain(&dst[offset + len..])
                    .all(|v| v.is_nan()));
            }
        }
    }
}
