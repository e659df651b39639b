//! ROC curves and AUC with scikit-learn's conventions, replicated step by step:
//! `roc_curve(drop_intermediate=True)`, `auc` (trapezoid rule), and one-vs-rest averaging as in
//! `roc_auc_score(multi_class='ovr')`.
//!
//! Macro AUC is the unweighted mean of the per-class one-vs-rest AUCs: every class counts the
//! same however rare. Micro AUC pools all n×C (sample, class) decisions into one binary problem
//! (label "sample i is class k" against score p[i,k]): frequent classes dominate it. A class
//! absent from the true labels has no one-vs-rest AUC (no positives); scikit-learn then gives
//! NaN for it and for the macro mean. We report it as undefined (`None`) and take the macro mean
//! over the classes present, listing the skipped ones in `undefined_classes`.

use serde::{Deserialize, Serialize};

use super::{EvalError, ProbMatrix};

/// One ROC curve: false and true positive rates at decreasing score thresholds, starting at
/// (0, 0) with threshold +inf as scikit-learn does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// Decreasing; the first is +inf (written as null in JSON, which has no infinity).
    #[serde(with = "infinite_as_null")]
    pub thresholds: Vec<f64>,
}

/// A curve without thresholds: the macro-average ROC curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
}

/// scikit-learn's `roc_curve(y, scores, drop_intermediate=True)`. `None` when the labels hold
/// only positives or only negatives (scikit-learn returns NaN rates then).
pub fn roc_curve(is_positive: &[bool], scores: &[f64]) -> Option<RocCurve> {
    let n = scores.len();
    debug_assert_eq!(is_positive.len(), n);
    let positives = is_positive.iter().filter(|&&p| p).count();
    if positives == 0 || positives == n {
        return None;
    }
    // Stable sort by decreasing score; only group ends are read, so order inside ties is moot.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let (mut fps, mut tps, mut thresholds) = (Vec::new(), Vec::new(), Vec::new());
    let mut true_pos = 0.0;
    for (pos, &i) in order.iter().enumerate() {
        if is_positive[i] {
            true_pos += 1.0;
        }
        // `!=` (not total order) so 0.0 and -0.0 form one group, as numpy's diff does.
        let group_ends = pos + 1 == n || scores[order[pos + 1]] != scores[i];
        if group_ends {
            tps.push(true_pos);
            fps.push((pos + 1) as f64 - true_pos);
            thresholds.push(scores[i]);
        }
    }

    // drop_intermediate: keep the ends and every point where either count's second
    // difference is non-zero (a corner); collinear points never change the plot or the area.
    if fps.len() > 2 {
        let last = fps.len() - 1;
        let keep: Vec<usize> = (0..fps.len())
            .filter(|&i| {
                i == 0
                    || i == last
                    || (fps[i + 1] - fps[i]) - (fps[i] - fps[i - 1]) != 0.0
                    || (tps[i + 1] - tps[i]) - (tps[i] - tps[i - 1]) != 0.0
            })
            .collect();
        fps = keep.iter().map(|&i| fps[i]).collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
        thresholds = keep.iter().map(|&i| thresholds[i]).collect();
    }

    let (fp_total, tp_total) = (fps[fps.len() - 1], tps[tps.len() - 1]);
    let fpr = std::iter::once(0.0)
        .chain(fps.iter().map(|f| f / fp_total))
        .collect();
    let tpr = std::iter::once(0.0)
        .chain(tps.iter().map(|t| t / tp_total))
        .collect();
    thresholds.insert(0, f64::INFINITY);
    Some(RocCurve {
        fpr,
        tpr,
        thresholds,
    })
}

/// Area under a curve by the trapezoid rule (scikit-learn's `auc` for increasing x).
pub fn auc(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(dx, ys)| (dx[1] - dx[0]) * (ys[1] + ys[0]) / 2.0)
        .sum()
}

/// numpy's `interp(x, xp, fp)` for increasing `xp` that may repeat values: at a repeated
/// point it takes the last one's `fp` (the top of a vertical ROC step).
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let last = xp.len() - 1;
    if x < xp[0] {
        return fp[0];
    }
    if x >= xp[last] {
        return fp[last];
    }
    // j: the largest index with xp[j] <= x, so xp[j + 1] > x and the slope is finite.
    let j = xp.partition_point(|&v| v <= x) - 1;
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

/// One-vs-rest ROC analysis of a multiclass prediction set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OvrRoc {
    /// Per class; `None` where the class is absent from the true labels (or is every label).
    pub curves: Vec<Option<RocCurve>>,
    pub auc: Vec<Option<f64>>,
    /// Mean of the defined per-class AUCs; `None` when no class has one.
    pub macro_auc: Option<f64>,
    /// AUC of all (sample, class) pairs pooled; `None` with a single class.
    pub micro_auc: Option<f64>,
    pub micro_curve: Option<RocCurve>,
    /// Per-class curves interpolated on the union of their fpr points and averaged.
    pub macro_curve: Option<MeanCurve>,
    /// Classes without a defined AUC, left out of the macro mean.
    pub undefined_classes: Vec<usize>,
}

/// ROC curves and AUCs per class, plus macro and micro averages.
pub fn one_vs_rest(y_true: &[u32], probs: &ProbMatrix) -> Result<OvrRoc, EvalError> {
    probs.check_labels(y_true)?;
    let classes = probs.classes();
    let curves: Vec<Option<RocCurve>> = (0..classes)
        .map(|k| {
            let is_positive: Vec<bool> = y_true.iter().map(|&y| y as usize == k).collect();
            roc_curve(&is_positive, &probs.column(k))
        })
        .collect();
    let auc_per_class: Vec<Option<f64>> = curves
        .iter()
        .map(|c| c.as_ref().map(|c| auc(&c.fpr, &c.tpr)))
        .collect();
    let defined: Vec<f64> = auc_per_class.iter().flatten().copied().collect();
    let macro_auc =
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    let undefined_classes = (0..classes)
        .filter(|&k| auc_per_class[k].is_none())
        .collect();

    // Micro: the binarized label matrix and the scores, both ravelled row-major.
    let pooled_labels: Vec<bool> = y_true
        .iter()
        .flat_map(|&y| (0..classes).map(move |k| y as usize == k))
        .collect();
    let micro_curve = roc_curve(&pooled_labels, probs.values());
    let micro_auc = micro_curve.as_ref().map(|c| auc(&c.fpr, &c.tpr));

    let present: Vec<&RocCurve> = curves.iter().flatten().collect();
    let macro_curve = (!present.is_empty()).then(|| {
        let mut grid: Vec<f64> = present.iter().flat_map(|c| c.fpr.iter().copied()).collect();
        grid.sort_by(f64::total_cmp);
        grid.dedup();
        let tpr = grid
            .iter()
            .map(|&x| {
                present
                    .iter()
                    .map(|c| interp(x, &c.fpr, &c.tpr))
                    .sum::<f64>()
                    / present.len() as f64
            })
            .collect();
        MeanCurve { fpr: grid, tpr }
    });

    Ok(OvrRoc {
        curves,
        auc: auc_per_class,
        macro_auc,
        micro_auc,
        micro_curve,
        macro_curve,
        undefined_classes,
    })
}

/// JSON has no infinity: thresholds are written with +inf as null and read back as +inf.
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let as_options: Vec<Option<f64>> =
            values.iter().map(|v| v.is_finite().then_some(*v)).collect();
        as_options.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let as_options = Vec::<Option<f64>>::deserialize(d)?;
        Ok(as_options
            .into_iter()
            .map(|v| v.unwrap_or(f64::INFINITY))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sklearn_docstring_example() {
        // sklearn.metrics.roc_curve docstring: y = [1, 1, 2, 2], pos_label = 2.
        let curve = roc_curve(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert_eq!(curve.fpr, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
        assert_eq!(curve.tpr, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(curve.thresholds[1..], [0.8, 0.4, 0.35, 0.1]);
        assert!((auc(&curve.fpr, &curve.tpr) - 0.75).abs() < 1e-15);
    }

    #[test]
    fn single_label_kind_has_no_curve() {
        assert!(roc_curve(&[true, true], &[0.2, 0.4]).is_none());
        assert!(roc_curve(&[false, false], &[0.2, 0.4]).is_none());
    }

    #[test]
    fn interp_takes_the_top_of_a_vertical_step() {
        let xp = [0.0, 0.0, 0.5, 0.5, 1.0];
        let fp = [0.0, 0.5, 0.5, 1.0, 1.0];
        assert_eq!(interp(0.0, &xp, &fp), 0.5);
        assert_eq!(interp(0.5, &xp, &fp), 1.0);
        assert_eq!(interp(0.25, &xp, &fp), 0.5);
        assert_eq!(interp(1.0, &xp, &fp), 1.0);
    }
}
