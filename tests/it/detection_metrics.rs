//! COCO box metrics against pycocotools: every value in
//! tests/fixtures/detection/coco_fixtures.json (made by make_coco_fixtures.py) within 1e-9:
//! the twelve summary numbers averaged and per class, and the whole precision and recall
//! arrays that accumulate() builds (so the precision-recall curves too).

use crate::shared::f64s;
use gpl::eval::detection::{evaluate_boxes, BBox, BoxEvaluation, CocoParams, Detection, TruthBox};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixtures() -> Vec<Value> {
    let text = include_str!("../fixtures/detection/coco_fixtures.json");
    let doc: Value = serde_json::from_str(text).expect("fixture file is valid JSON");
    doc["cases"].as_array().expect("cases array").clone()
}

fn bbox(v: &Value) -> BBox {
    let c = f64s(v);
    BBox {
        xmin: c[0],
        ymin: c[1],
        xmax: c[2],
        ymax: c[3],
    }
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("count") as usize
}

fn run(case: &Value) -> BoxEvaluation {
    let truth: Vec<TruthBox> = case["truth"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| TruthBox {
            image: usize_of(&t["image"]),
            class: usize_of(&t["class"]),
            bbox: bbox(&t["box"]),
            ignore: t["difficult"].as_bool().unwrap(),
        })
        .collect();
    let dets: Vec<Detection> = case["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Detection {
            image: usize_of(&d["image"]),
            class: usize_of(&d["class"]),
            score: d["score"].as_f64().unwrap(),
            bbox: bbox(&d["box"]),
        })
        .collect();
    let params = CocoParams {
        max_dets: case["max_dets"]
            .as_array()
            .unwrap()
            .iter()
            .map(usize_of)
            .collect(),
        ..CocoParams::default()
    };
    evaluate_boxes(
        usize_of(&case["images"]),
        usize_of(&case["classes"]),
        &truth,
        &dets,
        &params,
    )
    .expect("fixture inputs are valid")
}

fn close_all(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOL, "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn thresholds_are_numpys_to_the_bit() {
    let p = CocoParams::default();
    for case in fixtures() {
        assert_eq!(p.iou_thresholds, f64s(&case["iou_thresholds"]));
        assert_eq!(p.recall_thresholds, f64s(&case["recall_thresholds"]));
    }
}

#[test]
fn summary_equals_pycocotools_averaged_and_per_class() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let eval = run(&case);
        close_all(
            &eval.summary(None).stats(),
            &f64s(&case["stats"]),
            &format!("{name} stats"),
        );
        for (k, want) in case["per_class"].as_array().unwrap().iter().enumerate() {
            close_all(
                &eval.summary(Some(k)).stats(),
                &f64s(want),
                &format!("{name} class {k} stats"),
            );
        }
    }
}

#[test]
fn precision_and_recall_arrays_equal_pycocotools() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let eval = run(&case);
        let p = &eval.params;
        let (t_n, r_n, k_n, a_n, m_n) = (
            p.iou_thresholds.len(),
            p.recall_thresholds.len(),
            eval.classes,
            p.area_ranges.len(),
            p.max_dets.len(),
        );
        // Flatten ours in pycocotools' C order: precision [T, R, K, A, M], recall [T, K, A, M].
        let mut precision = Vec::new();
        let mut recall = Vec::new();
        for t in 0..t_n {
            for r in 0..r_n {
                for k in 0..k_n {
                    for a in 0..a_n {
                        for m in 0..m_n {
                            precision.push(eval.precision(t, k, a, m).map_or(-1.0, |q| q[r]));
                        }
                    }
                }
            }
            for k in 0..k_n {
                for a in 0..a_n {
                    for m in 0..m_n {
                        recall.push(eval.recall(t, k, a, m).unwrap_or(-1.0));
                    }
                }
            }
        }
        close_all(
            &precision,
            &f64s(&case["precision"]),
            &format!("{name} precision"),
        );
        close_all(&recall, &f64s(&case["recall"]), &format!("{name} recall"));
    }
}

#[test]
fn every_ap_row_uses_the_largest_max_dets_unlike_summarize() {
    // pycocotools' summarize() asks for maxDets=100 in its first AP row whatever the
    // parameters say, so with maxDets [1, 5, 20] it prints -1 there; gpl reports the value.
    let case = fixtures()
        .into_iter()
        .find(|c| c["name"] == "max_dets_1_5_20")
        .expect("the custom maxDets case");
    let eval = run(&case);
    let ours = eval.summary(None);
    let theirs = f64s(&case["stats_pycocotools"]);
    assert_eq!(theirs[0], -1.0);
    assert!(ours.rows[0].value.is_some_and(|v| v > 0.0));
    assert_eq!(ours.rows[0].max_dets, 20);
    close_all(&ours.stats()[1..], &theirs[1..], "rows after the first");
    // The per-maxDets AP honours its argument: each equals the mean of pycocotools' precision
    // array at that maxDets (area "all"), and they differ.
    let p = &eval.params;
    let (a_n, m_n) = (p.area_ranges.len(), p.max_dets.len());
    let flat = f64s(&case["precision"]);
    let mut seen = Vec::new();
    for (m, &max_dets) in p.max_dets.iter().enumerate() {
        let values: Vec<f64> = flat
            .iter()
            .enumerate()
            .filter(|&(i, &v)| i % m_n == m && (i / m_n) % a_n == 0 && v > -1.0)
            .map(|(_, &v)| v)
            .collect();
        let want = values.iter().sum::<f64>() / values.len() as f64;
        let got = eval.average_precision(None, None, "all", max_dets).unwrap();
        assert!(
            (got - want).abs() <= TOL,
            "maxDets {max_dets}: {got} vs {want}"
        );
        seen.push(got);
    }
    assert!(seen[0] != seen[1] && seen[1] != seen[2], "{seen:?}");
    assert_eq!(eval.average_precision(None, None, "all", 100), None);
}

#[test]
fn summary_lines_read_like_pycocotools() {
    let case = &fixtures()[0];
    let eval = run(case);
    let lines = eval.summary(None).lines(&eval.params);
    let stats = f64s(&case["stats"]);
    assert_eq!(
        lines[0],
        format!(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}",
            stats[0]
        )
    );
    assert_eq!(
        lines[1],
        format!(
            " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = {:.3}",
            stats[1]
        )
    );
    assert_eq!(
        lines[9],
        format!(
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = {:.3}",
            stats[9]
        )
    );
}
