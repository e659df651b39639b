//! Cross-validation summaries: the paired per-fold table of each compared model, mean and
//! sample standard deviation per chosen metric, and a paired test (Wilcoxon signed-rank or
//! Student's paired t) for every pair of models on the first chosen metric, with a
//! plain-words verdict and, for Wilcoxon, the warning when the fold count cannot reach α.
//!
//! Per-fold differences are rounded to 12 decimals before testing, as SciPy's documentation
//! advises: accuracies of equal-sized folds that differ by the same count of samples would
//! otherwise rank as distinct because of floating-point roundoff. The test uses SciPy's `auto`
//! rules, so tied or zero differences get the exhaustive permutation test (exact given the
//! ties) rather than the conservatively rounded no-ties distribution.

use serde::{Deserialize, Serialize};

use super::stats::{
    fmt_p, paired_t_differences, reachability, summarize, wilcoxon_differences, Alternative,
    PairedTResult, Reachability, Summary, WilcoxonMethod, WilcoxonOptions, WilcoxonResult,
};
use super::{EvalError, ModelScores};

/// Which fold score a comparison tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    Precision,
    Recall,
    F1,
    Auc,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::Auc,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "macro precision",
            Metric::Recall => "macro recall",
            Metric::F1 => "macro F1",
            Metric::Auc => "macro AUC",
        }
    }

    pub fn of(self, s: &ModelScores) -> Option<f64> {
        match self {
            Metric::Accuracy => Some(s.accuracy),
            Metric::Precision => Some(s.precision),
            Metric::Recall => Some(s.recall),
            Metric::F1 => Some(s.f1),
            Metric::Auc => s.auc,
        }
    }
}

/// The paired test a crossval block asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedTest {
    Wilcoxon,
    PairedT,
}

/// What a crossval stage computes: which metrics it tabulates (the first one is tested),
/// which test (none: the table only) and at what level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossvalOptions {
    pub metrics: Vec<Metric>,
    pub test: Option<PairedTest>,
    pub alpha: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TestResult {
    Wilcoxon(WilcoxonResult),
    PairedT(PairedTResult),
}

impl TestResult {
    pub fn pvalue(&self) -> f64 {
        match self {
            TestResult::Wilcoxon(t) => t.pvalue,
            TestResult::PairedT(t) => t.pvalue,
        }
    }

    pub fn statistic(&self) -> f64 {
        match self {
            TestResult::Wilcoxon(t) => t.statistic,
            TestResult::PairedT(t) => t.statistic,
        }
    }

    /// How the p-value was computed, in words.
    pub fn method(&self) -> String {
        match self {
            TestResult::Wilcoxon(t) => match t.method {
                super::stats::MethodUsed::Exact => "Wilcoxon signed-rank, exact".into(),
                super::stats::MethodUsed::Permutation => {
                    "Wilcoxon signed-rank, exact permutation, ties present".into()
                }
                super::stats::MethodUsed::Asymptotic => {
                    "Wilcoxon signed-rank, normal approximation".into()
                }
            },
            TestResult::PairedT(t) => format!("Student's paired t, {} degrees of freedom", t.df),
        }
    }
}

/// One compared model's scores, one entry per fold in fold order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFolds {
    pub model: String,
    pub folds: Vec<ModelScores>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub metric: Metric,
    /// `None` when some fold lacks the metric (an AUC undefined on every class).
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub a: String,
    pub b: String,
    pub metric: Metric,
    /// a − b per fold, rounded to 12 decimals.
    pub differences: Vec<f64>,
    pub mean_difference: f64,
    /// `None` when the models tie on every fold (nothing to test).
    pub test: Option<TestResult>,
    pub alpha: f64,
    /// Whether the exact Wilcoxon test can reach α with this many folds (Wilcoxon only).
    pub reachability: Option<Reachability>,
    /// The conclusion in one sentence.
    pub verdict: String,
    /// Present when the number of folds cannot reach α: why, in plain words.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossvalSummary {
    pub folds: usize,
    pub models: Vec<ModelFolds>,
    /// The metrics tabulated, in the pipeline's order.
    pub metrics: Vec<Metric>,
    /// Per model (same order), one summary per metric of `metrics`.
    pub summaries: Vec<Vec<MetricSummary>>,
    pub comparisons: Vec<PairedComparison>,
}

/// Summarises the fold table and tests every pair of models on the first metric at level α
/// (two-sided), unless no test is asked for.
pub fn summarize_crossval(
    models: Vec<ModelFolds>,
    options: &CrossvalOptions,
) -> Result<CrossvalSummary, EvalError> {
    let metric = *options.metrics.first().ok_or(EvalError::Empty {
        what: "the metric list",
    })?;
    let folds = models
        .first()
        .map(|m| m.folds.len())
        .ok_or(EvalError::Empty {
            what: "the model list",
        })?;
    if folds == 0 {
        return Err(EvalError::Empty {
            what: "the fold table",
        });
    }
    if let Some(m) = models.iter().find(|m| m.folds.len() != folds) {
        return Err(EvalError::Unpaired {
            left: folds,
            right: m.folds.len(),
        });
    }
    let summaries = models
        .iter()
        .map(|m| {
            options
                .metrics
                .iter()
                .map(|&metric| {
                    let values: Option<Vec<f64>> = m.folds.iter().map(|s| metric.of(s)).collect();
                    MetricSummary {
                        metric,
                        summary: values.and_then(|v| summarize(&v)),
                    }
                })
                .collect()
        })
        .collect();

    let mut comparisons = Vec::new();
    if let Some(test) = options.test {
        for i in 0..models.len() {
            for j in i + 1..models.len() {
                comparisons.push(compare(
                    &models[i],
                    &models[j],
                    metric,
                    test,
                    options.alpha,
                )?);
            }
        }
    }
    Ok(CrossvalSummary {
        folds,
        models,
        metrics: options.metrics.clone(),
        summaries,
        comparisons,
    })
}

fn compare(
    a: &ModelFolds,
    b: &ModelFolds,
    metric: Metric,
    kind: PairedTest,
    alpha: f64,
) -> Result<PairedComparison, EvalError> {
    let mut differences = Vec::with_capacity(a.folds.len());
    for (sa, sb) in a.folds.iter().zip(&b.folds) {
        let (Some(x), Some(y)) = (metric.of(sa), metric.of(sb)) else {
            return Err(EvalError::Empty {
                what: "a fold's AUC (no class had a defined AUC)",
            });
        };
        differences.push(((x - y) * 1e12).round() / 1e12);
    }
    let mean_difference = differences.iter().sum::<f64>() / differences.len() as f64;
    let outcome = match kind {
        PairedTest::Wilcoxon => wilcoxon_differences(
            &differences,
            WilcoxonOptions {
                alternative: Alternative::TwoSided,
                method: WilcoxonMethod::Auto,
                correction: false,
            },
        )
        .map(TestResult::Wilcoxon),
        PairedTest::PairedT => {
            paired_t_differences(&differences, Alternative::TwoSided).map(TestResult::PairedT)
        }
    };
    let test = match outcome {
        Ok(t) => Some(t),
        Err(EvalError::AllDifferencesZero) => None,
        Err(e) => return Err(e),
    };
    let reach = (kind == PairedTest::Wilcoxon)
        .then(|| reachability(differences.len(), alpha, Alternative::TwoSided));
    let (name_a, name_b, label, n) = (&a.model, &b.model, metric.label(), differences.len());
    let wins = differences.iter().filter(|&&d| d > 0.0).count();
    let losses = differences.iter().filter(|&&d| d < 0.0).count();
    let verdict = match &test {
        None => format!("{name_a} and {name_b} have the same {label} on all {n} folds; there is no difference to test."),
        Some(t) => {
            let conclusion = if t.pvalue() <= alpha {
                format!("a significant difference at α = {alpha}")
            } else {
                format!("no significant difference at α = {alpha}")
            };
            format!(
                "{name_a} − {name_b} {label}: mean {mean_difference:+.4} over {n} folds ({wins} higher, {losses} lower); \
                 {} two-sided p = {}: {conclusion}.",
                t.method(),
                fmt_p(t.pvalue())
            )
        }
    };
    let warning = reach
        .as_ref()
        .filter(|r| !r.reachable)
        .map(|r| r.message.clone());
    Ok(PairedComparison {
        a: a.model.clone(),
        b: b.model.clone(),
        metric,
        differences,
        mean_difference,
        test,
        alpha,
        reachability: reach,
        verdict,
        warning,
    })
}
