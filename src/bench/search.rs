//! `gpl bench search`: the optimiser on its own. Bayes and random search minimise Branin
//! (budget 30) and Hartmann-6 (budget 50) from seeds 0..9, one trial at a time; one line per
//! (problem, strategy) with the median regret (best value found minus the known minimum) and
//! the time per proposal. `scripts/bench_search_reference.py` prints the same lines for a
//! Python GP library.

use crate::search::{Dim, Domain, Goal, Noise, Search, Space, Strategy, Trial, Value};
use std::time::Instant;

pub struct Problem {
    pub name: &'static str,
    pub bounds: &'static [(f64, f64)],
    pub minimum: f64,
    pub budget: usize,
    pub f: fn(&[f64]) -> f64,
}

/// Branin–Hoo on [−5, 10] × [0, 15]; minimum 0.397887 at three points.
pub fn branin(x: &[f64]) -> f64 {
    use std::f64::consts::PI;
    let (a, b, c) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI);
    let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * PI));
    a * (x[1] - b * x[0] * x[0] + c * x[0] - r).powi(2) + s * (1.0 - t) * x[0].cos() + s
}

/// Hartmann-6 on [0, 1]^6; minimum −3.32237.
pub fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            let e: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-e).exp()
        })
        .sum::<f64>()
}

pub const PROBLEMS: &[Problem] = &[
    Problem {
        name: "branin",
        bounds: &[(-5.0, 10.0), (0.0, 15.0)],
        minimum: 0.397_887_357_729_738,
        budget: 30,
        f: branin,
    },
    Problem {
        name: "hartmann6",
        bounds: &[(0.0, 1.0); 6],
        minimum: -3.322_368_011_391_339,
        budget: 50,
        f: hartmann6,
    },
];

/// Design points before the GP: the dimension plus one, at least five.
pub fn init_for(dims: usize) -> usize {
    (dims + 1).max(5)
}

/// The best value one run of `strategy` finds on `p` from `seed`, and the proposals' total time.
pub fn run_once(p: &Problem, strategy: Strategy, noise: Noise, seed: u64) -> (f64, f64) {
    let dims = p
        .bounds
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi))| Dim {
            name: format!("x{}", i + 1),
            domain: Domain::Float { lo, hi, log: false },
        })
        .collect();
    let search = Search {
        // Finite, ordered bounds: the space is valid by construction.
        space: Space::new(dims).expect("a valid benchmark space"),
        goal: Goal::Minimize,
        strategy,
        seed,
        noise,
    };
    let mut trials: Vec<Trial> = Vec::with_capacity(p.budget);
    let mut seconds = 0.0;
    while trials.len() < p.budget {
        let start = Instant::now();
        let next = search.propose(&trials, &[], 1, &|_| true);
        seconds += start.elapsed().as_secs_f64();
        let Some(point) = next.into_iter().next() else {
            break;
        };
        let x: Vec<f64> = point
            .iter()
            .map(|v| match v {
                Value::Float(x) => *x,
                Value::Int(i) => *i as f64,
                Value::Choice(k) => *k as f64,
            })
            .collect();
        let value = (p.f)(&x);
        trials.push(Trial { point, value });
    }
    let best = trials.iter().map(|t| t.value).fold(f64::INFINITY, f64::min);
    (best, seconds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The cost of one proposal at 50 trials in 6 dimensions (Hartmann-6), and the share of it
/// the linear algebra could be: one Cholesky with the inverse, which the GP fit repeats per
/// likelihood evaluation. What the choice of hand-written linear algebra was measured by.
fn cost_at_50(noise: Noise) {
    let p = &PROBLEMS[1];
    let search = |strategy| Search {
        space: Space::new(
            (0..6)
                .map(|i| Dim {
                    name: format!("x{i}"),
                    domain: Domain::Float {
                        lo: 0.0,
                        hi: 1.0,
                        log: false,
                    },
                })
                .collect(),
        )
        .expect("a valid benchmark space"),
        goal: Goal::Minimize,
        strategy,
        seed: 0,
        noise,
    };
    let random = search(Strategy::Random);
    let trials: Vec<Trial> = random
        .propose(&[], &[], 50, &|_| true)
        .into_iter()
        .map(|point| {
            let x: Vec<f64> = point
                .iter()
                .map(|v| match v {
                    Value::Float(x) => *x,
                    _ => 0.0,
                })
                .collect();
            let value = (p.f)(&x);
            Trial { point, value }
        })
        .collect();
    let bayes = search(Strategy::Bayes { init: 0 });
    let start = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        bayes.propose(&trials, &[], 1, &|_| true);
    }
    let propose_ms = 1e3 * start.elapsed().as_secs_f64() / runs as f64;
    let x: Vec<Vec<f64>> = trials
        .iter()
        .map(|t| bayes.space.encode(&t.point))
        .collect();
    let n = x.len();
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d2: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum();
            k[i * n + j] = (-d2 / 0.5).exp() + if i == j { 1e-6 } else { 0.0 };
        }
    }
    let start = Instant::now();
    let reps = 200;
    for _ in 0..reps {
        let c = crate::search::linalg::Cholesky::new(&k, n).expect("positive definite");
        std::hint::black_box(c.inverse());
    }
    let chol_us = 1e6 * start.elapsed().as_secs_f64() / reps as f64;
    let y: Vec<f64> = trials.iter().map(|t| t.value).collect();
    let hyper = crate::search::gp::Hyper(vec![-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0, -10.0]);
    let start = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(crate::search::gp::log_marginal(&x, &y, &hyper));
    }
    let lml_us = 1e6 * start.elapsed().as_secs_f64() / reps as f64;
    println!(
        "search cost: one bayes proposal at n=50, d=6 takes {propose_ms:.1} ms; one marginal likelihood with gradient {lml_us:.0} µs, of which its Cholesky and inverse {chol_us:.0} µs"
    );
}

/// Prints one line per (problem, strategy) for seeds `0..seeds`, then the cost at n = 50.
pub fn run(seeds: u64, noise: Noise) {
    for p in PROBLEMS {
        let strategies = [
            (
                "bayes",
                Strategy::Bayes {
                    init: init_for(p.bounds.len()),
                },
            ),
            ("random", Strategy::Random),
        ];
        for (name, strategy) in strategies {
            let mut regrets = Vec::new();
            let mut seconds = 0.0;
            for seed in 0..seeds {
                let (best, s) = run_once(p, strategy, noise, seed);
                regrets.push(best - p.minimum);
                seconds += s;
            }
            println!(
                "search bench: {} {name} median regret {:.4} over {seeds} seeds (budget {}); {:.1} ms per proposal",
                p.name,
                median(regrets),
                p.budget,
                1e3 * seconds / (seeds as f64 * p.budget as f64),
            );
        }
    }
    cost_at_50(noise);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_functions_reach_their_known_minima() {
        use std::f64::consts::PI;
        for x in [[-PI, 12.275], [PI, 2.275], [9.42478, 2.475]] {
            assert!((branin(&x) - PROBLEMS[0].minimum).abs() < 1e-5);
        }
        let xstar = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&xstar) - PROBLEMS[1].minimum).abs() < 1e-5);
    }
}
