//! Classification metrics against scikit-learn: every value in
//! tests/fixtures/eval/metrics_fixtures.json (made by make_metrics_fixtures.py) within 1e-9.

use crate::shared::f64s;
use gpl::eval::classification::top_k_accuracy;
use gpl::eval::roc::RocCurve;
use gpl::eval::{evaluate, ProbMatrix};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixtures() -> Vec<Value> {
    let text = include_str!("../fixtures/eval/metrics_fixtures.json");
    let doc: Value = serde_json::from_str(text).expect("fixture file is valid JSON");
    doc["cases"].as_array().expect("cases array").clone()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= TOL, "{what}: got {got}, want {want}");
}

fn close_all(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        close(*g, *w, &format!("{what}[{i}]"));
    }
}

fn case_inputs(case: &Value) -> (Vec<u32>, ProbMatrix, Vec<String>) {
    let n = case["n"].as_u64().unwrap() as usize;
    let c = case["classes"].as_u64().unwrap() as usize;
    let y: Vec<u32> = case["y_true"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let probs = ProbMatrix::new(n, c, f64s(&case["probs"])).expect("fixture shape");
    let names = case["class_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (y, probs, names)
}

fn check_curve(got: &RocCurve, want: &Value, what: &str) {
    close_all(&got.fpr, &f64s(&want["fpr"]), &format!("{what} fpr"));
    close_all(&got.tpr, &f64s(&want["tpr"]), &format!("{what} tpr"));
    let thresholds = want["thresholds"].as_array().unwrap();
    assert_eq!(
        got.thresholds.len(),
        thresholds.len(),
        "{what} thresholds length"
    );
    assert!(
        thresholds[0].is_null() && got.thresholds[0] == f64::INFINITY,
        "{what}: first threshold is +inf"
    );
    for (i, t) in thresholds.iter().enumerate().skip(1) {
        close(
            got.thresholds[i],
            t.as_f64().unwrap(),
            &format!("{what} threshold[{i}]"),
        );
    }
}

#[test]
fn classification_report_matches_sklearn() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let (y, probs, names) = case_inputs(&case);
        let ev = evaluate(&y, &probs, &names).unwrap();
        let y_pred: Vec<u32> = case["y_pred"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(probs.argmax(), y_pred, "{name}: argmax");
        for (k, want) in case["per_class"].as_array().unwrap().iter().enumerate() {
            let got = &ev.per_class[k];
            close(
                got.precision,
                want["precision"].as_f64().unwrap(),
                &format!("{name} precision[{k}]"),
            );
            close(
                got.recall,
                want["recall"].as_f64().unwrap(),
                &format!("{name} recall[{k}]"),
            );
            close(
                got.f1,
                want["f1-score"].as_f64().unwrap(),
                &format!("{name} f1[{k}]"),
            );
            assert_eq!(
                got.support as f64,
                want["support"].as_f64().unwrap(),
                "{name} support[{k}]"
            );
        }
        close(
            ev.accuracy,
            case["accuracy"].as_f64().unwrap(),
            &format!("{name} accuracy"),
        );
        for (avg, got) in [("macro", &ev.macro_avg), ("weighted", &ev.weighted_avg)] {
            let want = &case[avg];
            close(
                got.precision,
                want["precision"].as_f64().unwrap(),
                &format!("{name} {avg} precision"),
            );
            close(
                got.recall,
                want["recall"].as_f64().unwrap(),
                &format!("{name} {avg} recall"),
            );
            close(
                got.f1,
                want["f1-score"].as_f64().unwrap(),
                &format!("{name} {avg} f1"),
            );
            assert_eq!(
                got.support as f64,
                want["support"].as_f64().unwrap(),
                "{name} {avg} support"
            );
        }
        assert_eq!(
            ev.report_text(2),
            case["report_text"].as_str().unwrap(),
            "{name}: report text"
        );
        close(
            ev.log_loss,
            case["log_loss"].as_f64().unwrap(),
            &format!("{name} log_loss"),
        );
    }
}

#[test]
fn confusion_matrices_match_sklearn() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let (y, probs, names) = case_inputs(&case);
        let ev = evaluate(&y, &probs, &names).unwrap();
        for (r, row) in case["confusion"].as_array().unwrap().iter().enumerate() {
            let want: Vec<u64> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(ev.confusion.counts[r], want, "{name}: confusion row {r}");
        }
        for (r, row) in case["confusion_normalized"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            close_all(
                &ev.confusion.normalized[r],
                &f64s(row),
                &format!("{name} normalized row {r}"),
            );
        }
    }
}

#[test]
fn top_k_accuracy_matches_sklearn_including_ties() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let (y, probs, _) = case_inputs(&case);
        for (k, want) in case["top_k"].as_object().unwrap() {
            let k: usize = k.parse().unwrap();
            close(
                top_k_accuracy(&y, &probs, k).unwrap(),
                want.as_f64().unwrap(),
                &format!("{name} top-{k}"),
            );
        }
        assert_eq!(top_k_accuracy(&y, &probs, probs.classes()).unwrap(), 1.0);
    }
}

#[test]
fn roc_curves_and_auc_match_sklearn() {
    for case in fixtures() {
        let name = case["name"].as_str().unwrap();
        let (y, probs, names) = case_inputs(&case);
        let roc = evaluate(&y, &probs, &names).unwrap().roc;
        for (k, want) in case["roc"].as_array().unwrap().iter().enumerate() {
            match (&roc.curves[k], want.is_null()) {
                (None, true) => assert!(roc.auc[k].is_none() && roc.undefined_classes.contains(&k)),
                (Some(curve), false) => {
                    check_curve(curve, want, &format!("{name} class {k}"));
                    close(
                        roc.auc[k].unwrap(),
                        case["auc"][k].as_f64().unwrap(),
                        &format!("{name} auc[{k}]"),
                    );
                }
                (got, _) => panic!("{name} class {k}: curve {got:?}, reference {want}"),
            }
        }
        close(
            roc.macro_auc.unwrap(),
            case["macro_auc"].as_f64().unwrap(),
            &format!("{name} macro auc"),
        );
        close(
            roc.micro_auc.unwrap(),
            case["micro_auc"].as_f64().unwrap(),
            &format!("{name} micro auc"),
        );
        check_curve(
            roc.micro_curve.as_ref().unwrap(),
            &case["micro_roc"],
            &format!("{name} micro"),
        );
        let mean = roc.macro_curve.as_ref().unwrap();
        close_all(
            &mean.fpr,
            &f64s(&case["macro_roc"]["fpr"]),
            &format!("{name} macro curve fpr"),
        );
        close_all(
            &mean.tpr,
            &f64s(&case["macro_roc"]["tpr"]),
            &format!("{name} macro curve tpr"),
        );
        // Where sklearn's own macro AUC is defined it is the same number.
        if let Some(sk) = case["sklearn_macro_auc"].as_f64() {
            close(roc.macro_auc.unwrap(), sk, &format!("{name} sklearn macro"));
        } else {
            assert!(
                !roc.undefined_classes.is_empty(),
                "{name}: sklearn's NaN comes from an absent class"
            );
        }
    }
}

#[test]
fn cases_cover_the_edge_cases() {
    let cases = fixtures();
    let by_name = |n: &str| {
        cases
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("case {n}"))
    };
    // A class never predicted: zero precision by zero_division=0, and its column is empty.
    let (y, probs, names) = case_inputs(by_name("never_predicted"));
    let ev = evaluate(&y, &probs, &names).unwrap();
    assert!(ev.confusion.counts.iter().all(|row| row[2] == 0));
    assert_eq!(ev.per_class[2].precision, 0.0);
    // A class absent from y_true: support 0, recall 0, AUC undefined, micro AUC still defined.
    let (y, probs, names) = case_inputs(by_name("absent_class"));
    let ev = evaluate(&y, &probs, &names).unwrap();
    assert_eq!(ev.per_class[3].support, 0);
    assert_eq!(ev.roc.undefined_classes, vec![3]);
    assert!(ev.roc.micro_auc.is_some());
}

#[test]
fn f32_probabilities_widen_exactly() {
    let values = [0.25f32, 0.75, 0.6, 0.4];
    let p = ProbMatrix::from_f32(2, 2, &values).unwrap();
    assert_eq!(p.values(), &[0.25, 0.75, 0.6f32 as f64, 0.4f32 as f64]);
}

#[test]
fn bad_inputs_are_refused() {
    assert!(ProbMatrix::new(2, 3, vec![0.0; 5]).is_err());
    assert!(ProbMatrix::new(1, 2, vec![f64::NAN, 1.0]).is_err());
    let p = ProbMatrix::new(2, 2, vec![0.5; 4]).unwrap();
    let names = vec!["a".to_string(), "b".to_string()];
    assert!(evaluate(&[0, 2], &p, &names).is_err());
    assert!(evaluate(&[0], &p, &names).is_err());
    assert!(evaluate(&[0, 1], &p, &names[..1]).is_err());
    assert!(top_k_accuracy(&[0, 1], &p, 0).is_err());
}
