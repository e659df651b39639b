//! Inverted dropout: during training each element is kept with probability 1 − rate and scaled
//! by 1/(1 − rate); the mask is drawn from a ChaCha8 stream seeded per (model seed, step, layer)
//! so a resumed run draws the same masks. Identity at inference.

use super::super::real::Real;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed of one layer's mask at one optimizer step.
pub fn mask_seed(model_seed: u64, step: u64, layer: usize) -> u64 {
    model_seed
        ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (layer as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
}

pub fn fill_mask<T: Real>(rate: f32, seed: u64, mask: &mut [T]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep = T::from_f64(1.0 / (1.0 - rate as f64));
    for m in mask.iter_mut() {
        *m = if rng.gen::<f32>() >= rate {
            keep
        } else {
            T::ZERO
        };
    }
}

/// y = x ⊙ mask (forward) and dx = dy ⊙ mask (backward) are the same product.
pub fn apply_mask<T: Real>(x: &[T], mask: &[T], y: &mut [T]) {
    for ((y, x), m) in y.iter_mut().zip(x).zip(mask) {
        *y = *x * *m;
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};
    use super::*;

    #[test]
    fn mask_is_seeded_scaled_and_its_gradient_is_exact() {
        let mut mask = vec![0.0f64; 4000];
        fill_mask(0.25, mask_seed(7, 3, 2), &mut mask);
        let kept = mask.iter().filter(|m| **m > 0.0).count();
        assert!((2800..3200).contains(&kept), "{kept}");
        assert!(mask
            .iter()
            .all(|m| *m == 0.0 || (*m - 4.0 / 3.0).abs() < 1e-12));
        let mut again = vec![0.0f64; 4000];
        fill_mask(0.25, mask_seed(7, 3, 2), &mut again);
        assert_eq!(mask, again);
        fill_mask(0.25, mask_seed(7, 4, 2), &mut again);
        assert_ne!(mask, again);

        let x = values(20, 1);
        let r = values(20, 2);
        let m = &mask[..20];
        let mut dx = vec![0.0; 20];
        apply_mask(&r, m, &mut dx);
        assert_gradient("dropout", &x, &dx, |x| {
            let mut y = vec![0.0; 20];
            apply_mask(x, m, &mut y);
            dot(&y, &r)
        });
    }
}
