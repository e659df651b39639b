//! `Search::propose`: the next points to try, a deterministic function of the seed, the
//! finished trials and the running ones. Bayes starts with a Latin-hypercube design, then fits
//! a GP to the finished trials and maximises log EI; a batch is filled by the Kriging believer
//! (each chosen or running point joins the GP at its predicted mean). Random draws each trial's
//! point from its own stream of the seed; grid walks the grid in order. A failed trial (NaN
//! objective) stays out of the GP, but its point is never proposed again, nor is any finished
//! or running point.

use super::acquisition::{self, key, Context, SearchOptions};
use super::design::latin_hypercube;
use super::gp::{FitOptions, Gp, Noise, Standardise};
use super::space::{Point, Space};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Minimize,
    Maximize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// A GP with log EI after `init` design points.
    Bayes {
        init: usize,
    },
    Random,
    /// `levels` values per float range (and at most that many per integer or choice).
    Grid {
        levels: usize,
    },
}

/// A finished trial: its point and objective; NaN when the trial failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub point: Point,
    pub value: f64,
}

#[derive(Clone, Debug)]
pub struct Search {
    pub space: Space,
    pub goal: Goal,
    pub strategy: Strategy,
    pub seed: u64,
    pub noise: Noise,
}

/// Streams of the seed: one per random trial (its index), the design's, and one per Bayes
/// proposal round (offset by the number of trials so far).
const DESIGN_STREAM: u64 = u64::MAX;
const BAYES_STREAM: u64 = 1 << 40;
/// Random draws per slot before giving up on finding an untaken feasible point.
const DRAWS: usize = 1000;

/// Observed (standardised value, features) pairs, best first.
type Ranked = Vec<(f64, Vec<f64>)>;

/// The GP fitted to the finished trials, for predictions in the objective's units (partial
/// dependence plots).
#[derive(Clone, Debug)]
pub struct Surrogate {
    gp: Gp,
    scale: Standardise,
    sign: f64,
}

impl Surrogate {
    /// Posterior mean and standard deviation of the objective at `p`.
    pub fn predict(&self, space: &Space, p: &[super::space::Value]) -> (f64, f64) {
        let (m, v) = self.gp.predict(&space.encode(p));
        (
            self.sign * (m * self.scale.scale + self.scale.mean),
            v.sqrt() * self.scale.scale,
        )
    }
}

impl Search {
    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// +1 when larger is better: the GP always maximises.
    fn sign(&self) -> f64 {
        match self.goal {
            Goal::Maximize => 1.0,
            Goal::Minimize => -1.0,
        }
    }

    /// Up to `n_batch` new points, none of them finished, running (`pending`) or infeasible.
    /// Fewer when the space (or the grid) has no more. `finished` in trial order.
    pub fn propose(
        &self,
        finished: &[Trial],
        pending: &[Point],
        n_batch: usize,
        feasible: &dyn Fn(&Point) -> bool,
    ) -> Vec<Point> {
        let mut taken: BTreeSet<Vec<u64>> = finished
            .iter()
            .map(|t| &t.point)
            .chain(pending)
            .map(|p| key(&self.space.encode(p)))
            .collect();
        let n_taken = (finished.len() + pending.len()) as u64;
        let mut out = Vec::new();
        match self.strategy {
            Strategy::Random => self.random_fill(&mut out, &mut taken, n_taken, n_batch, feasible),
            Strategy::Grid { levels } => {
                for i in 0..self.space.grid_size(levels) {
                    if out.len() == n_batch {
                        break;
                    }
                    let p = self.space.grid_point(levels, i);
                    if feasible(&p) && taken.insert(key(&self.space.encode(&p))) {
                        out.push(p);
                    }
                }
            }
            Strategy::Bayes { init } => {
                let mut rng = self.rng(DESIGN_STREAM);
                for u in latin_hypercube(init, self.space.dims().len(), &mut rng) {
                    if out.len() == n_batch {
                        return out;
                    }
                    let p = self.space.from_unit(&u);
                    if feasible(&p) && taken.insert(key(&self.space.encode(&p))) {
                        out.push(p);
                    }
                }
                if out.len() < n_batch {
                    self.bayes_fill(&mut out, &mut taken, finished, pending, n_batch, feasible);
                }
            }
        }
        out
    }

    /// The GP of the finished trials that have a value, or `None` with fewer than two.
    pub fn surrogate(&self, finished: &[Trial]) -> Option<Surrogate> {
        let n_taken = finished.len() as u64;
        self.fit(finished, &mut self.rng(BAYES_STREAM + n_taken))
            .map(|(gp, scale, _)| Surrogate {
                gp,
                scale,
                sign: self.sign(),
            })
    }

    /// The GP on the finished trials' standardised (maximised) values, the standardisation,
    /// and the observed features best first.
    fn fit(&self, finished: &[Trial], rng: &mut ChaCha8Rng) -> Option<(Gp, Standardise, Ranked)> {
        let observed: Vec<(f64, Vec<f64>)> = finished
            .iter()
            .filter(|t| t.value.is_finite())
            .map(|t| (self.sign() * t.value, self.space.encode(&t.point)))
            .collect();
        if observed.len() < 2 {
            return None;
        }
        let raw: Vec<f64> = observed.iter().map(|(y, _)| *y).collect();
        let scale = Standardise::of(&raw);
        let x: Vec<Vec<f64>> = observed.iter().map(|(_, f)| f.clone()).collect();
        let y: Vec<f64> = raw.iter().map(|v| scale.apply(*v)).collect();
        let opts = FitOptions {
            noise: self.noise,
            ..FitOptions::default()
        };
        let gp = Gp::fit(x, y.clone(), opts, rng)?;
        let mut ranked: Vec<(f64, Vec<f64>)> = y
            .into_iter()
            .zip(observed.into_iter().map(|(_, f)| f))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        Some((gp, scale, ranked))
    }

    fn bayes_fill(
        &self,
        out: &mut Vec<Point>,
        taken: &mut BTreeSet<Vec<u64>>,
        finished: &[Trial],
        pending: &[Point],
        n_batch: usize,
        feasible: &dyn Fn(&Point) -> bool,
    ) {
        let n_taken = (finished.len() + pending.len()) as u64;
        let mut rng = self.rng(BAYES_STREAM + n_taken);
        let Some((mut gp, _, ranked)) = self.fit(finished, &mut rng) else {
            return self.random_fill(out, taken, n_taken, n_batch, feasible);
        };
        let mut best = ranked[0].0;
        let incumbents: Vec<Vec<f64>> = ranked.into_iter().map(|(_, f)| f).collect();
        // Kriging believer: running points and this batch's design points join at their mean.
        for p in pending.iter().chain(out.iter()) {
            let f = self.space.encode(p);
            let (m, _) = gp.predict(&f);
            best = best.max(m);
            match gp.with_point(f, m) {
                Some(g) => gp = g,
                None => break,
            }
        }
        while out.len() < n_batch {
            let cx = Context {
                space: &self.space,
                best,
                incumbents: &incumbents,
                taken,
                feasible,
            };
            let Some((p, f)) = acquisition::maximize(&gp, &cx, SearchOptions::default(), &mut rng)
            else {
                break;
            };
            let (m, _) = gp.predict(&f);
            taken.insert(key(&f));
            out.push(p);
            best = best.max(m);
            match gp.with_point(f, m) {
                Some(g) => gp = g,
                None => break,
            }
        }
        let n_now = n_taken + out.len() as u64;
        self.random_fill(out, taken, n_now, n_batch, feasible);
    }

    /// Fills `out` up to `n_batch` with random untaken feasible points, slot `i` drawing from
    /// stream `first_stream + i`.
    fn random_fill(
        &self,
        out: &mut Vec<Point>,
        taken: &mut BTreeSet<Vec<u64>>,
        first_stream: u64,
        n_batch: usize,
        feasible: &dyn Fn(&Point) -> bool,
    ) {
        let d = self.space.dims().len();
        let mut slot = 0;
        while out.len() < n_batch {
            let mut rng = self.rng(first_stream + slot);
            slot += 1;
            let found = (0..DRAWS).find_map(|_| {
                let u: Vec<f64> = (0..d).map(|_| rng.gen::<f64>()).collect();
                let p = self.space.from_unit(&u);
                (feasible(&p) && !taken.contains(&key(&self.space.encode(&p)))).then_some(p)
            });
            let Some(p) = found else {
                return;
            };
            taken.insert(key(&self.space.encode(&p)));
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::space::{Dim, Domain, Level, Value};

    fn mixed() -> Space {
        Space::new(vec![
            Dim {
                name: "f1".into(),
                domain: Domain::Int { lo: 8, hi: 64 },
            },
            Dim {
                name: "k1".into(),
                domain: Domain::Choice(vec![Level::Num(3.0), Level::Num(5.0), Level::Num(7.0)]),
            },
            Dim {
                name: "act".into(),
                domain: Domain::Choice(vec![
                    Level::Word("relu".into()),
                    Level::Word("swish".into()),
                    Level::Word("gelu".into()),
                ]),
            },
            Dim {
                name: "lr".into(),
                domain: Domain::Float {
                    lo: 1e-4,
                    hi: 1e-1,
                    log: true,
                },
            },
        ])
        .unwrap()
    }

    /// A made-up objective over `mixed()`: best at f1 = 40, k1 = 5, swish, lr = 1e-2.
    fn score(p: &[Value]) -> f64 {
        let (Value::Int(f), Value::Choice(k), Value::Choice(a), Value::Float(lr)) =
            (p[0], p[1], p[2], p[3])
        else {
            panic!("{p:?}");
        };
        -((f - 40) as f64 / 20.0).powi(2)
            - f64::from(k != 1) * 0.3
            - f64::from(a != 1) * 0.5
            - (lr.log10() + 2.0).powi(2) * 0.2
    }

    fn run(search: &Search, trials: usize, batch: usize) -> Vec<Trial> {
        let mut done: Vec<Trial> = Vec::new();
        while done.len() < trials {
            let next = search.propose(&done, &[], batch.min(trials - done.len()), &|_| true);
            assert!(!next.is_empty());
            for p in next {
                assert!(search.space.contains(&p), "{p:?}");
                let value = score(&p);
                done.push(Trial { point: p, value });
            }
        }
        done
    }

    #[test]
    fn proposals_are_deterministic_valid_and_new() {
        let s = Search {
            space: mixed(),
            goal: Goal::Maximize,
            strategy: Strategy::Bayes { init: 5 },
            seed: 4,
            noise: Noise::Fitted,
        };
        let a = run(&s, 14, 3);
        let b = run(&s, 14, 3);
        assert_eq!(a, b);
        let keys: BTreeSet<Vec<u64>> = a.iter().map(|t| key(&s.space.encode(&t.point))).collect();
        assert_eq!(keys.len(), a.len(), "a point was proposed twice");
        // Another seed, other points.
        let c = run(
            &Search {
                seed: 5,
                ..s.clone()
            },
            14,
            3,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn bayes_beats_its_own_design_on_a_mixed_space() {
        let s = Search {
            space: mixed(),
            goal: Goal::Maximize,
            strategy: Strategy::Bayes { init: 6 },
            seed: 1,
            noise: Noise::Fitted,
        };
        let done = run(&s, 30, 1);
        let best = |ts: &[Trial]| ts.iter().map(|t| t.value).fold(f64::MIN, f64::max);
        assert!(best(&done) > best(&done[..6]));
        assert!(best(&done) > -0.1, "best {}", best(&done));
    }

    #[test]
    fn minimize_failed_trials_pending_points_and_constraints() {
        let space = Space::new(vec![Dim {
            name: "x".into(),
            domain: Domain::Int { lo: 0, hi: 9 },
        }])
        .unwrap();
        let s = Search {
            space,
            goal: Goal::Minimize,
            strategy: Strategy::Bayes { init: 0 },
            seed: 0,
            noise: Noise::Fitted,
        };
        let t = |x: i64, value: f64| Trial {
            point: vec![Value::Int(x)],
            value,
        };
        let finished = vec![t(0, 5.0), t(9, 4.0), t(4, f64::NAN), t(6, 1.0)];
        let pending = vec![vec![Value::Int(5)]];
        let odd = |p: &Point| matches!(p[0], Value::Int(x) if x % 2 == 1);
        let next = s.propose(&finished, &pending, 10, &odd);
        // Odd and untaken: 1, 3, 7 (9 is finished, 5 is running).
        let mut xs: Vec<i64> = next
            .iter()
            .map(|p| match p[0] {
                Value::Int(x) => x,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            xs[0], 7,
            "minimising: next to the best (6), away from running 5"
        );
        xs.sort_unstable();
        assert_eq!(xs, vec![1, 3, 7]);
    }

    #[test]
    fn random_and_grid() {
        let r = Search {
            space: mixed(),
            goal: Goal::Maximize,
            strategy: Strategy::Random,
            seed: 9,
            noise: Noise::Fitted,
        };
        // The i-th random point depends on the seed and i only: batches do not change them.
        let one_by_one = run(&r, 6, 1);
        let batched = run(&r, 6, 4);
        assert_eq!(one_by_one, batched);
        let g = Search {
            strategy: Strategy::Grid { levels: 2 },
            ..r
        };
        let all = run(&g, 16, 5);
        assert!(g.propose(&all, &[], 5, &|_| true).is_empty());
        assert_eq!(all[0].point[0], Value::Int(8));
        assert_eq!(all[15].point[0], Value::Int(64));
    }
}
