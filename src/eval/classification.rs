//! Classification metrics with scikit-learn's semantics: `classification_report`
//! (labels = every class, zero_division = 0), `confusion_matrix` (counts and
//! normalize='true'), `top_k_accuracy_score`, `log_loss`, and the one-vs-rest ROC analysis.
//!
//! The predicted class is the first maximum of each probability row (numpy's argmax).

use serde::{Deserialize, Serialize};

use super::roc::{one_vs_rest, OvrRoc};
use super::{EvalError, ProbMatrix};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of true samples of this class.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AverageMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// counts[true][predicted]
    pub counts: Vec<Vec<u64>>,
    /// Each row divided by its true-class total (recall on the diagonal); a class with no
    /// true samples has a row of zeros.
    pub normalized: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    pub k: usize,
    pub accuracy: f64,
}

/// Everything `evaluate` computes for one model on one prediction set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub class_names: Vec<String>,
    pub samples: usize,
    pub per_class: Vec<ClassMetrics>,
    pub accuracy: f64,
    pub macro_avg: AverageMetrics,
    pub weighted_avg: AverageMetrics,
    pub confusion: ConfusionMatrix,
    /// k = 1 .. min(C - 1, 5); empty with fewer than 2 classes.
    pub top_k: Vec<TopK>,
    /// Mean negative log-likelihood of the true class, probabilities clipped to [eps, 1 - eps].
    pub log_loss: f64,
    pub roc: OvrRoc,
}

/// Largest k reported in `Evaluation::top_k`.
pub const MAX_REPORTED_K: usize = 5;

/// Computes every metric for true labels and predicted probabilities.
pub fn evaluate(
    y_true: &[u32],
    probs: &ProbMatrix,
    class_names: &[String],
) -> Result<Evaluation, EvalError> {
    probs.check_labels(y_true)?;
    let classes = probs.classes();
    if class_names.len() != classes {
        return Err(EvalError::ClassNames {
            names: class_names.len(),
            classes,
        });
    }
    let y_pred = probs.argmax();
    let confusion = confusion_matrix(y_true, &y_pred, classes);
    let (per_class, macro_avg, weighted_avg) = precision_recall_f1(&confusion.counts, class_names);
    let correct: u64 = (0..classes).map(|k| confusion.counts[k][k]).sum();
    let accuracy = correct as f64 / y_true.len() as f64;
    let top_k = (1..classes.min(MAX_REPORTED_K + 1))
        .map(|k| top_k_accuracy(y_true, probs, k).map(|accuracy| TopK { k, accuracy }))
        .collect::<Result<_, _>>()?;
    Ok(Evaluation {
        class_names: class_names.to_vec(),
        samples: y_true.len(),
        per_class,
        accuracy,
        macro_avg,
        weighted_avg,
        confusion,
        top_k,
        log_loss: log_loss(y_true, probs)?,
        roc: one_vs_rest(y_true, probs)?,
    })
}

/// Counts and row-normalised confusion matrix; labels must be below `classes`.
pub fn confusion_matrix(y_true: &[u32], y_pred: &[u32], classes: usize) -> ConfusionMatrix {
    let mut counts = vec![vec![0u64; classes]; classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        counts[t as usize][p as usize] += 1;
    }
    let normalized = counts
        .iter()
        .map(|row| {
            let total: u64 = row.iter().sum();
            row.iter()
                .map(|&c| {
                    if total == 0 {
                        0.0
                    } else {
                        c as f64 / total as f64
                    }
                })
                .collect()
        })
        .collect();
    ConfusionMatrix { counts, normalized }
}

/// Per-class precision, recall, F1 and support, with macro and support-weighted averages.
/// A zero denominator gives 0 (zero_division=0); F1 is 2·tp / (2·tp + fp + fn), as
/// scikit-learn computes it, not from the rounded precision and recall.
pub fn precision_recall_f1(
    counts: &[Vec<u64>],
    class_names: &[String],
) -> (Vec<ClassMetrics>, AverageMetrics, AverageMetrics) {
    let classes = counts.len();
    let ratio = |num: f64, den: f64| if den == 0.0 { 0.0 } else { num / den };
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|k| {
            let tp = counts[k][k] as f64;
            let true_sum: u64 = counts[k].iter().sum();
            let pred_sum: u64 = counts.iter().map(|row| row[k]).sum();
            ClassMetrics {
                name: class_names[k].clone(),
                precision: ratio(tp, pred_sum as f64),
                recall: ratio(tp, true_sum as f64),
                f1: ratio(2.0 * tp, (true_sum + pred_sum) as f64),
                support: true_sum,
            }
        })
        .collect();
    let total: u64 = per_class.iter().map(|m| m.support).sum();
    let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / classes as f64;
    let weighted = |f: fn(&ClassMetrics) -> f64| {
        ratio(
            per_class.iter().map(|m| f(m) * m.support as f64).sum(),
            total as f64,
        )
    };
    let macro_avg = AverageMetrics {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
        support: total,
    };
    let weighted_avg = AverageMetrics {
        precision: weighted(|m| m.precision),
        recall: weighted(|m| m.recall),
        f1: weighted(|m| m.f1),
        support: total,
    };
    (per_class, macro_avg, weighted_avg)
}

/// Fraction of samples whose true class is among the k highest scores. Ties rank the higher
/// class index first, as scikit-learn's reversed stable argsort does; k >= C gives 1.
pub fn top_k_accuracy(y_true: &[u32], probs: &ProbMatrix, k: usize) -> Result<f64, EvalError> {
    probs.check_labels(y_true)?;
    if k == 0 {
        return Err(EvalError::TopK {
            k,
            classes: probs.classes(),
        });
    }
    let hits = y_true
        .iter()
        .enumerate()
        .filter(|&(i, &y)| {
            let row = probs.row(i);
            let y = y as usize;
            let ranked_above = (0..row.len())
                .filter(|&j| row[j] > row[y] || (row[j] == row[y] && j > y))
                .count();
            ranked_above < k
        })
        .count();
    Ok(hits as f64 / y_true.len() as f64)
}

/// scikit-learn's `log_loss`: mean of -ln p[true], probabilities clipped to [eps, 1 - eps].
pub fn log_loss(y_true: &[u32], probs: &ProbMatrix) -> Result<f64, EvalError> {
    probs.check_labels(y_true)?;
    let eps = f64::EPSILON;
    let total: f64 = y_true
        .iter()
        .enumerate()
        .map(|(i, &y)| -probs.row(i)[y as usize].clamp(eps, 1.0 - eps).ln())
        .sum();
    Ok(total / y_true.len() as f64)
}

impl Evaluation {
    /// The text of scikit-learn's `classification_report(digits=digits)`.
    pub fn report_text(&self, digits: usize) -> String {
        const LAST_HEADING: &str = "weighted avg";
        let name_width = self
            .per_class
            .iter()
            .map(|m| m.name.chars().count())
            .max()
            .unwrap_or(0);
        let width = name_width.max(LAST_HEADING.len()).max(digits);
        let mut out = format!("{:>width$} ", "");
        for header in ["precision", "recall", "f1-score", "support"] {
            out += &format!(" {header:>9}");
        }
        out += "\n\n";
        let row = |name: &str, p: f64, r: f64, f: f64, support: u64| {
            format!("{name:>width$}  {p:>9.digits$} {r:>9.digits$} {f:>9.digits$} {support:>9}\n")
        };
        for m in &self.per_class {
            out += &row(&m.name, m.precision, m.recall, m.f1, m.support);
        }
        out += "\n";
        let total = self.macro_avg.support;
        out += &format!(
            "{:>width$}  {:>9} {:>9} {:>9.digits$} {total:>9}\n",
            "accuracy", "", "", self.accuracy
        );
        let (m, w) = (&self.macro_avg, &self.weighted_avg);
        out += &row("macro avg", m.precision, m.recall, m.f1, m.support);
        out += &row(LAST_HEADING, w.precision, w.recall, w.f1, w.support);
        out
    }

    /// Accuracy, macro precision/recall/F1 and macro AUC: one row of the comparison table.
    pub fn summary(&self) -> ModelScores {
        ModelScores {
            accuracy: self.accuracy,
            precision: self.macro_avg.precision,
            recall: self.macro_avg.recall,
            f1: self.macro_avg.f1,
            auc: self.roc.macro_auc,
        }
    }
}

/// The headline numbers of one model on one prediction set (macro averages).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelScores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Macro one-vs-rest AUC; `None` when no class has a defined AUC.
    pub auc: Option<f64>,
}
