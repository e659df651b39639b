//! Anchors, matching, the box coder and NMS against torchvision: the fixtures
//! tests/fixtures/detection/anchors_*.json, made by make_anchor_fixtures.py. Indices exactly;
//! floats within 1e-5, relative to the value's size where that is above 1 (pixel coordinates
//! run to the hundreds, where one f32 step is already 1e-5).

use crate::shared::f64s;
use gpl::detect::anchors::{
    decode, detection_targets, encode, match_anchors, AnchorLevel, Anchors, Match, MatchConfig,
};
use gpl::detect::boxes::iou;
use gpl::detect::nms::{batched_nms, nms};
use serde_json::Value;

const TOL: f32 = 1e-5;

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture file is valid JSON")
}

fn boxes(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .expect("array of boxes")
        .iter()
        .map(|b| {
            let c = f64s(b);
            [c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32]
        })
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("index") as usize)
        .collect()
}

fn assert_close(got: f32, want: f32, what: &str) {
    assert!(
        (got - want).abs() <= TOL * want.abs().max(1.0),
        "{what}: {got} vs torchvision {want}"
    );
}

fn assert_boxes_close(got: &[[f32; 4]], want: &[[f32; 4]], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for c in 0..4 {
            assert_close(g[c], w[c], &format!("{what} {i}[{c}]"));
        }
    }
}

#[test]
fn iou_matches_torchvision_box_iou() {
    let doc = load(include_str!("../fixtures/detection/anchors_iou.json"));
    let mut pairs = 0;
    for case in doc["cases"].as_array().unwrap() {
        let a = boxes(&case["boxes1"]);
        let b = boxes(&case["boxes2"]);
        let want = case["iou"].as_array().unwrap();
        for (i, &x) in a.iter().enumerate() {
            let row = f64s(&want[i]);
            for (j, &y) in b.iter().enumerate() {
                assert_close(iou(x, y), row[j] as f32, &format!("iou({i}, {j})"));
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 7 * 5 + 12 * 9 + 3 * 4);
}

#[test]
fn generate_matches_the_fixtures_formula() {
    let doc = load(include_str!("../fixtures/detection/anchors_match.json"));
    for case in doc["cases"].as_array().unwrap() {
        let image = usizes(&case["image"]);
        let levels: Vec<AnchorLevel> = case["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| AnchorLevel {
                height: l["height"].as_u64().unwrap() as usize,
                width: l["width"].as_u64().unwrap() as usize,
                size: l["size"].as_f64().unwrap() as f32,
                ratios: f64s(&l["ratios"]).iter().map(|&r| r as f32).collect(),
            })
            .collect();
        let anchors = Anchors::generate([image[0], image[1]], &levels);
        let name = case["name"].as_str().unwrap();
        assert_boxes_close(anchors.boxes(), &boxes(&case["anchors"]), name);
    }
}

/// torchvision's matcher output: gt index, -1 below the negative threshold, -2 between.
fn torchvision_code(m: Match) -> i64 {
    match m {
        Match::Positive(k) => k as i64,
        Match::Negative => -1,
        Match::Ignore => -2,
    }
}

#[test]
fn matching_and_targets_match_torchvision_matcher_and_box_coder() {
    let doc = load(include_str!("../fixtures/detection/anchors_match.json"));
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let anchors = Anchors::from_boxes(boxes(&case["anchors"]));
        let gt = boxes(&case["gt"]);
        let classes = usizes(&case["gt_classes"]);
        let want: Vec<i64> = case["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let got: Vec<i64> = match_anchors(&anchors, &gt, MatchConfig::default())
            .into_iter()
            .map(torchvision_code)
            .collect();
        assert_eq!(got, want, "{name}: matches");
        // The low-quality step must have changed something, or the case tests half the rule.
        let plain: Vec<i64> = case["matches_without_low_quality"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_ne!(
            plain, want,
            "{name}: the fixture exercises the low-quality matches"
        );

        let mut labels = vec![i32::MIN; anchors.len()];
        let mut targets = vec![f32::NAN; 4 * anchors.len()];
        detection_targets(
            &anchors,
            &gt,
            &classes,
            MatchConfig::default(),
            &mut labels,
            &mut targets,
        );
        let want_labels: Vec<i32> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(labels, want_labels, "{name}: labels");
        let got: Vec<[f32; 4]> = targets
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        assert_boxes_close(
            &got,
            &boxes(&case["box_targets"]),
            &format!("{name}: targets"),
        );
    }
}

#[test]
fn nms_and_batched_nms_keep_torchvisions_indices() {
    let doc = load(include_str!("../fixtures/detection/anchors_nms.json"));
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let b = boxes(&case["boxes"]);
        let scores: Vec<f32> = f64s(&case["scores"]).iter().map(|&s| s as f32).collect();
        let classes = usizes(&case["classes"]);
        for t in case["thresholds"].as_array().unwrap() {
            let thr = t["iou"].as_f64().unwrap() as f32;
            assert_eq!(
                nms(&b, &scores, thr),
                usizes(&t["nms"]),
                "{name} nms @ {thr}"
            );
            assert_eq!(
                batched_nms(&b, &scores, &classes, thr),
                usizes(&t["batched_nms"]),
                "{name} batched_nms @ {thr}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

#[test]
fn box_coder_matches_torchvision_weights_10_10_5_5() {
    let doc = load(include_str!("../fixtures/detection/anchors_coder.json"));
    let anchors = boxes(&doc["anchors"]);
    let gt = boxes(&doc["gt"]);
    let deltas = boxes(&doc["deltas"]);
    let encoded: Vec<[f32; 4]> = anchors
        .iter()
        .zip(&gt)
        .map(|(&a, &g)| encode(a, g))
        .collect();
    assert_boxes_close(&encoded, &boxes(&doc["encoded"]), "encode");
    let decoded: Vec<[f32; 4]> = anchors
        .iter()
        .zip(&deltas)
        .map(|(&a, &d)| decode(a, d))
        .collect();
    assert_boxes_close(&decoded, &boxes(&doc["decoded"]), "decode");
}
