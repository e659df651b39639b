//! Matrix multiply behind one function, with two interchangeable backends
//! (`gemm` 0.17 and `matrixmultiply` 0.3) so `gpl bench engine` can compare them on
//! the convolution shapes. The default, matrixmultiply, measured faster single-threaded on
//! every conv shape (docs/decisions.md, engine). The engine parallelises over batch parts with
//! rayon and calls GEMM single-threaded inside them, so matrixmultiply's global pool (sized
//! once from MATMUL_NUM_THREADS) is pinned to one thread by `configure` before first use.

use super::real::Real;
use std::any::TypeId;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

/// A strided read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major matrix whose rows are `ld` apart.
    pub fn rows(data: &'a [T], ld: usize) -> Self {
        MatRef {
            data,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gemm,
    MatrixMultiply,
}

static BACKEND: AtomicU8 = AtomicU8::new(Backend::MatrixMultiply as u8);
static CONFIGURE: std::sync::Once = std::sync::Once::new();

/// Pins matrixmultiply to one thread per call unless the user set MATMUL_NUM_THREADS.
/// Called when a network is built, before any product runs.
pub fn configure() {
    CONFIGURE.call_once(|| {
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            std::env::set_var("MATMUL_NUM_THREADS", "1");
        }
    });
}

pub fn set_backend(backend: Backend) {
    BACKEND.store(backend as u8, Ordering::Relaxed);
}

pub fn backend() -> Backend {
    match BACKEND.load(Ordering::Relaxed) {
        0 => Backend::Gemm,
        _ => Backend::MatrixMultiply,
    }
}

static TIMING: AtomicBool = AtomicBool::new(false);
static TIMED_NANOS: AtomicU64 = AtomicU64::new(0);

/// Sums the time spent inside products (GEMM, direct convolution) from now on (`gpl bench
/// engine`'s share of a step outside them), or stops; either way the sum starts again from zero.
pub fn set_timing(on: bool) {
    TIMING.store(on, Ordering::Relaxed);
    TIMED_NANOS.store(0, Ordering::Relaxed);
}

/// Thread-seconds spent inside products since `set_timing(true)`, summed over threads.
pub fn timed_seconds() -> f64 {
    TIMED_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `c = a × b (+ c when accumulate)`, with `a` m×k, `b` k×n and `c` m×n row-major with row
/// stride `ldc`. `threads > 1` lets the `gemm` backend split the product over rayon.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() > last_index(m, n, ldc, 1), "gemm: output too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::ZERO);
            }
        }
        return;
    }
    // These bounds make the raw-pointer calls below sound.
    assert!(
        a.data.len() > last_index(m, k, a.rs, a.cs),
        "gemm: lhs too small"
    );
    assert!(
        b.data.len() > last_index(k, n, b.rs, b.cs),
        "gemm: rhs too small"
    );
    timed_product(|| product(m, k, n, a, b, c, ldc, accumulate, threads))
}

/// Runs `f`, a product (a GEMM or a direct convolution), counting its time while
/// `set_timing` is on.
pub fn timed_product<R>(f: impl FnOnce() -> R) -> R {
    let started = TIMING.load(Ordering::Relaxed).then(Instant::now);
    let r = f();
    if let Some(started) = started {
        TIMED_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn product<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    let beta = if accumulate { T::ONE } else { T::ZERO };
    match backend() {
        Backend::Gemm => {
            let parallelism = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: bounds checked above; `c` does not alias `a` or `b` (borrow rules).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    ldc as isize,
                    accumulate,
                    a.data.as_ptr(),
                    a.cs as isize,
                    a.rs as isize,
                    b.data.as_ptr(),
                    b.cs as isize,
                    b.rs as isize,
                    beta,
                    T::ONE,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        }
        Backend::MatrixMultiply => {
            // SAFETY: bounds checked above; the casts are guarded by the TypeId tests.
            unsafe {
                if TypeId::of::<T>() == TypeId::of::<f32>() {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.data.as_ptr() as *const f32,
                        a.rs as isize,
                        a.cs as isize,
                        b.data.as_ptr() as *const f32,
                        b.rs as isize,
                        b.cs as isize,
                        beta.to_f64() as f32,
                        c.as_mut_ptr() as *mut f32,
                        ldc as isize,
                        1,
                    )
                } else {
                    matrixmultiply::dgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.data.as_ptr() as *const f64,
                        a.rs as isize,
                        a.cs as isize,
                        b.data.as_ptr() as *const f64,
                        b.rs as isize,
                        b.cs as isize,
                        beta.to_f64(),
                        c.as_mut_ptr() as *mut f64,
                        ldc as isize,
                        1,
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: MatRef<f64>, b: MatRef<f64>) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    #[test]
    fn both_backends_match_naive_with_transposes_and_accumulation() {
        configure();
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.91).cos()).collect();
        let a_ref = MatRef::rows(&a, k);
        let b_ref = MatRef::rows(&bt, k).t();
        let want = naive(m, k, n, a_ref, b_ref);
        for backend_choice in [Backend::Gemm, Backend::MatrixMultiply] {
            set_backend(backend_choice);
            let mut c = vec![1.0; m * n];
            gemm(m, k, n, a_ref, b_ref, &mut c, n, true, 1);
            for (got, w) in c.iter().zip(&want) {
                assert!((got - (w + 1.0)).abs() < 1e-12, "{backend_choice:?}");
            }
            gemm(m, k, n, a_ref, b_ref, &mut c, n, false, 2);
            for (got, w) in c.iter().zip(&want) {
                assert!((got - w).abs() < 1e-12, "{backend_choice:?}");
            }
        }
        set_backend(Backend::MatrixMultiply);
    }
}
