//! Weighted soft voting: an ensemble's probabilities are the weighted mean of its members'.
//! Weights are given (and normalised to sum to 1) or searched on validation predictions.
//!
//! The search is deterministic: every point of a regular grid on the weight simplex (step
//! 0.05 by default; coarser when the grid would exceed `max_grid_points`, which happens from
//! 4 members on), then local refinement from the best point: move half a step of weight from
//! one member to another while that improves the objective, then a quarter step, and so on.
//! Candidates are compared by the objective; an exact tie keeps the one found first.

use serde::{Deserialize, Serialize};

use super::{EvalError, ProbMatrix};

/// What the search maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchObjective {
    /// Validation accuracy; among equal accuracies the lower log-loss wins. Accuracy is what
    /// the study reports, and the log-loss tie-break picks the best-calibrated of the many
    /// weightings that classify the same samples correctly.
    AccuracyThenLogLoss,
    /// Validation log-loss (lower is better): smooth, so the refinement always has a gradient.
    LogLoss,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    pub objective: SearchObjective,
    /// Grid spacing on the simplex; 1/step must be a whole number.
    pub step: f64,
    /// The grid is coarsened (fewer divisions) until it has at most this many points.
    pub max_grid_points: usize,
    /// Halvings of the step during refinement.
    pub refine_rounds: u32,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            objective: SearchObjective::AccuracyThenLogLoss,
            step: 0.05,
            max_grid_points: 5000,
            refine_rounds: 4,
        }
    }
}

/// The searched weights and their validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightSearch {
    pub weights: Vec<f64>,
    pub accuracy: f64,
    pub log_loss: f64,
    pub objective: SearchObjective,
    /// The grid step actually used (coarser than asked when the grid was too large).
    pub grid_step: f64,
    pub candidates_evaluated: usize,
}

/// Weights scaled to sum to 1; each must be finite and non-negative, their sum positive.
pub fn normalize_weights(weights: &[f64]) -> Result<Vec<f64>, EvalError> {
    if weights.is_empty() {
        return Err(EvalError::EnsembleEmpty);
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return Err(EvalError::EnsembleWeights {
            reason: format!("{w} is not a finite non-negative number"),
        });
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(EvalError::EnsembleWeights {
            reason: "they sum to zero".to_string(),
        });
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

fn check_members(members: &[&ProbMatrix]) -> Result<(), EvalError> {
    let first = members.first().ok_or(EvalError::EnsembleEmpty)?;
    for (member, m) in members.iter().enumerate() {
        if m.rows() != first.rows() || m.classes() != first.classes() {
            return Err(EvalError::EnsembleShapes {
                member,
                rows: m.rows(),
                classes: m.classes(),
                rows0: first.rows(),
                classes0: first.classes(),
            });
        }
    }
    Ok(())
}

/// The ensemble's probabilities: Σ wᵢ·Pᵢ with the weights normalised.
pub fn soft_vote(members: &[&ProbMatrix], weights: &[f64]) -> Result<ProbMatrix, EvalError> {
    check_members(members)?;
    if weights.len() != members.len() {
        return Err(EvalError::EnsembleWeights {
            reason: format!("{} weights for {} members", weights.len(), members.len()),
        });
    }
    let weights = normalize_weights(weights)?;
    let (rows, classes) = (members[0].rows(), members[0].classes());
    let mut blended = vec![0.0; rows * classes];
    for (m, w) in members.iter().zip(&weights) {
        for (b, p) in blended.iter_mut().zip(m.values()) {
            *b += w * p;
        }
    }
    ProbMatrix::new(rows, classes, blended)
}

#[derive(Debug, Clone, Copy)]
struct Score {
    correct: usize,
    log_loss: f64,
}

fn better(a: Score, b: Score, objective: SearchObjective) -> bool {
    match objective {
        SearchObjective::AccuracyThenLogLoss => {
            a.correct > b.correct || (a.correct == b.correct && a.log_loss < b.log_loss)
        }
        SearchObjective::LogLoss => a.log_loss < b.log_loss,
    }
}

fn score(members: &[&ProbMatrix], weights: &[f64], y: &[u32], row: &mut [f64]) -> Score {
    let mut correct = 0;
    let mut loss = 0.0;
    for (i, &label) in y.iter().enumerate() {
        row.iter_mut().for_each(|v| *v = 0.0);
        for (m, w) in members.iter().zip(weights) {
            for (r, p) in row.iter_mut().zip(m.row(i)) {
                *r += w * p;
            }
        }
        let mut best = 0;
        for k in 1..row.len() {
            if row[k] > row[best] {
                best = k;
            }
        }
        correct += usize::from(best == label as usize);
        loss -= row[label as usize]
            .clamp(f64::EPSILON, 1.0 - f64::EPSILON)
            .ln();
    }
    Score {
        correct,
        log_loss: loss / y.len() as f64,
    }
}

/// Number of points of the simplex grid with `divisions` steps per unit and `members` weights.
fn grid_points(divisions: usize, members: usize) -> usize {
    // C(divisions + members - 1, members - 1), saturating: only compared with a limit.
    let mut c: u128 = 1;
    for i in 0..members - 1 {
        c = c * (divisions + members - 1 - i) as u128 / (i + 1) as u128;
        if c > u64::MAX as u128 {
            return usize::MAX;
        }
    }
    c.min(usize::MAX as u128) as usize
}

/// Calls `visit` with every composition of `divisions` into `members` non-negative parts, in
/// lexicographic order of the parts.
fn for_each_composition(divisions: usize, members: usize, visit: &mut dyn FnMut(&[usize])) {
    fn recurse(left: usize, slot: usize, parts: &mut Vec<usize>, visit: &mut dyn FnMut(&[usize])) {
        if slot + 1 == parts.len() {
            parts[slot] = left;
            visit(parts);
            return;
        }
        for take in 0..=left {
            parts[slot] = take;
            recurse(left - take, slot + 1, parts, visit);
        }
    }
    let mut parts = vec![0; members];
    recurse(divisions, 0, &mut parts, visit);
}

/// Searches soft-voting weights that maximise the objective on validation predictions.
pub fn search_weights(
    members: &[&ProbMatrix],
    y_val: &[u32],
    options: &SearchOptions,
) -> Result<WeightSearch, EvalError> {
    check_members(members)?;
    members[0].check_labels(y_val)?;
    let divisions_asked = (1.0 / options.step).round();
    if !(options.step > 0.0 && options.step <= 1.0)
        || ((1.0 / options.step) - divisions_asked).abs() > 1e-9
    {
        return Err(EvalError::SearchOptions {
            reason: format!("step {} does not divide 1 evenly", options.step),
        });
    }
    let m = members.len();
    let mut divisions = divisions_asked as usize;
    while divisions > 1 && grid_points(divisions, m) > options.max_grid_points {
        divisions -= 1;
    }
    let grid_step = 1.0 / divisions as f64;

    let mut row = vec![0.0; members[0].classes()];
    let mut evaluated = 0;
    let mut best: Option<(Vec<f64>, Score)> = None;
    for_each_composition(divisions, m, &mut |parts| {
        let weights: Vec<f64> = parts.iter().map(|&p| p as f64 / divisions as f64).collect();
        let s = score(members, &weights, y_val, &mut row);
        evaluated += 1;
        if best
            .as_ref()
            .is_none_or(|(_, b)| better(s, *b, options.objective))
        {
            best = Some((weights, s));
        }
    });
    // The grid has at least the m vertices, so a best point exists.
    let (mut weights, mut best_score) = best.expect("the simplex grid is never empty");

    let mut delta = grid_step;
    for _ in 0..options.refine_rounds {
        delta /= 2.0;
        // Bounded: each accepted move strictly improves a finite objective on a finite lattice.
        for _ in 0..1000 {
            let mut improved = false;
            for from in 0..m {
                for to in 0..m {
                    if from == to || weights[from] < delta - 1e-12 {
                        continue;
                    }
                    let mut candidate = weights.clone();
                    candidate[from] = (candidate[from] - delta).max(0.0);
                    candidate[to] += delta;
                    let s = score(members, &candidate, y_val, &mut row);
                    evaluated += 1;
                    if better(s, best_score, options.objective) {
                        weights = candidate;
                        best_score = s;
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }
    let weights = normalize_weights(&weights)?;
    Ok(WeightSearch {
        weights,
        accuracy: best_score.correct as f64 / y_val.len() as f64,
        log_loss: best_score.log_loss,
        objective: options.objective,
        grid_step,
        candidates_evaluated: evaluated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sizes() {
        assert_eq!(grid_points(20, 2), 21);
        assert_eq!(grid_points(20, 3), 231);
        let mut seen = 0;
        for_each_composition(20, 3, &mut |parts| {
            assert_eq!(parts.iter().sum::<usize>(), 20);
            seen += 1;
        });
        assert_eq!(seen, 231);
    }

    #[test]
    fn weights_are_validated() {
        assert!(normalize_weights(&[]).is_err());
        assert!(normalize_weights(&[0.0, 0.0]).is_err());
        assert!(normalize_weights(&[1.0, -0.5]).is_err());
        assert_eq!(normalize_weights(&[3.0, 1.0]).unwrap(), vec![0.75, 0.25]);
    }
}
