//! Filter visualisation: the input that maximises the mean activation of one channel, found by
//! gradient ascent in input space from grey plus seeded noise (Chollet's "visualizing convnet
//! filters", with Olah et al.'s regularisers: L2 towards grey, total variation, jitter).

use super::maps::input_shape;
use crate::nn::{EngineError, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ascent {
    pub steps: usize,
    /// Step length along the RMS-normalised gradient, in units of the value range.
    pub lr: f32,
    /// Weight of ½‖x − grey‖² (pulls pixels back towards grey).
    pub l2: f32,
    /// Weight of the squared total variation Σ (Δx)² (penalises pixel-level noise).
    pub tv: f32,
    /// Each step shifts the image by up to this many pixels (robustness to translation).
    pub jitter: usize,
    pub seed: u64,
}

/// The value range the model's inputs live in (from the data): grey is its middle, and
/// ascent clips to it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRange {
    pub lo: f32,
    pub hi: f32,
}

/// One image per entry of `channels`, each maximising the mean of that channel of `layer`'s
/// output; `[k, H, W, C]`.
pub fn visualise(
    network: &mut Network,
    layer: usize,
    channels: &[usize],
    ascent: &Ascent,
    range: InputRange,
) -> Result<Vec<f32>, EngineError> {
    let [height, width, depth] = input_shape(network)?;
    let k = channels.len();
    let per = height * width * depth;
    let output = network.ir().layers[layer].output.clone();
    let width_out = *output.last().unwrap_or(&1);
    let positions: usize = output.iter().product::<usize>() / width_out.max(1);
    // Objective seed: the mean over positions of channel `channels[i]` for image i.
    let mut seed = vec![0.0f32; k * positions * width_out];
    for (i, &c) in channels.iter().enumerate() {
        if c >= width_out {
            return Err(EngineError::Shape {
                layer: network.ir().layers[layer].name.clone(),
                message: format!("has {width_out} channels; channel {c} does not exist"),
            });
        }
        for p in 0..positions {
            seed[(i * positions + p) * width_out + c] = 1.0 / positions as f32;
        }
    }
    let span = (range.hi - range.lo).max(f32::EPSILON);
    let grey = range.lo + 0.5 * span;
    let mut rng = ChaCha8Rng::seed_from_u64(ascent.seed);
    let noise = Normal::new(0.0f32, 0.1 * span).expect("a finite σ");
    let mut x: Vec<f32> = (0..k * per)
        .map(|_| grey + noise.sample(&mut rng))
        .collect();
    for _ in 0..ascent.steps {
        let j = ascent.jitter as isize;
        let (dy, dx) = (rng.gen_range(-j..=j), rng.gen_range(-j..=j));
        let shifted = roll(&x, [k, height, width, depth], dy, dx);
        let out = network.objective_gradients(&shifted, k, layer, &seed, None)?;
        let grad = roll(&out.gradients.data, [k, height, width, depth], -dy, -dx);
        let tv = tv_gradient(&x, [k, height, width, depth]);
        for i in 0..k {
            let g = &grad[i * per..(i + 1) * per];
            let rms = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / per as f64).sqrt();
            let scale = 1.0 / (rms as f32 + 1e-8);
            for p in i * per..(i + 1) * per {
                let step = grad[p] * scale - ascent.l2 * (x[p] - grey) - ascent.tv * tv[p];
                x[p] = (x[p] + ascent.lr * span * step).clamp(range.lo, range.hi);
            }
        }
    }
    Ok(x)
}

/// Shifts every image by (dy, dx) pixels, wrapping around.
fn roll(x: &[f32], [k, h, w, c]: [usize; 4], dy: isize, dx: isize) -> Vec<f32> {
    if dy == 0 && dx == 0 {
        return x.to_vec();
    }
    let mut out = vec![0.0; x.len()];
    for i in 0..k {
        for y in 0..h {
            let sy = (y as isize - dy).rem_euclid(h as isize) as usize;
            for xx in 0..w {
                let sx = (xx as isize - dx).rem_euclid(w as isize) as usize;
                let (to, from) = (((i * h + y) * w + xx) * c, ((i * h + sy) * w + sx) * c);
                out[to..to + c].copy_from_slice(&x[from..from + c]);
            }
        }
    }
    out
}

/// Gradient of the squared total variation Σ (x[y+1,x] − x[y,x])² + (x[y,x+1] − x[y,x])².
fn tv_gradient(x: &[f32], [k, h, w, c]: [usize; 4]) -> Vec<f32> {
    let mut g = vec![0.0; x.len()];
    let at = |i: usize, y: usize, xx: usize, ch: usize| ((i * h + y) * w + xx) * c + ch;
    for i in 0..k {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    let p = at(i, y, xx, ch);
                    if y + 1 < h {
                        let d = x[at(i, y + 1, xx, ch)] - x[p];
                        g[p] -= 2.0 * d;
                        g[at(i, y + 1, xx, ch)] += 2.0 * d;
                    }
                    if xx + 1 < w {
                        let d = x[at(i, y, xx + 1, ch)] - x[p];
                        g[p] -= 2.0 * d;
                        g[at(i, y, xx + 1, ch)] += 2.0 * d;
                    }
                }
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tv_gradient_matches_finite_differences() {
        let shape = [1, 3, 4, 2];
        let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 / 10.0).collect();
        let tv = |x: &[f32]| -> f64 {
            let mut s = 0.0;
            let at = |y: usize, xx: usize, ch: usize| (y * 4 + xx) * 2 + ch;
            for y in 0..3 {
                for xx in 0..4 {
                    for ch in 0..2 {
                        if y + 1 < 3 {
                            s += ((x[at(y + 1, xx, ch)] - x[at(y, xx, ch)]) as f64).powi(2);
                        }
                        if xx + 1 < 4 {
                            s += ((x[at(y, xx + 1, ch)] - x[at(y, xx, ch)]) as f64).powi(2);
                        }
                    }
                }
            }
            s
        };
        let g = tv_gradient(&x, shape);
        for p in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[p] += 1e-3;
            down[p] -= 1e-3;
            let numeric = (tv(&up) - tv(&down)) / 2e-3;
            assert!(
                (numeric - g[p] as f64).abs() < 1e-3,
                "pixel {p}: {numeric} vs {}",
                g[p]
            );
        }
    }

    #[test]
    fn roll_and_back_is_the_identity() {
        let x: Vec<f32> = (0..2 * 3 * 4 * 2).map(|v| v as f32).collect();
        let shape = [2, 3, 4, 2];
        assert_eq!(roll(&roll(&x, shape, 2, -1), shape, -2, 1), x);
    }
}
