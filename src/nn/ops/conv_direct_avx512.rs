//! The direct convolution's kernels for f32 on CPUs with AVX-512F: forward (which also
//! serves the input gradient, through `conv_direct::transposed`) and the kernel gradient.
//!
//! im2col copies every input value kh·kw times and the GEMM then packs that copy again; for
//! a 3×3 layer of 32 channels on a 31×31 map that copying took as long as the products
//! (`gpl bench engine`, conv2d_2: 19 ms forward against 9 ms of GEMM). Here the products
//! read the zero-padded sample in place. A register block holds up to `MAX_PIXELS` output
//! pixels × 32 filters (two 16-lane vectors each, 28 accumulators of the 32 registers); each
//! tap loads its two kernel vectors once and broadcasts one input value per pixel, so the
//! loop is bound by the multiply-adds, not by loads. The kernel gradient turns the roles
//! round: `TAPS` taps × 32 filters in registers, summed over an output row's pixels, the
//! rows added in order.
//!
//! The kernel is `conv_direct::pack`'s layout ([block of 16 filters][tap][16], bias after),
//! so every block is 16 lanes and a partial last block is zero-padded (read) or masked
//! (written). Every sum runs in a fixed order whatever the thread count.

use super::conv::ConvGeom;
use super::conv_direct::{padded_dims, padded_len, FW};
use std::arch::x86_64::*;

/// Output pixels in one forward register block at most: 14 × 2 accumulators, two kernel
/// vectors and one broadcast fit the 32 vector registers.
const MAX_PIXELS: usize = 14;
/// Taps in one kernel-gradient register block at most: 12 × 2 accumulators, two output
/// gradient vectors and a broadcast in registers (the rows' sums live in memory).
const TAPS: usize = 12;

/// Calls `$f::<$nb, N>($arg)` for the run-time count `$n` in 1..=14 (pixels or taps).
macro_rules! by_count {
    ($n:expr, $f:ident::<$nb:literal>($arg:expr)) => {
        match $n {
            1 => $f::<$nb, 1>($arg),
            2 => $f::<$nb, 2>($arg),
            3 => $f::<$nb, 3>($arg),
            4 => $f::<$nb, 4>($arg),
            5 => $f::<$nb, 5>($arg),
            6 => $f::<$nb, 6>($arg),
            7 => $f::<$nb, 7>($arg),
            8 => $f::<$nb, 8>($arg),
            9 => $f::<$nb, 9>($arg),
            10 => $f::<$nb, 10>($arg),
            11 => $f::<$nb, 11>($arg),
            12 => $f::<$nb, 12>($arg),
            13 => $f::<$nb, 13>($arg),
            14 => $f::<$nb, 14>($arg),
            n => unreachable!("register block of {n}"),
        }
    };
}

/// Whether this CPU runs these kernels.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The kernel's taps as runs that lie contiguously in the padded frame: (offset from an
/// output pixel's corner, taps). Without horizontal dilation a kernel row's kw·c taps are
/// one run (as they are in the HWIO kernel), otherwise each window position's c taps.
fn tap_runs(g: &ConvGeom) -> Vec<(usize, usize)> {
    let (_, wp) = padded_dims(g);
    let mut out = Vec::with_capacity(g.kh * g.kw);
    for ky in 0..g.kh {
        if g.dw == 1 {
            out.push((ky * g.dh * wp * g.c, g.kw * g.c));
            continue;
        }
        for kx in 0..g.kw {
            out.push(((ky * g.dh * wp + kx * g.dw) * g.c, g.c));
        }
    }
    out
}

/// `len` split into runs of at most `most` of near-equal length (a 31-wide row is
/// 11 + 10 + 10, not 14 + 14 + 3: a short run leaves the FMA units idle).
fn even_runs(len: usize, most: usize) -> Vec<(usize, usize)> {
    let runs = len.div_ceil(most).max(1);
    let (base, extra) = (len / runs, len % runs);
    let mut out = Vec::with_capacity(runs);
    let mut start = 0;
    for r in 0..runs {
        let run = base + usize::from(r < extra);
        out.push((start, run));
        start += run;
    }
    out
}

/// The filters' 16-wide blocks two at a time, as (first, last): `last == first` for a lone
/// block at the end.
fn block_pairs(filters: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = filters.div_ceil(FW);
    (0..blocks)
        .step_by(2)
        .map(move |b| (b, (b + 1).min(blocks - 1)))
}

/// The lanes of a 16-filter block that hold filters (all but past the last filter).
fn lanes(filters: usize, block: usize) -> __mmask16 {
    let valid = filters - block * FW;
    if valid >= FW {
        0xFFFF
    } else {
        (1u16 << valid) - 1
    }
}

/// One or two 16-filter blocks: their kernels, biases and lanes (the second entry repeats
/// the first when there is one).
#[derive(Clone, Copy)]
struct Filters {
    kernel: [*const f32; 2],
    bias: [*const f32; 2],
    lanes: [__mmask16; 2],
}

/// One forward register block: `P` pixels from `x` (the first pixel's corner in the padded
/// frame, the next ones `stride` apart) to `out` (rows `f` apart).
struct ForwardBlock<'a> {
    x: *const f32,
    stride: usize,
    taps: &'a [(usize, usize)],
    filters: Filters,
    out: *mut f32,
    f: usize,
}

/// One sample's output `y` ([oh, ow, filters]) from its padded input `xp` and the packed
/// kernel and bias.
///
/// # Safety
/// The CPU must have AVX-512F (`available`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward_sample(g: &ConvGeom, xp: &[f32], packed: &[f32], y: &mut [f32]) {
    let (_, wp) = padded_dims(g);
    let taps = g.kh * g.kw * g.c;
    let blocks = g.filters.div_ceil(FW);
    // These bounds make every pointer below stay inside its slice.
    assert!(xp.len() >= padded_len(g), "direct: padded sample too small");
    assert!(
        packed.len() >= blocks * (taps + 1) * FW,
        "direct: packed kernel"
    );
    assert!(y.len() >= g.out_len(), "direct: output too small");
    let tap_runs = tap_runs(g);
    let runs = even_runs(g.ow, MAX_PIXELS);
    let (kernel, bias) = packed.split_at(blocks * taps * FW);
    for (b, last) in block_pairs(g.filters) {
        let filters = Filters {
            kernel: [b, last].map(|k| kernel.as_ptr().add(k * taps * FW)),
            bias: [b, last].map(|k| bias.as_ptr().add(k * FW)),
            lanes: [b, last].map(|k| lanes(g.filters, k)),
        };
        for oy in 0..g.oh {
            for &(ox, pixels) in &runs {
                let block = ForwardBlock {
                    x: xp.as_ptr().add((oy * g.sh * wp + ox * g.sw) * g.c),
                    stride: g.sw * g.c,
                    taps: &tap_runs,
                    filters,
                    out: y.as_mut_ptr().add((oy * g.ow + ox) * g.filters + b * FW),
                    f: g.filters,
                };
                if last > b {
                    by_count!(pixels, forward_block::<2>(&block));
                } else {
                    by_count!(pixels, forward_block::<1>(&block));
                }
            }
        }
    }
}

/// `P` pixels × `NB` blocks of 16 filters, summed in registers over every tap.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_block<const NB: usize, const P: usize>(b: &ForwardBlock) {
    let mut acc = [[_mm512_setzero_ps(); NB]; P];
    for j in 0..NB {
        let bias = _mm512_loadu_ps(b.filters.bias[j]);
        for row in acc.iter_mut() {
            row[j] = bias;
        }
    }
    let mut tap = 0;
    for &(offset, taps) in b.taps {
        let x = b.x.add(offset);
        for ci in 0..taps {
            let mut k = [_mm512_setzero_ps(); NB];
            for (j, k) in k.iter_mut().enumerate() {
                *k = _mm512_loadu_ps(b.filters.kernel[j].add(tap));
            }
            for (p, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(p * b.stride + ci));
                for j in 0..NB {
                    row[j] = _mm512_fmadd_ps(xv, k[j], row[j]);
                }
            }
            tap += FW;
        }
    }
    for (p, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(b.out.add(p * b.f + j * FW), b.filters.lanes[j], *v);
        }
    }
}

/// One kernel-gradient register block: `B` consecutive taps of one run (at `x`, the
/// first tap's offset in the padded frame) × the filters' blocks, over every output pixel.
struct KernelBlock<'a> {
    g: &'a ConvGeom,
    wp: usize,
    x: *const f32,
    dy: *const f32,
    lanes: [__mmask16; 2],
    /// The first tap's row of the kernel gradient, at the first block's filters.
    dk: *mut f32,
}

/// Adds one sample's kernel gradient, dK[tap, filter] += Σ_pixels x(pixel, tap) ·
/// dy[pixel, filter], onto `dkernel` (HWIO).
///
/// # Safety
/// The CPU must have AVX-512F (`available`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dkernel_sample(g: &ConvGeom, xp: &[f32], dy: &[f32], dkernel: &mut [f32]) {
    let (_, wp) = padded_dims(g);
    assert!(xp.len() >= padded_len(g), "direct: padded sample too small");
    assert!(dy.len() >= g.out_len(), "direct: output gradient too small");
    assert!(dkernel.len() >= g.kernel_len(), "direct: kernel gradient");
    // Register blocks of taps: (offset in the padded frame, first tap, taps).
    let mut tap_blocks = Vec::new();
    let mut first_tap = 0;
    for (offset, run) in tap_runs(g) {
        for (t, taps) in even_runs(run, TAPS) {
            tap_blocks.push((offset + t, first_tap + t, taps));
        }
        first_tap += run;
    }
    for (b, last) in block_pairs(g.filters) {
        for &(offset, tap, taps) in &tap_blocks {
            let block = KernelBlock {
                g,
                wp,
                x: xp.as_ptr().add(offset),
                dy: dy.as_ptr().add(b * FW),
                lanes: [b, last].map(|k| lanes(g.filters, k)),
                dk: dkernel.as_mut_ptr().add(tap * g.filters + b * FW),
            };
            if last > b {
                by_count!(taps, dkernel_block::<2>(&block));
            } else {
                by_count!(taps, dkernel_block::<1>(&block));
            }
        }
    }
}

/// `B` taps × `NB` blocks of 16 filters: summed over each output row in registers, the
/// rows' sums added in order, the total added onto the kernel gradient.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dkernel_block<const NB: usize, const B: usize>(k: &KernelBlock) {
    let g = k.g;
    let mut total = [[_mm512_setzero_ps(); NB]; B];
    for oy in 0..g.oh {
        let mut acc = [[_mm512_setzero_ps(); NB]; B];
        for ox in 0..g.ow {
            let d = k.dy.add((oy * g.ow + ox) * g.filters);
            let mut dv = [_mm512_setzero_ps(); NB];
            for (j, dv) in dv.iter_mut().enumerate() {
                *dv = _mm512_maskz_loadu_ps(k.lanes[j], d.add(j * FW));
            }
            let x = k.x.add((oy * g.sh * k.wp + ox * g.sw) * g.c);
            for (t, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(t));
                for j in 0..NB {
                    row[j] = _mm512_fmadd_ps(xv, dv[j], row[j]);
                }
            }
        }
        for (total, acc) in total.iter_mut().zip(&acc) {
            for j in 0..NB {
                total[j] = _mm512_add_ps(total[j], acc[j]);
            }
        }
    }
    for (t, row) in total.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let at = k.dk.add(t * g.filters + j * FW);
            let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(k.lanes[j], at), *v);
            _mm512_mask_storeu_ps(at, k.lanes[j], sum);
        }
    }
}

/// `src` copied to `dst` with non-temporal stores, which write whole cache lines to memory
/// without first reading them in (a plain store reads each line it writes).
///
/// # Safety
/// The CPU must have AVX-512F (`available`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn stream_copy(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    // Plain stores up to the first 64-byte boundary of `dst`, streams after it.
    let head = dst.as_ptr().align_offset(64).min(dst.len());
    dst[..head].copy_from_slice(&src[..head]);
    let body = (dst.len() - head) / FW * FW;
    for i in (head..head + body).step_by(FW) {
        let v = _mm512_loadu_ps(src.as_ptr().add(i));
        _mm512_stream_ps(dst.as_mut_ptr().add(i), v);
    }
    dst[head + body..].copy_from_slice(&src[head + body..]);
    _mm_sfence();
}
