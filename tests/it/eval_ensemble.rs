//! Soft voting and the deterministic weight search.

use gpl::eval::ensemble::{search_weights, soft_vote, SearchObjective, SearchOptions};
use gpl::eval::ProbMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A synthetic member: right with probability `skill`, otherwise confidently wrong.
fn member(y: &[u32], classes: usize, skill: f64, seed: u64) -> ProbMatrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(y.len() * classes);
    for &label in y {
        let mut row: Vec<f64> = (0..classes).map(|_| rng.gen_range(0.05..1.0)).collect();
        let target = if rng.gen_bool(skill) {
            label as usize
        } else {
            (label as usize + 1) % classes
        };
        row[target] += 2.0;
        let total: f64 = row.iter().sum();
        values.extend(row.iter().map(|v| v / total));
    }
    ProbMatrix::new(y.len(), classes, values).unwrap()
}

fn labels(n: usize, classes: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..classes as u32)).collect()
}

fn accuracy(p: &ProbMatrix, y: &[u32]) -> f64 {
    p.argmax().iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
}

#[test]
fn soft_vote_is_the_normalised_weighted_mean() {
    let a = ProbMatrix::new(1, 2, vec![0.2, 0.8]).unwrap();
    let b = ProbMatrix::new(1, 2, vec![0.6, 0.4]).unwrap();
    let v = soft_vote(&[&a, &b], &[3.0, 1.0]).unwrap();
    let expect = [0.75 * 0.2 + 0.25 * 0.6, 0.75 * 0.8 + 0.25 * 0.4];
    assert!((v.values()[0] - expect[0]).abs() < 1e-15 && (v.values()[1] - expect[1]).abs() < 1e-15);
    assert!(soft_vote(&[&a, &b], &[1.0]).is_err());
    let c = ProbMatrix::new(1, 3, vec![0.2, 0.3, 0.5]).unwrap();
    assert!(soft_vote(&[&a, &c], &[1.0, 1.0]).is_err());
}

#[test]
fn search_prefers_the_skilled_member_and_beats_every_single_member() {
    let y = labels(300, 4, 1);
    let strong = member(&y, 4, 0.85, 2);
    let weak = member(&y, 4, 0.45, 3);
    let noise = member(&y, 4, 0.25, 4);
    let members = [&strong, &weak, &noise];
    let result = search_weights(&members, &y, &SearchOptions::default()).unwrap();
    assert_eq!(result.weights.len(), 3);
    assert!((result.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(
        result.weights[0] > result.weights[2],
        "weights {:?}",
        result.weights
    );
    assert_eq!(result.grid_step, 0.05);
    // Each single member is a grid vertex, so the search can only do at least as well.
    for m in members {
        assert!(result.accuracy >= accuracy(m, &y));
    }
    // The reported score is the score of the reported weights.
    let blended = soft_vote(&members, &result.weights).unwrap();
    assert!((accuracy(&blended, &y) - result.accuracy).abs() < 1e-12);
    // Deterministic.
    assert_eq!(
        search_weights(&members, &y, &SearchOptions::default()).unwrap(),
        result
    );
}

#[test]
fn log_loss_objective_and_many_members() {
    let y = labels(120, 3, 9);
    let ms: Vec<ProbMatrix> = (0..5)
        .map(|i| member(&y, 3, 0.3 + 0.1 * i as f64, 10 + i))
        .collect();
    let refs: Vec<&ProbMatrix> = ms.iter().collect();
    let options = SearchOptions {
        objective: SearchObjective::LogLoss,
        max_grid_points: 1000,
        ..SearchOptions::default()
    };
    let result = search_weights(&refs, &y, &options).unwrap();
    // 5 members at step 0.05 would be 10,626 points: the grid was coarsened.
    assert!(result.grid_step > 0.05);
    let single_best = ms
        .iter()
        .map(|m| gpl::eval::classification::log_loss(&y, m).unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(result.log_loss <= single_best);
}

#[test]
fn search_refuses_bad_options() {
    let y = vec![0, 1];
    let a = ProbMatrix::new(2, 2, vec![0.9, 0.1, 0.2, 0.8]).unwrap();
    let bad = SearchOptions {
        step: 0.3,
        ..SearchOptions::default()
    };
    assert!(search_weights(&[&a], &y, &bad).is_err());
    assert!(search_weights(&[], &y, &SearchOptions::default()).is_err());
}
