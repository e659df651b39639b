//! The Wilcoxon signed-rank test and fold summaries against SciPy 1.17:
//! tests/fixtures/eval/stats_fixtures.json (made by make_stats_fixtures.py), within 1e-9.

use crate::shared::f64s;
use gpl::eval::crossval::{
    summarize_crossval, CrossvalOptions, Metric, ModelFolds, PairedTest, TestResult,
};
use gpl::eval::stats::{
    paired_t_differences, summarize, wilcoxon, Alternative, MethodUsed, WilcoxonMethod,
    WilcoxonOptions,
};
use gpl::eval::ModelScores;
use serde_json::Value;

const TOL: f64 = 1e-9;

#[test]
fn wilcoxon_matches_scipy() {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/eval/stats_fixtures.json")).unwrap();
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (x, y) = (f64s(&case["x"]), f64s(&case["y"]));
        for (alt_name, alternative) in [
            ("two-sided", Alternative::TwoSided),
            ("greater", Alternative::Greater),
            ("less", Alternative::Less),
        ] {
            let variants = [
                ("exact", WilcoxonMethod::Exact, false),
                ("auto", WilcoxonMethod::Auto, false),
                ("asymptotic", WilcoxonMethod::Asymptotic, false),
                ("asymptotic_corrected", WilcoxonMethod::Asymptotic, true),
            ];
            for (key, method, correction) in variants {
                let want = &case["results"][alt_name][key];
                let got = wilcoxon(
                    &x,
                    &y,
                    WilcoxonOptions {
                        alternative,
                        method,
                        correction,
                    },
                )
                .unwrap();
                let what = format!("{name} {alt_name} {key}");
                let (ws, wp) = (
                    want["statistic"].as_f64().unwrap(),
                    want["pvalue"].as_f64().unwrap(),
                );
                assert!(
                    (got.statistic - ws).abs() <= TOL,
                    "{what}: statistic {} vs {ws}",
                    got.statistic
                );
                // SciPy prints 0.0, never -0.0.
                assert_eq!(
                    got.statistic.is_sign_negative(),
                    ws.is_sign_negative(),
                    "{what}: sign"
                );
                assert!(
                    (got.pvalue - wp).abs() <= TOL,
                    "{what}: p {} vs {wp} ({:?})",
                    got.pvalue,
                    got.method
                );
                if let Some(wz) = want["zstatistic"].as_f64() {
                    let z = got.zstatistic.expect("z with the normal approximation");
                    assert!((z - wz).abs() <= TOL, "{what}: z {z} vs {wz}");
                }
                checked += 1;
            }
        }
        let s = summarize(&x).unwrap();
        assert!(
            (s.mean - case["mean_x"].as_f64().unwrap()).abs() <= TOL,
            "{name} mean"
        );
        assert!(
            (s.std.unwrap() - case["std_x_ddof1"].as_f64().unwrap()).abs() <= TOL,
            "{name} std"
        );
    }
    assert_eq!(checked, 9 * 12);
}

#[test]
fn auto_switches_method_like_scipy() {
    let auto = WilcoxonOptions::default();
    // Untied, no zeros, n <= 50: exact.
    let r = wilcoxon(&[1.0, 2.0, 3.0, 4.0, 5.5], &[0.0; 5], auto).unwrap();
    assert_eq!(r.method, MethodUsed::Exact);
    assert_eq!(r.pvalue, 0.0625);
    // A zero difference, n <= 13: exhaustive permutation.
    let r = wilcoxon(&[1.0, 2.0, 0.0, 4.0], &[0.0; 4], auto).unwrap();
    assert_eq!((r.method, r.zeros), (MethodUsed::Permutation, 1));
    // Ties with n = 14: normal approximation.
    let x: Vec<f64> = (0..14).map(|i| (i / 2 + 1) as f64).collect();
    assert_eq!(
        wilcoxon(&x, &[0.0; 14], auto).unwrap().method,
        MethodUsed::Asymptotic
    );
}

fn scores(accuracy: f64) -> ModelScores {
    ModelScores {
        accuracy,
        precision: accuracy - 0.01,
        recall: accuracy - 0.02,
        f1: accuracy - 0.015,
        auc: Some(0.9),
    }
}

#[test]
fn five_fold_comparison_warns_in_plain_words() {
    let a = ModelFolds {
        model: "scratch".into(),
        folds: [0.81, 0.83, 0.80, 0.85, 0.82].map(scores).to_vec(),
    };
    let b = ModelFolds {
        model: "vgg_ft".into(),
        folds: [0.78, 0.79, 0.77, 0.80, 0.815].map(scores).to_vec(),
    };
    let cv = summarize_crossval(vec![a, b], &wilcoxon_all()).unwrap();
    assert_eq!(cv.folds, 5);
    let c = &cv.comparisons[0];
    let test = c.test.as_ref().unwrap();
    // scratch wins every fold: the smallest two-sided p 5 folds allow.
    assert_eq!(test.pvalue(), 0.0625);
    assert!(!c.reachability.as_ref().unwrap().reachable);
    assert!(
        c.warning
            .as_deref()
            .unwrap_or("")
            .contains("cannot give a p-value below 0.0625"),
        "{}",
        c.verdict
    );
    assert!(
        c.verdict.contains("no significant difference"),
        "{}",
        c.verdict
    );
    let acc = cv.summaries[0][0].summary.unwrap();
    assert!((acc.mean - 0.822).abs() < 1e-12);
    // Sample std (ddof = 1) of the fold accuracies, from numpy.
    assert!((acc.std.unwrap() - 0.019235384061671315).abs() < 1e-12);
}

#[test]
fn identical_models_have_nothing_to_test() {
    let a = ModelFolds {
        model: "a".into(),
        folds: [0.8, 0.9].map(scores).to_vec(),
    };
    let b = ModelFolds {
        model: "b".into(),
        folds: [0.8, 0.9].map(scores).to_vec(),
    };
    let cv = summarize_crossval(vec![a, b], &wilcoxon_all()).unwrap();
    assert!(cv.comparisons[0].test.is_none());
    assert!(cv.comparisons[0]
        .verdict
        .contains("same accuracy on all 2 folds"));
}

fn wilcoxon_all() -> CrossvalOptions {
    CrossvalOptions {
        metrics: Metric::ALL.to_vec(),
        test: Some(PairedTest::Wilcoxon),
        alpha: 0.05,
    }
}

/// `test paired_t` against `scipy.stats.ttest_rel`: tests/fixtures/eval/ttest_fixtures.json
/// (made by make_ttest_fixtures.py), within 1e-9.
#[test]
fn paired_t_matches_scipy() {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/eval/ttest_fixtures.json")).unwrap();
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (x, y) = (f64s(&case["x"]), f64s(&case["y"]));
        let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
        for (key, alternative) in [
            ("two-sided", Alternative::TwoSided),
            ("greater", Alternative::Greater),
            ("less", Alternative::Less),
        ] {
            let want = &case["results"][key];
            let got = paired_t_differences(&d, alternative).unwrap();
            let (t, p) = (
                want["statistic"].as_f64().unwrap(),
                want["pvalue"].as_f64().unwrap(),
            );
            assert!(
                (got.statistic - t).abs() <= TOL * t.abs().max(1.0),
                "{name} {key}: t {} vs {t}",
                got.statistic
            );
            assert!(
                (got.pvalue - p).abs() <= TOL,
                "{name} {key}: p {} vs {p}",
                got.pvalue
            );
            assert_eq!(got.df as u64, want["df"].as_u64().unwrap());
            checked += 1;
        }
    }
    assert!(checked >= 21, "{checked}");
}

#[test]
fn crossval_runs_the_test_it_is_asked_for_on_the_first_metric() {
    let a = ModelFolds {
        model: "scratch".into(),
        folds: [0.81, 0.79, 0.80, 0.85, 0.82].map(scores).to_vec(),
    };
    let b = ModelFolds {
        model: "vgg_ft".into(),
        folds: [0.78, 0.80, 0.77, 0.80, 0.83].map(scores).to_vec(),
    };
    let options = |test| CrossvalOptions {
        metrics: vec![Metric::Recall, Metric::Accuracy],
        test,
        alpha: 0.05,
    };
    let t = summarize_crossval(
        vec![a.clone(), b.clone()],
        &options(Some(PairedTest::PairedT)),
    )
    .unwrap();
    assert_eq!(t.metrics, [Metric::Recall, Metric::Accuracy]);
    assert_eq!(t.summaries[0].len(), 2);
    let c = &t.comparisons[0];
    assert_eq!(c.metric, Metric::Recall);
    assert!(matches!(c.test, Some(TestResult::PairedT(_))));
    assert!(c.reachability.is_none());
    assert!(c.verdict.contains("paired t"), "{}", c.verdict);
    let none = summarize_crossval(vec![a, b], &options(None)).unwrap();
    assert!(none.comparisons.is_empty());
    assert_eq!(none.summaries[1].len(), 2);
}
