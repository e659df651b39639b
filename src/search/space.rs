//! A search space: named dimensions (integer range, float range, choice), the points in it,
//! and the two maps the optimiser needs. `from_unit` sends the dimension cube [0, 1]^D to a
//! point with equal measure for every integer and every choice (random search and the design
//! sample through it); `encode` and `decode` map points to and from the GP's feature cube.
//!
//! Features: a float is one coordinate (its log when asked); an integer is one coordinate at
//! the centre of its value's cell; a choice among numbers is ordinal, one coordinate at the
//! centre of its rank's cell, because `[3, 5, 7]` kernel sizes are ordered and one coordinate
//! keeps the GP's dimension low; a choice among words is one-hot, because words have no order.

use std::fmt;

/// One option of a choice.
#[derive(Clone, Debug, PartialEq)]
pub enum Level {
    Num(f64),
    Word(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// `lo..hi`, both included.
    Int {
        lo: i64,
        hi: i64,
    },
    /// `lo..hi`; on a log scale when `log` (then `lo > 0`).
    Float {
        lo: f64,
        hi: f64,
        log: bool,
    },
    Choice(Vec<Level>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    pub name: String,
    pub domain: Domain,
}

/// A dimension's value in a point: the integer, the float, or the index of the choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Choice(usize),
}

/// One value per dimension, in the space's order.
pub type Point = Vec<Value>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    #[error("dimension `{0}`: the range is empty (lo > hi)")]
    EmptyRange(String),
    #[error("dimension `{0}`: a bound is not a finite number")]
    NotFinite(String),
    #[error("dimension `{0}`: a log scale needs lo > 0")]
    LogNotPositive(String),
    #[error("dimension `{0}`: a choice needs at least one option")]
    EmptyChoice(String),
    #[error("the space has no dimension")]
    NoDimension,
}

/// How a dimension is laid out in the feature vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Coding {
    /// One continuous coordinate.
    Continuous,
    /// One coordinate taking `count` values, the centres of equal cells.
    Ordinal { count: usize },
    /// `count` coordinates, one of them 1.
    OneHot { count: usize },
}

impl Coding {
    pub fn width(self) -> usize {
        match self {
            Coding::Continuous | Coding::Ordinal { .. } => 1,
            Coding::OneHot { count } => count,
        }
    }
}

/// The centre of cell `k` of `count` equal cells of [0, 1].
fn cell_centre(k: usize, count: usize) -> f64 {
    (k as f64 + 0.5) / count as f64
}

/// The cell of [0, 1] (`count` equal cells) that `u` falls in.
fn cell_of(u: f64, count: usize) -> usize {
    ((u.clamp(0.0, 1.0) * count as f64) as usize).min(count - 1)
}

impl Dim {
    pub fn coding(&self) -> Coding {
        match &self.domain {
            Domain::Float { .. } => Coding::Continuous,
            Domain::Int { lo, hi } => Coding::Ordinal {
                count: (hi - lo + 1) as usize,
            },
            Domain::Choice(levels) if levels.iter().all(|l| matches!(l, Level::Num(_))) => {
                Coding::Ordinal {
                    count: levels.len(),
                }
            }
            Domain::Choice(levels) => Coding::OneHot {
                count: levels.len(),
            },
        }
    }

    /// Choice indices by increasing value (numeric choices are ordinal by value, not by
    /// the order they were written in).
    fn ranks(levels: &[Level]) -> Vec<usize> {
        let num = |l: &Level| match l {
            Level::Num(x) => *x,
            Level::Word(_) => 0.0,
        };
        let mut order: Vec<usize> = (0..levels.len()).collect();
        order.sort_by(|&a, &b| num(&levels[a]).total_cmp(&num(&levels[b])).then(a.cmp(&b)));
        order
    }

    /// The value at `u` in [0, 1], every integer and choice with equal measure.
    pub fn from_unit(&self, u: f64) -> Value {
        let u = u.clamp(0.0, 1.0);
        match &self.domain {
            Domain::Int { lo, hi } => Value::Int(lo + cell_of(u, (hi - lo + 1) as usize) as i64),
            Domain::Float { lo, hi, log: false } => Value::Float(lo + u * (hi - lo)),
            Domain::Float { lo, hi, log: true } => {
                Value::Float((lo.ln() + u * (hi.ln() - lo.ln())).exp().clamp(*lo, *hi))
            }
            Domain::Choice(levels) => Value::Choice(cell_of(u, levels.len())),
        }
    }

    /// Appends the value's features to `out`.
    fn encode_into(&self, v: Value, out: &mut Vec<f64>) {
        match (&self.domain, v) {
            (Domain::Int { lo, hi }, Value::Int(i)) => {
                let count = (hi - lo + 1) as usize;
                out.push(cell_centre((i.clamp(*lo, *hi) - lo) as usize, count));
            }
            (Domain::Float { lo, hi, log }, Value::Float(x)) => {
                let (a, b, x) = if *log {
                    (lo.ln(), hi.ln(), x.max(*lo).ln())
                } else {
                    (*lo, *hi, x)
                };
                out.push(if b > a {
                    ((x - a) / (b - a)).clamp(0.0, 1.0)
                } else {
                    0.5
                });
            }
            (Domain::Choice(levels), Value::Choice(k)) => match self.coding() {
                Coding::OneHot { count } => out.extend((0..count).map(|j| f64::from(j == k))),
                Coding::Ordinal { .. } | Coding::Continuous => {
                    let rank = Self::ranks(levels)
                        .iter()
                        .position(|&j| j == k)
                        .unwrap_or(0);
                    out.push(cell_centre(rank, levels.len()));
                }
            },
            // A value of the wrong kind for its dimension is the caller's bug; encode the
            // dimension's middle rather than panic inside a long search.
            (_, _) => out.extend(std::iter::repeat_n(0.5, self.coding().width())),
        }
    }

    /// The value whose features are nearest `f` (this dimension's slice of a feature vector).
    fn decode(&self, f: &[f64]) -> Value {
        match (&self.domain, self.coding()) {
            (Domain::Choice(_), Coding::OneHot { .. }) => {
                let mut best = 0;
                for (j, x) in f.iter().enumerate() {
                    if *x > f[best] {
                        best = j;
                    }
                }
                Value::Choice(best)
            }
            (Domain::Choice(levels), _) => {
                Value::Choice(Self::ranks(levels)[cell_of(f[0], levels.len())])
            }
            _ => self.from_unit(f[0]),
        }
    }

    /// The value as text: `16`, `0.25`, `relu`.
    pub fn show(&self, v: Value) -> String {
        match (&self.domain, v) {
            (Domain::Choice(levels), Value::Choice(k)) => match levels.get(k) {
                Some(Level::Num(x)) => format!("{x}"),
                Some(Level::Word(w)) => w.clone(),
                None => format!("#{k}"),
            },
            (_, Value::Int(i)) => i.to_string(),
            (_, Value::Float(x)) => format!("{x}"),
            (_, Value::Choice(k)) => format!("#{k}"),
        }
    }

    /// How many values the dimension takes (`None` for a float range).
    pub fn count(&self) -> Option<usize> {
        match &self.domain {
            Domain::Int { lo, hi } => Some((hi - lo + 1) as usize),
            Domain::Float { .. } => None,
            Domain::Choice(levels) => Some(levels.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    dims: Vec<Dim>,
}

impl Space {
    pub fn new(dims: Vec<Dim>) -> Result<Space, SpaceError> {
        if dims.is_empty() {
            return Err(SpaceError::NoDimension);
        }
        for d in &dims {
            let name = || d.name.clone();
            match &d.domain {
                Domain::Int { lo, hi } if lo > hi => return Err(SpaceError::EmptyRange(name())),
                Domain::Int { .. } => {}
                Domain::Float { lo, hi, log } => {
                    if !lo.is_finite() || !hi.is_finite() {
                        return Err(SpaceError::NotFinite(name()));
                    }
                    if lo > hi {
                        return Err(SpaceError::EmptyRange(name()));
                    }
                    if *log && *lo <= 0.0 {
                        return Err(SpaceError::LogNotPositive(name()));
                    }
                }
                Domain::Choice(levels) if levels.is_empty() => {
                    return Err(SpaceError::EmptyChoice(name()))
                }
                Domain::Choice(levels) => {
                    if levels
                        .iter()
                        .any(|l| matches!(l, Level::Num(x) if !x.is_finite()))
                    {
                        return Err(SpaceError::NotFinite(name()));
                    }
                }
            }
        }
        Ok(Space { dims })
    }

    pub fn dims(&self) -> &[Dim] {
        &self.dims
    }

    /// The length of a feature vector.
    pub fn width(&self) -> usize {
        self.dims.iter().map(|d| d.coding().width()).sum()
    }

    /// The point at `u` in the dimension cube [0, 1]^D.
    pub fn from_unit(&self, u: &[f64]) -> Point {
        self.dims
            .iter()
            .zip(u)
            .map(|(d, &x)| d.from_unit(x))
            .collect()
    }

    pub fn encode(&self, p: &[Value]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.width());
        for (d, &v) in self.dims.iter().zip(p) {
            d.encode_into(v, &mut out);
        }
        out
    }

    pub fn decode(&self, f: &[f64]) -> Point {
        let mut at = 0;
        self.dims
            .iter()
            .map(|d| {
                let w = d.coding().width();
                let v = d.decode(&f[at..at + w]);
                at += w;
                v
            })
            .collect()
    }

    /// The features of the point nearest `f`: what the acquisition is evaluated at.
    pub fn snap(&self, f: &[f64]) -> Vec<f64> {
        self.encode(&self.decode(f))
    }

    /// Whether `p` is a point of this space (right kinds, in range).
    pub fn contains(&self, p: &[Value]) -> bool {
        p.len() == self.dims.len()
            && self.dims.iter().zip(p).all(|(d, &v)| match (&d.domain, v) {
                (Domain::Int { lo, hi }, Value::Int(i)) => (*lo..=*hi).contains(&i),
                (Domain::Float { lo, hi, .. }, Value::Float(x)) => *lo <= x && x <= *hi,
                (Domain::Choice(levels), Value::Choice(k)) => k < levels.len(),
                _ => false,
            })
    }

    /// How many points the space has, when it is finite and the count fits.
    pub fn count(&self) -> Option<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |acc, d| d.count().and_then(|c| acc.checked_mul(c)))
    }

    /// The grid with `levels` values per float range, and every value of an integer range or
    /// a choice up to `levels` of them (evenly spread beyond): its size and its `i`-th point,
    /// the last dimension varying fastest. Points are made one at a time, so a huge grid
    /// costs nothing until it is walked.
    pub fn grid_size(&self, levels: usize) -> usize {
        self.dims
            .iter()
            .map(|d| grid_levels(d, levels))
            .fold(1usize, |acc, c| acc.saturating_mul(c))
    }

    pub fn grid_point(&self, levels: usize, mut i: usize) -> Point {
        let mut out = vec![Value::Int(0); self.dims.len()];
        for (j, d) in self.dims.iter().enumerate().rev() {
            let c = grid_levels(d, levels);
            let k = i % c;
            i /= c;
            out[j] = match (&d.domain, d.count()) {
                // `c` values spread over all of them, both ends included.
                (Domain::Choice(_), Some(n)) => Value::Choice(spread(k, c, n)),
                (Domain::Int { lo, .. }, Some(n)) => Value::Int(lo + spread(k, c, n) as i64),
                _ => d.from_unit(if c > 1 {
                    k as f64 / (c - 1) as f64
                } else {
                    0.5
                }),
            };
        }
        out
    }
}

fn grid_levels(d: &Dim, levels: usize) -> usize {
    let levels = levels.max(1);
    d.count().map_or(levels, |n| n.min(levels))
}

/// Index `k` of `c` values spread evenly over `0..n`, both ends included.
fn spread(k: usize, c: usize, n: usize) -> usize {
    if c <= 1 {
        (n - 1) / 2
    } else {
        ((k * (n - 1)) as f64 / (c - 1) as f64).round() as usize
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            match &d.domain {
                Domain::Int { lo, hi } => write!(f, "{} in {lo}..{hi}", d.name)?,
                Domain::Float { lo, hi, log } => write!(
                    f,
                    "{} in {lo}..{hi}{}",
                    d.name,
                    if *log { " log" } else { "" }
                )?,
                Domain::Choice(levels) => {
                    let shown: Vec<String> = (0..levels.len())
                        .map(|k| d.show(Value::Choice(k)))
                        .collect();
                    write!(f, "{} in [{}]", d.name, shown.join(", "))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::new(vec![
            Dim {
                name: "f".into(),
                domain: Domain::Int { lo: 8, hi: 11 },
            },
            Dim {
                name: "lr".into(),
                domain: Domain::Float {
                    lo: 1e-4,
                    hi: 1e-1,
                    log: true,
                },
            },
            Dim {
                name: "k".into(),
                domain: Domain::Choice(vec![Level::Num(7.0), Level::Num(3.0), Level::Num(5.0)]),
            },
            Dim {
                name: "act".into(),
                domain: Domain::Choice(vec![
                    Level::Word("relu".into()),
                    Level::Word("swish".into()),
                ]),
            },
        ])
        .unwrap()
    }

    #[test]
    fn encode_decode_round_trip_and_width() {
        let s = space();
        assert_eq!(s.width(), 1 + 1 + 1 + 2);
        let p = vec![
            Value::Int(10),
            Value::Float(1e-3),
            Value::Choice(1),
            Value::Choice(1),
        ];
        let f = s.encode(&p);
        assert_eq!(f[0], 2.5 / 4.0);
        assert!((f[1] - 1.0 / 3.0).abs() < 1e-12, "log scale: {}", f[1]);
        // Choice 1 is the value 3, the smallest: rank 0 of 3.
        assert_eq!(f[2], 0.5 / 3.0);
        assert_eq!(&f[3..], &[0.0, 1.0]);
        let back = s.decode(&f);
        assert_eq!(back[0], Value::Int(10));
        assert_eq!(back[2], Value::Choice(1));
        assert_eq!(back[3], Value::Choice(1));
        match back[1] {
            Value::Float(x) => assert!((x - 1e-3).abs() < 1e-15),
            v => panic!("{v:?}"),
        }
        assert_eq!(s.snap(&f), f);
    }

    #[test]
    fn unit_cube_gives_equal_measure_to_integers() {
        let d = &space().dims[0];
        let counts = (0..4000).fold([0usize; 4], |mut c, i| {
            if let Value::Int(v) = d.from_unit((i as f64 + 0.5) / 4000.0) {
                c[(v - 8) as usize] += 1;
            }
            c
        });
        assert_eq!(counts, [1000; 4]);
        assert_eq!(d.from_unit(1.0), Value::Int(11));
    }

    #[test]
    fn bad_spaces_are_refused() {
        let one = |domain| {
            Space::new(vec![Dim {
                name: "x".into(),
                domain,
            }])
        };
        assert_eq!(
            one(Domain::Int { lo: 3, hi: 2 }),
            Err(SpaceError::EmptyRange("x".into()))
        );
        assert_eq!(
            one(Domain::Float {
                lo: 0.0,
                hi: 1.0,
                log: true
            }),
            Err(SpaceError::LogNotPositive("x".into()))
        );
        assert_eq!(
            one(Domain::Choice(vec![])),
            Err(SpaceError::EmptyChoice("x".into()))
        );
        assert_eq!(Space::new(vec![]), Err(SpaceError::NoDimension));
    }

    #[test]
    fn grid_walks_every_combination_once() {
        let s = space();
        // 4 integers capped at 3 levels, 3 floats, 3 choices, 2 words.
        assert_eq!(s.grid_size(3), 3 * 3 * 3 * 2);
        let mut seen: Vec<Vec<f64>> = (0..s.grid_size(3))
            .map(|i| s.encode(&s.grid_point(3, i)))
            .collect();
        assert!(seen.iter().all(|f| s.contains(&s.decode(f))));
        seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
        seen.dedup();
        assert_eq!(seen.len(), 54);
        assert_eq!(s.grid_point(3, 0)[0], Value::Int(8));
        assert_eq!(s.grid_point(3, 53)[0], Value::Int(11));
    }
}
