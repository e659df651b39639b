//! What this machine's memory streams on the bench's two threads: the floor under the passes
//! that read or write a stored activation (docs/decisions.md, "The routed batchnorm loops",
//! issue 19).
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example stream_bandwidth
//!
//! Buffers the size of the bigger CNN's first-layer training output (64 × 67 × 67 × 32
//! floats, 37 MB), each pass split over rayon in 64 parts, three rounds: a read (sums in 32
//! independent lanes, so the adds do not limit it), a write, and a read of two buffers with a
//! write of one (a batchnorm's input-gradient pass).

use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let n = 64 * 67 * 67 * 32;
    let part = n / 64;
    let passes = 20;
    let (a, mut b) = (vec![1.0f32; n], vec![2.0f32; n]);
    let gb_per_s = |bytes: usize, t: Instant| bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!(
        "{} threads, {:.1} MB buffers",
        rayon::current_num_threads(),
        4.0 * n as f64 / 1e6
    );
    let mut check = 0.0f32;
    for round in 1..=3 {
        let t = Instant::now();
        for _ in 0..passes {
            check += a
                .par_chunks(part)
                .map(|c| {
                    let mut lanes = [0f32; 32];
                    for w in c.chunks_exact(32) {
                        for (s, v) in lanes.iter_mut().zip(w) {
                            *s += v;
                        }
                    }
                    lanes.iter().sum::<f32>()
                })
                .sum::<f32>();
        }
        let read = gb_per_s(passes * 4 * n, t);
        let t = Instant::now();
        for k in 0..passes {
            b.par_chunks_mut(part).for_each(|c| c.fill(k as f32));
        }
        let write = gb_per_s(passes * 4 * n, t);
        let t = Instant::now();
        for _ in 0..passes {
            b.par_chunks_mut(part)
                .zip(a.par_chunks(part))
                .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = *y * 0.5 + *x));
        }
        let both = gb_per_s(passes * 12 * n, t);
        println!("round {round}: read {read:.1} GB/s, write {write:.1} GB/s, read 2 + write 1 {both:.1} GB/s");
    }
    // Keeps the sums from being optimised away.
    assert!(check.is_finite() && b[n / 2].is_finite());
}
