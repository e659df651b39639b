//! From a learned detector's raw outputs to detections: sigmoid class scores, the best
//! candidates decoded against their anchors and clipped to the image, then greedy
//! non-maximum suppression per class, as torchvision's `nms` and `batched_nms` do it.
//! Every order is by score, descending, ties by index, so the result never depends on a sort's
//! whims. docs/decisions.md, "Anchors, matching and NMS (issue 17)".

use std::cmp::Ordering;

use super::anchors::{decode, Anchors};
use super::boxes::iou;

/// One detection in the network's input image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: usize,
}

/// Indices by score, descending; equal scores keep index order (a stable sort), NaN last.
fn by_score(scores: &[f32]) -> Vec<usize> {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // No NaN is left after `key`, so partial_cmp always answers.
    order.sort_by(|&a, &b| {
        key(scores[b])
            .partial_cmp(&key(scores[a]))
            .unwrap_or(Ordering::Equal)
    });
    order
}

/// Greedy NMS in score order; a kept box suppresses later boxes of its class (all boxes when
/// `classes` is `None`) whose IoU with it is above `threshold`. Per-class NMS merged by score
/// is the same as this single pass, because each class sees its boxes in the same order.
fn greedy(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: Option<&[usize]>,
    threshold: f32,
) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    if let Some(c) = classes {
        assert_eq!(boxes.len(), c.len(), "one class per box");
    }
    let order = by_score(scores);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (p, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[p + 1..] {
            let other_class = classes.is_some_and(|c| c[j] != c[i]);
            if !suppressed[j] && !other_class && iou(boxes[i], boxes[j]) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Greedy NMS as `torchvision.ops.nms`: boxes by score, descending (equal scores: lower
/// index first), each kept unless its IoU with a box kept before it is above `iou`. Returns
/// the kept indices in that order.
///
/// # Panics
/// When `scores` is not one per box.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou: f32) -> Vec<usize> {
    greedy(boxes, scores, None, iou)
}

/// `torchvision.ops.batched_nms`: [`nms`] within each class independently, the kept indices
/// of all classes by score, descending (equal scores: lower index first).
///
/// # Panics
/// When `scores` or `classes` is not one per box.
pub fn batched_nms(boxes: &[[f32; 4]], scores: &[f32], classes: &[usize], iou: f32) -> Vec<usize> {
    greedy(boxes, scores, Some(classes), iou)
}

/// How raw outputs become detections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeConfig {
    /// Candidates need a sigmoid score at least this.
    pub score_threshold: f32,
    /// NMS's IoU threshold (within a class).
    pub iou: f32,
    /// Detections kept per image, after NMS.
    pub top_k: usize,
    /// Candidates decoded and given to NMS, the best by score.
    pub pre_nms_top_k: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            score_threshold: 0.05,
            iou: 0.5,
            top_k: 100,
            pre_nms_top_k: 1000,
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `[x0, y0, x1, y1]` inside `[0, width] × [0, height]`.
fn clip(b: [f32; 4], image: [usize; 2]) -> [f32; 4] {
    let (h, w) = (image[0] as f32, image[1] as f32);
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

/// One image's raw head outputs to its detections, as torchvision's RetinaNet post-processing
/// (over all levels at once): `class_logits` is `[anchor][class]` flattened (a sigmoid per
/// class, no background column), `box_deltas` `[anchor][4]`. Every (anchor, class) whose
/// score reaches `score_threshold` is a candidate; the best `pre_nms_top_k` by score are
/// decoded against their anchors and clipped to the image (`[height, width]`); a box left
/// without area (it lay outside the image) is dropped; class-wise NMS; the best `top_k`.
/// Equal scores keep (anchor, class) order throughout, so the result is deterministic.
///
/// # Panics
/// When `class_logits` is not `classes` per anchor or `box_deltas` not four per anchor.
pub fn decode_detections(
    anchors: &Anchors,
    class_logits: &[f32],
    box_deltas: &[f32],
    classes: usize,
    image: [usize; 2],
    cfg: &DecodeConfig,
) -> Vec<Detection> {
    assert_eq!(
        class_logits.len(),
        anchors.len() * classes,
        "one logit per anchor and class"
    );
    assert_eq!(
        box_deltas.len(),
        4 * anchors.len(),
        "four box deltas per anchor"
    );
    let mut candidates: Vec<(usize, f32)> = class_logits
        .iter()
        .enumerate()
        .filter_map(|(i, &logit)| {
            let s = sigmoid(logit);
            (s >= cfg.score_threshold).then_some((i, s))
        })
        .collect();
    // Score descending, equal scores in (anchor, class) order: a total order (no NaN passed
    // the threshold), so selecting the best before sorting them gives the same list.
    let order = |a: &(usize, f32), b: &(usize, f32)| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(Ordering::Equal)
            .then(a.0.cmp(&b.0))
    };
    if candidates.len() > cfg.pre_nms_top_k && cfg.pre_nms_top_k > 0 {
        candidates.select_nth_unstable_by(cfg.pre_nms_top_k - 1, order);
    }
    candidates.truncate(cfg.pre_nms_top_k);
    candidates.sort_unstable_by(order);
    let found: Vec<Detection> = candidates
        .into_iter()
        .filter_map(|(i, score)| {
            let a = i / classes;
            let d = &box_deltas[4 * a..4 * a + 4];
            let bbox = clip(decode(anchors.boxes()[a], [d[0], d[1], d[2], d[3]]), image);
            (bbox[2] > bbox[0] && bbox[3] > bbox[1]).then_some(Detection {
                bbox,
                score,
                class: i % classes,
            })
        })
        .collect();
    let boxes: Vec<[f32; 4]> = found.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = found.iter().map(|d| d.score).collect();
    let labels: Vec<usize> = found.iter().map(|d| d.class).collect();
    let keep = batched_nms(&boxes, &scores, &labels, cfg.iou);
    keep.into_iter().take(cfg.top_k).map(|k| found[k]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_breaks_ties_by_index() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0], // IoU 9/11 with box 0
            [20.0, 0.0, 30.0, 10.0],
            [0.0, 0.0, 10.0, 10.0], // box 0 again
        ];
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.3, 0.9], 0.5), vec![1, 2]);
        // Boxes 1 and 3 tie at 0.9: box 1 (lower index) goes first; box 3 then suppresses
        // its copy, box 0. At threshold 1 nothing is suppressed.
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.3, 0.9], 0.85), vec![1, 3, 2]);
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.3, 0.9], 1.0), vec![1, 3, 0, 2]);
        // IoU exactly at the threshold is kept (suppression is for IoU above it).
        assert_eq!(nms(&boxes[..2], &[0.5, 0.9], 9.0 / 11.0), vec![1, 0]);
        assert_eq!(
            batched_nms(&boxes, &[0.5, 0.9, 0.3, 0.9], &[0, 1, 0, 0], 0.5),
            vec![1, 3, 2]
        );
        assert!(nms(&[], &[], 0.5).is_empty());
    }

    /// Three anchors; the logits put class scores where the test wants them.
    fn case() -> (Anchors, Vec<f32>) {
        let anchors = Anchors::from_boxes(vec![
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [30.0, 30.0, 40.0, 40.0],
        ]);
        (anchors, vec![0.0; 12])
    }

    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn decode_merges_one_class_and_keeps_two() {
        let (anchors, deltas) = case();
        let cfg = DecodeConfig::default();
        // Class 0 on anchors 0 and 1 (overlapping): one detection. Anchor 2 below threshold.
        let logits = [logit(0.8), -9.0, logit(0.9), -9.0, -9.0, -9.0];
        let d = decode_detections(&anchors, &logits, &deltas, 2, [64, 64], &cfg);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class, d[0].bbox), (0, [1.0, 0.0, 11.0, 10.0]));
        assert!((d[0].score - 0.9).abs() < 1e-6);
        // The same two anchors, different classes: both stay, best first.
        let logits = [logit(0.8), -9.0, -9.0, logit(0.9), -9.0, -9.0];
        let d = decode_detections(&anchors, &logits, &deltas, 2, [64, 64], &cfg);
        let got: Vec<(usize, [f32; 4])> = d.iter().map(|d| (d.class, d.bbox)).collect();
        assert_eq!(
            got,
            vec![(1, [1.0, 0.0, 11.0, 10.0]), (0, [0.0, 0.0, 10.0, 10.0])]
        );
        // Equal scores: the first (anchor, class) wins the one place among the best.
        let logits = [-9.0, -9.0, -9.0, 1.5, -9.0, 1.5];
        let cfg = DecodeConfig {
            pre_nms_top_k: 1,
            ..cfg
        };
        let d = decode_detections(&anchors, &logits, &deltas, 2, [64, 64], &cfg);
        assert_eq!(
            (d.len(), d[0].class, d[0].bbox),
            (1, 1, [1.0, 0.0, 11.0, 10.0])
        );
    }

    #[test]
    fn decode_respects_threshold_top_k_and_the_image() {
        let (anchors, mut deltas) = case();
        let logits = [
            logit(0.3),
            logit(0.2),
            logit(0.6),
            -9.0,
            logit(0.04),
            logit(0.7),
        ];
        // Move anchor 2 down by half its height: half of it leaves the 40-pixel-high image.
        deltas[9] = 0.5 / 0.1;
        let run_with = |deltas: &[f32], cfg: DecodeConfig| {
            decode_detections(&anchors, &logits, deltas, 2, [40, 64], &cfg)
                .iter()
                .map(|d| (d.class, d.bbox))
                .collect::<Vec<_>>()
        };
        let run = |cfg: DecodeConfig| run_with(&deltas, cfg);
        let all = run(DecodeConfig::default());
        // Anchor 2 class 0 (0.04) is under 0.05; anchor 0 class 0 is suppressed by anchor
        // 1's (IoU 9/11); anchor 0 class 1 stays (its only better overlap is of class 0).
        assert_eq!(
            all,
            vec![
                (1, [30.0, 35.0, 40.0, 40.0]),
                (0, [1.0, 0.0, 11.0, 10.0]),
                (1, [0.0, 0.0, 10.0, 10.0]),
            ]
        );
        let top2 = run(DecodeConfig {
            top_k: 2,
            ..DecodeConfig::default()
        });
        assert_eq!(top2, all[..2]);
        let strict = run(DecodeConfig {
            score_threshold: 0.5,
            ..DecodeConfig::default()
        });
        assert_eq!(strict, all[..2]);
        // Only the best candidate reaches NMS.
        let one = run(DecodeConfig {
            pre_nms_top_k: 1,
            ..DecodeConfig::default()
        });
        assert_eq!(one, all[..1]);
        // A box pushed wholly outside the image is dropped.
        deltas[9] = 10.0 / 0.1;
        let outside = run_with(&deltas, DecodeConfig::default());
        assert_eq!(outside, all[1..]);
    }
}
