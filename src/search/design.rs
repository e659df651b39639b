//! The initial design: a seeded Latin hypercube in the dimension cube [0, 1]^D, so each
//! dimension's range is cut into `n` equal strata and every stratum gets one point. Through
//! `Space::from_unit` an integer or a choice with at least `n` values is stratified too. A
//! Latin hypercube rather than a scrambled Sobol sequence: no direction-number table to carry,
//! any `n` (Sobol balances only at powers of two), and at 5–20 points the two fill the cube
//! alike (docs/decisions.md).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `n` points of `[0, 1]^dims`, one per stratum along every axis, placed at random inside it.
pub fn latin_hypercube(n: usize, dims: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let mut points = vec![vec![0.0; dims]; n];
    for j in 0..dims {
        let mut strata: Vec<usize> = (0..n).collect();
        strata.shuffle(rng);
        for (p, s) in points.iter_mut().zip(strata) {
            p[j] = (s as f64 + rng.gen::<f64>()) / n as f64;
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_stratum_of_every_axis_holds_one_point() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let pts = latin_hypercube(9, 4, &mut rng);
        for j in 0..4 {
            let mut strata: Vec<usize> = pts.iter().map(|p| (p[j] * 9.0) as usize).collect();
            strata.sort_unstable();
            assert_eq!(strata, (0..9).collect::<Vec<_>>());
        }
        let again = latin_hypercube(9, 4, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(pts, again);
    }
}
