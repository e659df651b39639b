//! The memory-bound loops (pooling, batchnorm, activations, a convolution's prologue and
//! epilogue) are plain Rust that the compiler vectorises. Built for baseline x86-64, which
//! `gpl` must be to run on any node, they get SSE2: 4 f32 or 2 f64 lanes. `multiversion!`
//! compiles such a loop a second time for AVX2 + FMA (8 f32, 4 f64 lanes) and picks that
//! copy at run time where the CPU has it, as matrixmultiply does for its kernels.
//!
//! Not AVX-512: compiled for it, the compiler vectorises 16 lanes four times unrolled, 64
//! values a step, and a batchnorm's or pool's row of 32 channels then runs entirely in the
//! scalar remainder. Measured on the bigger CNN (`gpl bench engine --no-torch`, one run
//! each): with AVX-512 copies conv2d_1's inference went from 5.7 to 7.5 ms and its training
//! backward from 11.3 to 14.9 ms.
//!
//! Both copies compute the same bits: the same operations in the same order, only wider.
//! Rust never fuses a multiply and an add into an FMA by itself, and the compiler does not
//! reorder floating-point sums, so a loop vectorised across channels keeps each channel's
//! order of summation.

use std::sync::atomic::{AtomicBool, Ordering};

static WIDE: AtomicBool = AtomicBool::new(true);

/// Lets the wide copies run (the default) or not: the test that both copies give the same
/// bits trains once each way.
pub fn set_wide(on: bool) {
    WIDE.store(on, Ordering::Relaxed);
}

/// Whether the wide copies run: allowed, and this CPU has the features they are compiled for.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        WIDE.load(Ordering::Relaxed)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Defines a loop's body once and runs it compiled for AVX2 + FMA where the CPU has it, for
/// baseline x86-64 otherwise:
///
/// ```ignore
/// multiversion!(fn [T: Real] (c: usize, rows: &[T], out: &mut [f64]) { ... })
/// ```
///
/// expands, where it is written, to a call of that body with those arguments (the names of
/// the caller's variables). The body is an `#[inline(always)]` function inlined into a
/// `#[target_feature]` copy, so everything it calls inline is compiled for AVX2 too.
macro_rules! multiversion {
    (fn [$($gen:tt)*] ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {{
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn body<$($gen)*>($($arg: $ty),*) $(-> $ret)? $body
        #[cfg_attr(
            target_arch = "x86_64",
            target_feature(enable = "avx2,fma")
        )]
        #[allow(clippy::too_many_arguments)]
        unsafe fn wide<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
            body($($arg),*)
        }
        if $crate::nn::simd::avx2() {
            // SAFETY: the CPU has the features `wide` is compiled for.
            unsafe { wide($($arg),*) }
        } else {
            body($($arg),*)
        }
    }};
}
pub(crate) use multiversion;
