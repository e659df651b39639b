//! COCO box metrics, computed as pycocotools' `COCOeval` (iouType 'bbox') computes them, step
//! by step: per image and class, detections sorted by score (a stable sort, so ties keep their
//! input order) and cut to the largest maxDets; greedy matching at each IoU threshold, the best
//! IoU winning and, among equal IoUs, the later ground truth; ignored ("difficult", COCO's
//! crowd) ground truth last, matched any number of times with IoU = intersection over the
//! detection's area; unmatched detections outside an area range ignored; then per class, area
//! range and maxDets, the images' detections merged in image order and stably sorted by score,
//! precision made monotone and read at the 101 recall thresholds.
//!
//! A box's area is its width × height (what COCO's `loadRes` computes for detections; for
//! ground truth pycocotools reads the annotation's `area` field, which the fixtures set to the
//! same product). Undefined values (no ground truth for a class, or no such threshold, area or
//! maxDets) are `None` where pycocotools writes -1. One deliberate difference from
//! `COCOeval.summarize`: its first AP row always asks for maxDets = 100 and the other AP rows
//! for `maxDets[2]`, whatever the parameters hold; here every AP row uses the largest maxDets
//! of the parameters (the same thing for the default 1 / 10 / 100), and
//! [`BoxEvaluation::average_precision`] honours the maxDets it is given.

use serde::{Deserialize, Serialize};

use super::EvalError;

/// A box in pixels, corners included as given: `xmin ≤ xmax`, `ymin ≤ ymax`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
}

impl BBox {
    /// COCO's `[x, y, w, h]`, the form pycocotools computes IoUs from (rounding included).
    fn xywh(&self) -> [f64; 4] {
        [
            self.xmin,
            self.ymin,
            self.xmax - self.xmin,
            self.ymax - self.ymin,
        ]
    }

    pub fn area(&self) -> f64 {
        let [_, _, w, h] = self.xywh();
        w * h
    }
}

/// One ground-truth box. `ignore` is VOC's `difficult`, evaluated as COCO's `iscrowd`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthBox {
    pub image: usize,
    pub class: usize,
    pub bbox: BBox,
    pub ignore: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub image: usize,
    pub class: usize,
    pub score: f64,
    pub bbox: BBox,
}

/// The ground truth of some fields' annotated objects (one `Vec` per image); `pooled` counts
/// every object as class 0 (a detector that finds objects without naming their class).
pub fn field_truth(
    objects: &[Vec<crate::data::fields::FieldObject>],
    pooled: bool,
) -> Vec<TruthBox> {
    objects
        .iter()
        .enumerate()
        .flat_map(|(image, objects)| {
            objects.iter().map(move |o| TruthBox {
                image,
                class: if pooled { 0 } else { o.class },
                bbox: BBox {
                    xmin: o.xmin,
                    ymin: o.ymin,
                    xmax: o.xmax,
                    ymax: o.ymax,
                },
                ignore: o.difficult,
            })
        })
        .collect()
}

/// Per image, which annotated objects are blended: their box overlaps another object's box in
/// the same image (a shared edge is not an overlap). The rest are isolated.
pub fn blended_objects(objects: &[Vec<crate::data::fields::FieldObject>]) -> Vec<Vec<bool>> {
    objects
        .iter()
        .map(|image| {
            let overlaps = |a: &crate::data::fields::FieldObject,
                            b: &crate::data::fields::FieldObject| {
                a.xmin.max(b.xmin) < a.xmax.min(b.xmax) && a.ymin.max(b.ymin) < a.ymax.min(b.ymax)
            };
            image
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    image
                        .iter()
                        .enumerate()
                        .any(|(j, b)| i != j && overlaps(a, b))
                })
                .collect()
        })
        .collect()
}

/// The truth for scoring one group of objects: every box outside the group (`keep` false, in
/// the truth's order) is ignored as pycocotools ignores a crowd, so a detection of it counts
/// neither for nor against the group.
pub fn keep_group(truth: &[TruthBox], keep: &[bool]) -> Vec<TruthBox> {
    truth
        .iter()
        .zip(keep)
        .map(|(t, &k)| TruthBox {
            ignore: t.ignore || !k,
            ..*t
        })
        .collect()
}

/// The most COCO's AR@1 can reach on this truth: each image's one detection of a class finds at
/// most one of its boxes of that class, so per class it is the images with such a box over
/// the boxes (difficult ones left out), averaged over the classes that have any, as AR is.
pub fn ar1_ceiling(truth: &[TruthBox], images: usize) -> Option<f64> {
    let classes = truth.iter().map(|t| t.class + 1).max().unwrap_or(0);
    let bounds: Vec<f64> = (0..classes)
        .filter_map(|k| {
            let relevant: Vec<&TruthBox> =
                truth.iter().filter(|t| t.class == k && !t.ignore).collect();
            let mut has = vec![false; images];
            for t in &relevant {
                has[t.image] = true;
            }
            let with = has.iter().filter(|&&h| h).count();
            (!relevant.is_empty()).then(|| with as f64 / relevant.len() as f64)
        })
        .collect();
    (!bounds.is_empty()).then(|| bounds.iter().sum::<f64>() / bounds.len() as f64)
}

/// An area range, both ends included (as pycocotools compares them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AreaRange {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

/// COCOeval's `Params` for boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoParams {
    pub iou_thresholds: Vec<f64>,
    pub recall_thresholds: Vec<f64>,
    pub area_ranges: Vec<AreaRange>,
    /// Increasing.
    pub max_dets: Vec<usize>,
}

impl Default for CocoParams {
    /// COCO's defaults: IoU .50:.05:.95, 101 recall points, all / small / medium / large,
    /// maxDets 1, 10, 100.
    fn default() -> Self {
        let range = |label: &str, min: f64, max: f64| AreaRange {
            label: label.to_string(),
            min,
            max,
        };
        CocoParams {
            iou_thresholds: linspace(0.5, 0.95, 10),
            recall_thresholds: linspace(0.0, 1.0, 101),
            area_ranges: vec![
                range("all", 0.0, 1e5 * 1e5),
                range("small", 0.0, 32.0 * 32.0),
                range("medium", 32.0 * 32.0, 96.0 * 96.0),
                range("large", 96.0 * 96.0, 1e5 * 1e5),
            ],
            max_dets: vec![1, 10, 100],
        }
    }
}

/// `numpy.linspace(start, stop, num)` to the bit: `i * step + start`, the last value `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num.max(2) - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut().filter(|_| num > 1) {
        *last = stop;
    }
    values
}

/// What [`evaluate_boxes`] accumulates: pycocotools' `eval['precision']`, `['recall']` and
/// `['scores']`, with `None` for its -1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxEvaluation {
    pub params: CocoParams,
    pub classes: usize,
    /// Per (IoU, class, area, maxDets), C order: precision at each recall threshold.
    precision: Vec<Option<Vec<f64>>>,
    /// Per (IoU, class, area, maxDets): the score at which each recall threshold is reached.
    scores: Vec<Option<Vec<f64>>>,
    /// Per (IoU, class, area, maxDets): the recall reached.
    recall: Vec<Option<f64>>,
}

/// Which value a summary row averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measure {
    Precision,
    Recall,
}

/// One line of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub measure: Measure,
    /// `None`: averaged over all IoU thresholds.
    pub iou: Option<f64>,
    pub area: String,
    pub max_dets: usize,
    /// `None` where pycocotools prints -1.
    pub value: Option<f64>,
}

/// COCO's summary table (twelve rows for the default parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoSummary {
    pub rows: Vec<SummaryRow>,
}

impl CocoSummary {
    /// The values in row order, -1 for undefined, as pycocotools' `stats`.
    pub fn stats(&self) -> Vec<f64> {
        self.rows.iter().map(|r| r.value.unwrap_or(-1.0)).collect()
    }

    /// The table as `COCOeval.summarize` prints it, one line per row.
    pub fn lines(&self, params: &CocoParams) -> Vec<String> {
        self.rows.iter().map(|r| r.line(params)).collect()
    }
}

impl SummaryRow {
    /// ` Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.123`
    pub fn line(&self, params: &CocoParams) -> String {
        let (title, kind) = match self.measure {
            Measure::Precision => ("Average Precision", "(AP)"),
            Measure::Recall => ("Average Recall", "(AR)"),
        };
        let iou = match self.iou {
            Some(t) => format!("{t:0.2}"),
            None => format!(
                "{:0.2}:{:0.2}",
                params.iou_thresholds.first().copied().unwrap_or(f64::NAN),
                params.iou_thresholds.last().copied().unwrap_or(f64::NAN)
            ),
        };
        format!(
            " {title:<18} {kind} @[ IoU={iou:<9} | area={:>6} | maxDets={:>3} ] = {:0.3}",
            self.area,
            self.max_dets,
            self.value.unwrap_or(-1.0)
        )
    }
}

/// Evaluates `detections` against `truth` on images `0..images` and classes `0..classes`.
pub fn evaluate_boxes(
    images: usize,
    classes: usize,
    truth: &[TruthBox],
    detections: &[Detection],
    params: &CocoParams,
) -> Result<BoxEvaluation, EvalError> {
    validate(images, classes, truth, detections, params)?;
    let (t_n, r_n, a_n, m_n) = (
        params.iou_thresholds.len(),
        params.recall_thresholds.len(),
        params.area_ranges.len(),
        params.max_dets.len(),
    );
    // Inputs grouped per (class, image), each group in input order as COCO's index keeps it.
    let mut truth_at: Vec<Vec<&TruthBox>> = vec![Vec::new(); classes * images];
    for t in truth {
        truth_at[t.class * images + t.image].push(t);
    }
    let mut dets_at: Vec<Vec<&Detection>> = vec![Vec::new(); classes * images];
    for d in detections {
        dets_at[d.class * images + d.image].push(d);
    }

    let slots = t_n * classes * a_n * m_n;
    let mut eval = BoxEvaluation {
        params: params.clone(),
        classes,
        precision: vec![None; slots],
        scores: vec![None; slots],
        recall: vec![None; slots],
    };
    for k in 0..classes {
        // evaluateImg for every image and area range of this class.
        let per_image: Vec<Option<ImageMatches>> = (0..images)
            .map(|i| ImageMatches::new(&truth_at[k * images + i], &dets_at[k * images + i], params))
            .collect();
        for a in 0..a_n {
            let evals: Vec<&ImageEval> =
                per_image.iter().flatten().map(|m| &m.per_area[a]).collect();
            if evals.is_empty() {
                continue;
            }
            let relevant: usize = evals.iter().map(|e| e.relevant_truth).sum();
            if relevant == 0 {
                continue;
            }
            for (m, &max_det) in params.max_dets.iter().enumerate() {
                let curves = accumulate(&evals, max_det, relevant, params);
                for (t, (precision, scores, recall)) in curves.into_iter().enumerate() {
                    let slot = ((t * classes + k) * a_n + a) * m_n + m;
                    eval.precision[slot] = Some(precision);
                    eval.scores[slot] = Some(scores);
                    eval.recall[slot] = Some(recall);
                }
            }
        }
    }
    debug_assert!(eval.precision.iter().flatten().all(|p| p.len() == r_n));
    Ok(eval)
}

fn validate(
    images: usize,
    classes: usize,
    truth: &[TruthBox],
    detections: &[Detection],
    params: &CocoParams,
) -> Result<(), EvalError> {
    let bad = |reason: String| Err(EvalError::Detection { reason });
    let check_box = |what: &str, i: usize, image: usize, class: usize, b: &BBox| {
        if image >= images {
            return bad(format!(
                "{what} {i} is on image {image}, but there are {images} images"
            ));
        }
        if class >= classes {
            return bad(format!(
                "{what} {i} has class {class}, but there are {classes} classes"
            ));
        }
        let corners = [b.xmin, b.ymin, b.xmax, b.ymax];
        if corners.iter().any(|v| !v.is_finite()) || b.xmin > b.xmax || b.ymin > b.ymax {
            return bad(format!(
                "{what} {i} has the box ({}, {}, {}, {}): corners must be finite with xmin ≤ xmax and ymin ≤ ymax",
                b.xmin, b.ymin, b.xmax, b.ymax
            ));
        }
        Ok(())
    };
    for (i, t) in truth.iter().enumerate() {
        check_box("ground-truth box", i, t.image, t.class, &t.bbox)?;
    }
    for (i, d) in detections.iter().enumerate() {
        check_box("detection", i, d.image, d.class, &d.bbox)?;
        if !d.score.is_finite() {
            return bad(format!("detection {i} has the score {}", d.score));
        }
    }
    let p = params;
    if p.iou_thresholds.is_empty() || p.iou_thresholds.iter().any(|t| !(*t > 0.0 && *t <= 1.0)) {
        return bad("IoU thresholds must be a non-empty list of values in (0, 1]".into());
    }
    if p.recall_thresholds.is_empty()
        || p.recall_thresholds.iter().any(|r| !(0.0..=1.0).contains(r))
        || p.recall_thresholds.windows(2).any(|w| w[0] > w[1])
    {
        return bad("recall thresholds must be a non-empty increasing list in [0, 1]".into());
    }
    if p.area_ranges.is_empty()
        || p.area_ranges
            .iter()
            .any(|r| r.min.is_nan() || r.max.is_nan() || r.min > r.max)
    {
        return bad("area ranges must be a non-empty list with min ≤ max".into());
    }
    if p.max_dets.is_empty() || p.max_dets[0] == 0 || p.max_dets.windows(2).any(|w| w[0] >= w[1]) {
        return bad(
            "maxDets must be a non-empty strictly increasing list of positive counts".into(),
        );
    }
    Ok(())
}

/// pycocotools' order: by decreasing score, a stable sort (its mergesort), 0.0 and -0.0 equal.
fn by_score_desc(a: f64, b: f64) -> std::cmp::Ordering {
    b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
}

/// `computeIoU` for boxes (maskApi's `bbIou`): IoU of each detection with each ground truth;
/// for a crowd ground truth the union is the detection's area.
fn box_iou(d: &BBox, g: &BBox, crowd: bool) -> f64 {
    let [dx, dy, dw, dh] = d.xywh();
    let [gx, gy, gw, gh] = g.xywh();
    let w = (dw + dx).min(gw + gx) - dx.max(gx);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dh + dy).min(gh + gy) - dy.max(gy);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let (da, ga) = (dw * dh, gw * gh);
    let union = if crowd { da } else { da + ga - inter };
    inter / union
}

/// One image and class, evaluated for every area range.
struct ImageMatches {
    per_area: Vec<ImageEval>,
}

/// `evaluateImg`'s result for one area range (detections in score order, cut to the largest
/// maxDets).
struct ImageEval {
    scores: Vec<f64>,
    /// Per IoU threshold (row-major, T × D): matched to a ground truth.
    matched: Vec<bool>,
    /// Per IoU threshold (T × D): matched to an ignored ground truth, or unmatched and outside
    /// the area range.
    ignored: Vec<bool>,
    /// Ground truth neither ignored nor outside the area range.
    relevant_truth: usize,
}

impl ImageMatches {
    fn new(gt: &[&TruthBox], dt: &[&Detection], p: &CocoParams) -> Option<ImageMatches> {
        if gt.is_empty() && dt.is_empty() {
            return None;
        }
        let max_det = *p.max_dets.last().expect("validated: maxDets is not empty");
        let mut dt: Vec<&Detection> = dt.to_vec();
        dt.sort_by(|a, b| by_score_desc(a.score, b.score));
        dt.truncate(max_det);
        // ious[d][g], ground truth in input order.
        let ious: Vec<Vec<f64>> = dt
            .iter()
            .map(|d| {
                gt.iter()
                    .map(|g| box_iou(&d.bbox, &g.bbox, g.ignore))
                    .collect()
            })
            .collect();
        let t_n = p.iou_thresholds.len();
        let per_area = p
            .area_ranges
            .iter()
            .map(|range| {
                let outside = |area: f64| area < range.min || area > range.max;
                let gt_ignore: Vec<bool> = gt
                    .iter()
                    .map(|g| g.ignore || outside(g.bbox.area()))
                    .collect();
                // Ignored ground truth last, a stable sort.
                let mut order: Vec<usize> = (0..gt.len()).collect();
                order.sort_by_key(|&g| gt_ignore[g]);
                let mut matched = vec![false; t_n * dt.len()];
                let mut ignored = vec![false; t_n * dt.len()];
                if !gt.is_empty() && !dt.is_empty() {
                    for (t, &threshold) in p.iou_thresholds.iter().enumerate() {
                        let mut gt_taken = vec![false; gt.len()];
                        for d in 0..dt.len() {
                            let mut best_iou = threshold.min(1.0 - 1e-10);
                            let mut best: Option<usize> = None;
                            for (pos, &g) in order.iter().enumerate() {
                                if gt_taken[pos] && !gt[g].ignore {
                                    continue;
                                }
                                // Matched to a relevant ground truth: the ignored ones after it
                                // cannot take the detection away.
                                if let Some(b) = best {
                                    if !gt_ignore[order[b]] && gt_ignore[g] {
                                        break;
                                    }
                                }
                                if ious[d][g] < best_iou {
                                    continue;
                                }
                                best_iou = ious[d][g];
                                best = Some(pos);
                            }
                            if let Some(b) = best {
                                ignored[t * dt.len() + d] = gt_ignore[order[b]];
                                matched[t * dt.len() + d] = true;
                                gt_taken[b] = true;
                            }
                        }
                    }
                }
                for (d, det) in dt.iter().enumerate() {
                    if outside(det.bbox.area()) {
                        for t in 0..t_n {
                            if !matched[t * dt.len() + d] {
                                ignored[t * dt.len() + d] = true;
                            }
                        }
                    }
                }
                ImageEval {
                    scores: dt.iter().map(|d| d.score).collect(),
                    matched,
                    ignored,
                    relevant_truth: gt_ignore.iter().filter(|&&i| !i).count(),
                }
            })
            .collect();
        Some(ImageMatches { per_area })
    }
}

/// `accumulate` for one class, area range and maxDets: per IoU threshold, the precision and the
/// score at each recall threshold, and the recall reached.
fn accumulate(
    evals: &[&ImageEval],
    max_det: usize,
    relevant: usize,
    p: &CocoParams,
) -> Vec<(Vec<f64>, Vec<f64>, f64)> {
    // (image eval, detection) in image order, each image cut to max_det; then a stable sort.
    let mut pooled: Vec<(usize, usize)> = evals
        .iter()
        .enumerate()
        .flat_map(|(e, ev)| (0..ev.scores.len().min(max_det)).map(move |d| (e, d)))
        .collect();
    pooled
        .sort_by(|&(ea, da), &(eb, db)| by_score_desc(evals[ea].scores[da], evals[eb].scores[db]));
    let r_n = p.recall_thresholds.len();
    (0..p.iou_thresholds.len())
        .map(|t| {
            let (mut tp, mut fp) = (0.0f64, 0.0f64);
            let mut recall = Vec::with_capacity(pooled.len());
            let mut precision = Vec::with_capacity(pooled.len());
            let mut sorted_scores = Vec::with_capacity(pooled.len());
            for &(e, d) in &pooled {
                let ev = evals[e];
                let at = t * ev.scores.len() + d;
                if ev.ignored[at] {
                    // Neither a true nor a false positive, but still a point of the curve.
                } else if ev.matched[at] {
                    tp += 1.0;
                } else {
                    fp += 1.0;
                }
                recall.push(tp / relevant as f64);
                precision.push(tp / (fp + tp + f64::EPSILON));
                sorted_scores.push(ev.scores[d]);
            }
            let reached = recall.last().copied().unwrap_or(0.0);
            // The precision envelope: each point the best precision at any higher recall.
            for i in (1..precision.len()).rev() {
                if precision[i] > precision[i - 1] {
                    precision[i - 1] = precision[i];
                }
            }
            let mut q = vec![0.0; r_n];
            let mut s = vec![0.0; r_n];
            for (r, &threshold) in p.recall_thresholds.iter().enumerate() {
                // numpy's searchsorted(side='left'): the first point whose recall reaches it.
                let at = recall.partition_point(|&rc| rc < threshold);
                if at >= precision.len() {
                    break;
                }
                q[r] = precision[at];
                s[r] = sorted_scores[at];
            }
            (q, s, reached)
        })
        .collect()
}

impl BoxEvaluation {
    fn slot(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        let p = &self.params;
        ((t * self.classes + k) * p.area_ranges.len() + a) * p.max_dets.len() + m
    }

    /// Precision at each recall threshold (`eval['precision'][t, :, k, a, m]`); `None` where
    /// the class has no ground truth in that area range.
    pub fn precision(&self, t: usize, k: usize, a: usize, m: usize) -> Option<&[f64]> {
        self.precision[self.slot(t, k, a, m)].as_deref()
    }

    /// The detection score at which each recall threshold is reached (`eval['scores']`).
    pub fn scores(&self, t: usize, k: usize, a: usize, m: usize) -> Option<&[f64]> {
        self.scores[self.slot(t, k, a, m)].as_deref()
    }

    /// The recall reached (`eval['recall'][t, k, a, m]`).
    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> Option<f64> {
        self.recall[self.slot(t, k, a, m)]
    }

    /// The precision-recall curve of one class: (recall threshold, precision) pairs.
    pub fn pr_curve(&self, t: usize, k: usize, a: usize, m: usize) -> Option<Vec<(f64, f64)>> {
        let precision = self.precision(t, k, a, m)?;
        Some(
            self.params
                .recall_thresholds
                .iter()
                .copied()
                .zip(precision.iter().copied())
                .collect(),
        )
    }

    /// `_summarize(ap=1, ...)` for one class (`Some`) or all; `iou` `None` averages over the
    /// thresholds. `None` (pycocotools' -1) when nothing is defined, or the threshold, area
    /// label or maxDets is not among the parameters.
    pub fn average_precision(
        &self,
        class: Option<usize>,
        iou: Option<f64>,
        area: &str,
        max_dets: usize,
    ) -> Option<f64> {
        self.average(Measure::Precision, class, iou, area, max_dets)
    }

    /// `_summarize(ap=0, ...)`: the recall reached, averaged over IoU thresholds and classes.
    pub fn average_recall(
        &self,
        class: Option<usize>,
        iou: Option<f64>,
        area: &str,
        max_dets: usize,
    ) -> Option<f64> {
        self.average(Measure::Recall, class, iou, area, max_dets)
    }

    fn average(
        &self,
        measure: Measure,
        class: Option<usize>,
        iou: Option<f64>,
        area: &str,
        max_dets: usize,
    ) -> Option<f64> {
        let p = &self.params;
        let thresholds: Vec<usize> = match iou {
            // Exact equality, as pycocotools' np.where(iouThr == p.iouThrs).
            Some(v) => p
                .iou_thresholds
                .iter()
                .position(|&t| t == v)
                .into_iter()
                .collect(),
            None => (0..p.iou_thresholds.len()).collect(),
        };
        let a = p.area_ranges.iter().position(|r| r.label == area)?;
        let m = p.max_dets.iter().position(|&d| d == max_dets)?;
        let classes: Vec<usize> = match class {
            Some(k) => vec![k],
            None => (0..self.classes).collect(),
        };
        let (mut sum, mut count) = (0.0, 0usize);
        // The order numpy flattens in (IoU, recall, class), so sums round alike.
        for &t in &thresholds {
            match measure {
                Measure::Precision => {
                    let r_n = p.recall_thresholds.len();
                    for r in 0..r_n {
                        for &k in &classes {
                            if let Some(q) = self.precision(t, k, a, m) {
                                sum += q[r];
                                count += 1;
                            }
                        }
                    }
                }
                Measure::Recall => {
                    for &k in &classes {
                        if let Some(rc) = self.recall(t, k, a, m) {
                            sum += rc;
                            count += 1;
                        }
                    }
                }
            }
        }
        (count > 0).then(|| sum / count as f64)
    }

    /// The summary table for one class or all: AP over the IoU range, at 0.50 and 0.75, by
    /// area (every AP row at the largest maxDets); AR at each maxDets and by area at the
    /// largest.
    pub fn summary(&self, class: Option<usize>) -> CocoSummary {
        let p = &self.params;
        let largest = *p.max_dets.last().expect("validated: maxDets is not empty");
        let mut specs: Vec<(Measure, Option<f64>, &str, usize)> = vec![
            (Measure::Precision, None, "all", largest),
            (Measure::Precision, Some(0.5), "all", largest),
            (Measure::Precision, Some(0.75), "all", largest),
        ];
        let by_area = ["small", "medium", "large"];
        specs.extend(by_area.map(|a| (Measure::Precision, None, a, largest)));
        specs.extend(
            p.max_dets
                .iter()
                .map(|&m| (Measure::Recall, None, "all", m)),
        );
        specs.extend(by_area.map(|a| (Measure::Recall, None, a, largest)));
        CocoSummary {
            rows: specs
                .into_iter()
                .map(|(measure, iou, area, max_dets)| SummaryRow {
                    measure,
                    iou,
                    area: area.to_string(),
                    max_dets,
                    value: self.average(measure, class, iou, area, max_dets),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> BBox {
        BBox {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    #[test]
    fn linspace_matches_numpy_bits() {
        // np.linspace(.5, .95, 10) and np.linspace(0, 1, 101)[3]: the 0.9 and 0.03 are not the
        // decimal literals.
        let iou = linspace(0.5, 0.95, 10);
        assert_eq!(iou[8], 0.8999999999999999);
        assert_eq!(iou[5], 0.75);
        assert_eq!(linspace(0.0, 1.0, 101)[3], 0.03);
        assert_eq!(linspace(0.0, 1.0, 101)[100], 1.0);
    }

    #[test]
    fn crowd_iou_divides_by_the_detection_area() {
        let g = b(0.0, 0.0, 100.0, 100.0);
        let d = b(50.0, 50.0, 70.0, 70.0);
        assert_eq!(box_iou(&d, &g, true), 1.0);
        assert_eq!(box_iou(&d, &g, false), 400.0 / 10_000.0);
        assert_eq!(box_iou(&b(200.0, 0.0, 210.0, 10.0), &g, false), 0.0);
    }

    #[test]
    fn a_perfect_detector_scores_one_and_a_class_without_truth_is_undefined() {
        let truth = [TruthBox {
            image: 0,
            class: 0,
            bbox: b(10.0, 10.0, 60.0, 60.0),
            ignore: false,
        }];
        let dets = [Detection {
            image: 0,
            class: 0,
            score: 0.5,
            bbox: b(10.0, 10.0, 60.0, 60.0),
        }];
        let eval = evaluate_boxes(2, 2, &truth, &dets, &CocoParams::default()).unwrap();
        let s = eval.summary(None).stats();
        // Precision is tp / (tp + fp + eps), as in pycocotools: 1 / (1 + eps), not 1.
        let expected = [
            1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0,
        ];
        for (got, want) in s.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{s:?}");
        }
        assert_eq!(eval.summary(Some(1)).stats(), vec![-1.0; 12]);
    }

    fn object(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> crate::data::fields::FieldObject {
        crate::data::fields::FieldObject {
            class: 0,
            xmin,
            ymin,
            xmax,
            ymax,
            truncated: false,
            difficult: false,
            truth: None,
        }
    }

    #[test]
    fn blended_means_a_box_overlapping_another() {
        let objects = vec![
            vec![
                object(0.0, 0.0, 10.0, 10.0),
                object(5.0, 5.0, 20.0, 20.0),
                // Touching the second along an edge only.
                object(20.0, 0.0, 30.0, 10.0),
            ],
            vec![object(0.0, 0.0, 10.0, 10.0)],
        ];
        assert_eq!(
            blended_objects(&objects),
            vec![vec![true, true, false], vec![false]]
        );
    }

    /// Scoring one group: a detection of a box outside the group is neither a hit nor a false
    /// positive, a missed box of the group lowers the recall, a detection of nothing is a
    /// false positive; and a perfect detector's AR@1 is exactly the ceiling.
    #[test]
    fn a_group_ignores_the_other_boxes_and_ar1_has_its_ceiling() {
        let objects = vec![
            vec![
                object(0.0, 0.0, 40.0, 40.0),
                object(30.0, 30.0, 70.0, 70.0),
                object(100.0, 100.0, 140.0, 140.0),
            ],
            vec![object(10.0, 10.0, 50.0, 50.0)],
        ];
        let truth = field_truth(&objects, false);
        let blended = blended_objects(&objects).concat();
        let det = |image, score, bbox| Detection {
            image,
            class: 0,
            score,
            bbox,
        };
        // Both blended boxes found; of the isolated ones, only the first image's.
        let dets = [
            det(0, 0.9, b(0.0, 0.0, 40.0, 40.0)),
            det(0, 0.8, b(30.0, 30.0, 70.0, 70.0)),
            det(0, 0.7, b(100.0, 100.0, 140.0, 140.0)),
        ];
        let p = CocoParams::default();
        let score = |keep: &[bool]| {
            let eval = evaluate_boxes(2, 1, &keep_group(&truth, keep), &dets, &p).unwrap();
            (
                eval.average_precision(None, Some(0.5), "all", 100).unwrap(),
                eval.average_recall(None, Some(0.5), "all", 100).unwrap(),
            )
        };
        let blends: Vec<bool> = blended.clone();
        let isolated: Vec<bool> = blended.iter().map(|b| !b).collect();
        let (ap, recall) = score(&blends);
        assert!((ap - 1.0).abs() < 1e-12 && recall == 1.0, "{ap} {recall}");
        let (ap, recall) = score(&isolated);
        assert_eq!(recall, 0.5);
        // Precision 1 up to recall 0.5: 51 of the 101 recall points.
        assert!((ap - 51.0 / 101.0).abs() < 1e-12, "{ap}");
        // A false positive far from everything lowers both groups' precision.
        let mut with_fp = dets.to_vec();
        with_fp.push(det(1, 0.95, b(150.0, 0.0, 190.0, 40.0)));
        let eval = evaluate_boxes(2, 1, &keep_group(&truth, &blends), &with_fp, &p).unwrap();
        assert!(eval.average_precision(None, Some(0.5), "all", 100).unwrap() < 0.9);

        // Two images, four boxes: one detection per image finds at most two.
        assert_eq!(ar1_ceiling(&truth, 2), Some(0.5));
        let perfect: Vec<Detection> = truth.iter().map(|t| det(t.image, 0.5, t.bbox)).collect();
        let eval = evaluate_boxes(2, 1, &truth, &perfect, &p).unwrap();
        assert_eq!(eval.average_recall(None, None, "all", 1), Some(0.5));
        assert_eq!(ar1_ceiling(&[], 2), None);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let d = |image, class, score, bbox| Detection {
            image,
            class,
            score,
            bbox,
        };
        let p = CocoParams::default();
        let ok = b(0.0, 0.0, 1.0, 1.0);
        for dets in [
            [d(3, 0, 0.5, ok)],
            [d(0, 2, 0.5, ok)],
            [d(0, 0, f64::NAN, ok)],
            [d(0, 0, 0.5, b(2.0, 0.0, 1.0, 1.0))],
        ] {
            assert!(matches!(
                evaluate_boxes(1, 2, &[], &dets, &p),
                Err(EvalError::Detection { .. })
            ));
        }
        let unsorted = CocoParams {
            max_dets: vec![10, 1],
            ..CocoParams::default()
        };
        assert!(evaluate_boxes(1, 1, &[], &[], &unsorted).is_err());
    }
}
