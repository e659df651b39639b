//! Anchors for the learned detectors (issue 17): the boxes each cell of each feature map
//! predicts against, the box coder that turns a ground-truth box into the regression target
//! of an anchor and back (SSD's variances, torchvision's `BoxCoder(weights=(10, 10, 5, 5))`),
//! and the matching of anchors to ground truth (RetinaNet's rule, torchvision's
//! `Matcher(0.5, 0.4, allow_low_quality_matches=True)`), which together make one image's
//! training targets. Boxes are `[x0, y0, x1, y1]` in pixel edges of the network's input
//! image (`detect::boxes`). docs/decisions.md, "Anchors, matching and NMS (issue 17)".

use std::ops::Range;

use super::boxes::iou;

/// One feature map the detector predicts on.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorLevel {
    pub height: usize,
    pub width: usize,
    /// Anchor side at aspect ratio 1, pixels.
    pub size: f32,
    /// Width / height ratios, one anchor per ratio per cell.
    pub ratios: Vec<f32>,
}

/// Every anchor of a detector, in the order its heads' outputs are flattened: level, then
/// row y, column x, then ratio.
#[derive(Clone, Debug, PartialEq)]
pub struct Anchors {
    boxes: Vec<[f32; 4]>,
    /// Where each level's anchors lie in `boxes`.
    levels: Vec<Range<usize>>,
}

impl Anchors {
    /// Cell centres at `((x + 0.5) · image_w / width, (y + 0.5) · image_h / height)`; an
    /// anchor of ratio r is `size · √r` wide and `size / √r` high. Sizes and ratios are
    /// expected positive (the detector's checker refuses others); computed in f64 and
    /// rounded once to f32.
    pub fn generate(image: [usize; 2], levels: &[AnchorLevel]) -> Anchors {
        let [image_h, image_w] = image;
        let mut boxes = Vec::new();
        let mut ranges = Vec::with_capacity(levels.len());
        for level in levels {
            let start = boxes.len();
            let stride_x = image_w as f64 / level.width as f64;
            let stride_y = image_h as f64 / level.height as f64;
            let shapes: Vec<(f64, f64)> = level
                .ratios
                .iter()
                .map(|&r| {
                    let root = (r as f64).sqrt();
                    let size = level.size as f64;
                    (size * root / 2.0, size / root / 2.0)
                })
                .collect();
            for y in 0..level.height {
                let cy = (y as f64 + 0.5) * stride_y;
                for x in 0..level.width {
                    let cx = (x as f64 + 0.5) * stride_x;
                    for &(half_w, half_h) in &shapes {
                        boxes.push([
                            (cx - half_w) as f32,
                            (cy - half_h) as f32,
                            (cx + half_w) as f32,
                            (cy + half_h) as f32,
                        ]);
                    }
                }
            }
            ranges.push(start..boxes.len());
        }
        Anchors {
            boxes,
            levels: ranges,
        }
    }

    /// Anchors made from given boxes, as one level (for tests and for detectors whose anchors
    /// come from elsewhere).
    pub fn from_boxes(boxes: Vec<[f32; 4]>) -> Anchors {
        let levels = std::iter::once(0..boxes.len()).collect();
        Anchors { boxes, levels }
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn boxes(&self) -> &[[f32; 4]] {
        &self.boxes
    }

    /// The indices of level `level`'s anchors (one range per level given to `generate`).
    pub fn level(&self, level: usize) -> Range<usize> {
        self.levels[level].clone()
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }
}

/// SSD / TF Object Detection API box coder variances (x, y, w, h): the reciprocals of
/// torchvision's `BoxCoder` weights (10, 10, 5, 5).
pub const VARIANCES: [f32; 4] = [0.1, 0.1, 0.2, 0.2];

/// `decode` clamps the log-size deltas to this (torchvision's `bbox_xform_clip`), so a wild
/// prediction gives a box 62.5 times its anchor, not an overflow.
pub const MAX_LOG_SCALE: f32 = 4.135_166_6; // ln(1000 / 16)

/// Centre form `(cx, cy, w, h)`, as torchvision computes it (`x0 + 0.5 · w`).
fn centre_form(b: [f32; 4]) -> [f32; 4] {
    let w = b[2] - b[0];
    let h = b[3] - b[1];
    [b[0] + 0.5 * w, b[1] + 0.5 * h, w, h]
}

/// The regression target of `gt` against `anchor`: on centre forms,
/// `((gx − ax) / aw / 0.1, (gy − ay) / ah / 0.1, ln(gw / aw) / 0.2, ln(gh / ah) / 0.2)`.
/// Both boxes need positive width and height (matching never pairs an anchor with a box
/// without area).
pub fn encode(anchor: [f32; 4], gt: [f32; 4]) -> [f32; 4] {
    let [ax, ay, aw, ah] = centre_form(anchor);
    let [gx, gy, gw, gh] = centre_form(gt);
    [
        (gx - ax) / aw / VARIANCES[0],
        (gy - ay) / ah / VARIANCES[1],
        (gw / aw).ln() / VARIANCES[2],
        (gh / ah).ln() / VARIANCES[3],
    ]
}

/// The inverse of [`encode`], with the log-size deltas clamped to [`MAX_LOG_SCALE`] (from
/// above only, as torchvision: a very negative one gives a box of nearly no size).
pub fn decode(anchor: [f32; 4], deltas: [f32; 4]) -> [f32; 4] {
    let [ax, ay, aw, ah] = centre_form(anchor);
    let dx = deltas[0] * VARIANCES[0];
    let dy = deltas[1] * VARIANCES[1];
    let dw = (deltas[2] * VARIANCES[2]).min(MAX_LOG_SCALE);
    let dh = (deltas[3] * VARIANCES[3]).min(MAX_LOG_SCALE);
    let cx = dx * aw + ax;
    let cy = dy * ah + ay;
    let half_w = 0.5 * (dw.exp() * aw);
    let half_h = 0.5 * (dh.exp() * ah);
    [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
}

/// The IoU thresholds of [`match_anchors`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchConfig {
    /// An anchor whose best IoU is at least this is positive.
    pub positive_iou: f32,
    /// An anchor whose best IoU is under this is background; between the two it is ignored.
    pub negative_iou: f32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            positive_iou: 0.5,
            negative_iou: 0.4,
        }
    }
}

/// What an anchor is trained towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Regresses ground-truth box k and predicts its class.
    Positive(usize),
    /// Background.
    Negative,
    /// Neither: no loss (best IoU in `[negative_iou, positive_iou)`).
    Ignore,
}

/// RetinaNet's rule, as torchvision's `Matcher(positive, negative,
/// allow_low_quality_matches=True)`: each anchor takes its best ground-truth box (the first
/// on equal IoU); IoU ≥ `positive_iou` is positive, < `negative_iou` negative, between
/// ignored. Then, for every ground-truth box, the anchors at that box's highest IoU (all of
/// them on ties) become positive, each for **its own** best box (torchvision's choice; it is
/// the box that picked it unless another box overlaps the anchor more). One difference: a
/// ground-truth box that overlaps no anchor at all (highest IoU 0, including a box without
/// area) keeps nothing, where torchvision would make every anchor it misses positive. No
/// ground truth: every anchor is negative.
pub fn match_anchors(anchors: &Anchors, gt: &[[f32; 4]], cfg: MatchConfig) -> Vec<Match> {
    if gt.is_empty() {
        return vec![Match::Negative; anchors.len()];
    }
    // One pass over the anchors keeps each anchor's best box and each box's highest IoU; a
    // second recomputes the IoUs (cheaper than storing anchors × boxes) to find the ties.
    let mut best = Vec::with_capacity(anchors.len());
    let mut highest = vec![0.0f32; gt.len()];
    let mut matches: Vec<Match> = anchors
        .boxes()
        .iter()
        .map(|&a| {
            let mut best_k = 0;
            let mut best_iou = f32::NEG_INFINITY;
            for (k, &g) in gt.iter().enumerate() {
                let v = iou(a, g);
                if v > best_iou {
                    best_iou = v;
                    best_k = k;
                }
                if v > highest[k] {
                    highest[k] = v;
                }
            }
            best.push(best_k);
            if best_iou >= cfg.positive_iou {
                Match::Positive(best_k)
            } else if best_iou < cfg.negative_iou {
                Match::Negative
            } else {
                Match::Ignore
            }
        })
        .collect();
    for (a, &anchor) in anchors.boxes().iter().enumerate() {
        let keeps = gt
            .iter()
            .zip(&highest)
            .any(|(&g, &h)| h > 0.0 && iou(anchor, g) == h);
        if keeps {
            matches[a] = Match::Positive(best[a]);
        }
    }
    matches
}

/// One image's training targets. `labels[a]`: −1 ignored, 0 background, c + 1 for a positive
/// matched to a box of class c (0-based); `boxes[4a..4a + 4]`: `encode(anchor, gt)` for
/// positives, 0 elsewhere.
///
/// # Panics
/// When the slices' lengths disagree (`gt_classes` one per box, `labels` one per anchor,
/// `boxes` four per anchor): the caller sizes them.
pub fn detection_targets(
    anchors: &Anchors,
    gt: &[[f32; 4]],
    gt_classes: &[usize],
    cfg: MatchConfig,
    labels: &mut [i32],
    boxes: &mut [f32],
) {
    assert_eq!(gt.len(), gt_classes.len(), "one class per ground-truth box");
    assert_eq!(labels.len(), anchors.len(), "one label per anchor");
    assert_eq!(
        boxes.len(),
        4 * anchors.len(),
        "four box targets per anchor"
    );
    let matches = match_anchors(anchors, gt, cfg);
    for (a, m) in matches.into_iter().enumerate() {
        let target = &mut boxes[4 * a..4 * a + 4];
        match m {
            Match::Positive(k) => {
                labels[a] = gt_classes[k] as i32 + 1;
                target.copy_from_slice(&encode(anchors.boxes[a], gt[k]));
            }
            Match::Negative => {
                labels[a] = 0;
                target.fill(0.0);
            }
            Match::Ignore => {
                labels[a] = -1;
                target.fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f32; 4], b: [f32; 4], tol: f32) -> bool {
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn generate_orders_level_row_column_ratio() {
        let levels = [
            AnchorLevel {
                height: 2,
                width: 3,
                size: 8.0,
                ratios: vec![1.0, 4.0],
            },
            AnchorLevel {
                height: 1,
                width: 1,
                size: 16.0,
                ratios: vec![1.0],
            },
        ];
        let anchors = Anchors::generate([16, 24], &levels);
        assert_eq!(anchors.len(), 2 * 3 * 2 + 1);
        assert_eq!(
            (anchors.levels(), anchors.level(0), anchors.level(1)),
            (2, 0..12, 12..13)
        );
        let b = anchors.boxes();
        // Level 0, stride 8: cell (y 0, x 0) centred at (4, 4), ratio 1 then ratio 4 (16 × 4).
        assert_eq!(b[0], [0.0, 0.0, 8.0, 8.0]);
        assert_eq!(b[1], [-4.0, 2.0, 12.0, 6.0]);
        // Next column, then the next row.
        assert_eq!(b[2], [8.0, 0.0, 16.0, 8.0]);
        assert_eq!(b[6], [0.0, 8.0, 8.0, 16.0]);
        assert_eq!(b[11], [12.0, 10.0, 28.0, 14.0]);
        // Level 1: one cell, centred on the image.
        assert_eq!(b[12], [4.0, 0.0, 20.0, 16.0]);
        assert!(Anchors::generate([16, 16], &[]).is_empty());
    }

    #[test]
    fn encode_then_decode_gives_the_box_back() {
        let anchor = [10.0, 20.0, 42.0, 36.0];
        for gt in [
            [12.0, 18.0, 40.0, 50.0],
            [0.5, 0.25, 3.0, 2.0],
            [10.0, 20.0, 42.0, 36.0],
        ] {
            let d = encode(anchor, gt);
            assert!(close(decode(anchor, d), gt, 1e-4), "{gt:?} -> {d:?}");
        }
        assert_eq!(encode(anchor, anchor), [0.0; 4]);
        // Shifted by a tenth of the anchor's width, twice as high: (1, 0, 0, ln 2 / 0.2).
        let d = encode(anchor, [13.2, 12.0, 45.2, 44.0]);
        assert!(close(d, [1.0, 0.0, 0.0, 2f32.ln() / 0.2], 1e-5), "{d:?}");
    }

    #[test]
    fn decode_clamps_wild_sizes() {
        let b = decode([0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 1e9, f32::MAX]);
        assert!(b.iter().all(|v| v.is_finite()));
        assert!(((b[2] - b[0]) - 1000.0).abs() < 0.01, "{b:?}");
        assert!(((b[3] - b[1]) - 1000.0).abs() < 0.01, "{b:?}");
    }

    #[test]
    fn matching_keeps_each_box_its_best_anchors() {
        let anchors = Anchors::from_boxes(vec![
            [0.0, 0.0, 10.0, 10.0],
            [5.0, 0.0, 15.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [40.0, 40.0, 50.0, 50.0],
            [23.0, 20.0, 33.0, 30.0],
        ]);
        let gt = [
            [0.0, 0.0, 10.0, 10.0],       // anchor 0 exactly
            [24.0, 24.0, 32.0, 32.0],     // at most IoU 0.41, with anchor 4
            [100.0, 100.0, 110.0, 110.0], // overlaps nothing
        ];
        let m = match_anchors(&anchors, &gt, MatchConfig::default());
        // Anchor 1: IoU 1/3 with box 0, negative. Anchor 2: IoU 36/128 with box 1. Anchor 4:
        // IoU 48/116 = 0.41 with box 1, ignored by the thresholds but box 1's best, so
        // positive. Box 2 keeps nothing, and anchor 3 stays negative.
        assert_eq!(
            m,
            vec![
                Match::Positive(0),
                Match::Negative,
                Match::Negative,
                Match::Negative,
                Match::Positive(1)
            ]
        );
        assert_eq!(
            match_anchors(&anchors, &[], MatchConfig::default()),
            vec![Match::Negative; 5]
        );
    }

    #[test]
    fn targets_label_and_encode_positives_only() {
        let anchors = Anchors::from_boxes(vec![
            [0.0, 0.0, 10.0, 10.0],
            [30.0, 30.0, 40.0, 40.0],
            [3.0, 0.0, 13.0, 10.0],
        ]);
        let gt = [[1.0, 0.0, 11.0, 10.0]];
        let mut labels = vec![7; 3];
        let mut boxes = vec![7.0; 12];
        detection_targets(
            &anchors,
            &gt,
            &[2],
            MatchConfig::default(),
            &mut labels,
            &mut boxes,
        );
        // Anchor 2: IoU 8/12 ≥ 0.5. Anchor 0: IoU 9/11, positive too.
        assert_eq!(labels, vec![3, 0, 3]);
        assert_eq!(&boxes[4..8], &[0.0; 4]);
        assert!(close(
            boxes[0..4].try_into().unwrap(),
            [1.0, 0.0, 0.0, 0.0],
            1e-6
        ));
        assert!(close(
            boxes[8..12].try_into().unwrap(),
            [-2.0, 0.0, 0.0, 0.0],
            1e-6
        ));
        let mut labels = vec![7; 3];
        let gt = [[6.0, 0.0, 16.0, 10.0]];
        detection_targets(
            &anchors,
            &gt,
            &[0],
            MatchConfig::default(),
            &mut labels,
            &mut boxes,
        );
        // Anchor 2's IoU 7/13 = 0.54: positive; anchor 0's 4/16: negative.
        assert_eq!(labels, vec![0, 0, 1]);
        let cfg = MatchConfig {
            positive_iou: 0.6,
            negative_iou: 0.2,
        };
        detection_targets(&anchors, &gt, &[0], cfg, &mut labels, &mut boxes);
        // Anchor 0 (0.25) now ignored; anchor 2 still positive as the box's best.
        assert_eq!(labels, vec![-1, 0, 1]);
        assert_eq!(&boxes[0..4], &[0.0; 4]);
    }
}
