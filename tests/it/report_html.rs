//! End-to-end report: tiny synthetic predictions → evaluations, a cross-validation summary and a
//! searched ensemble → report.html + metrics.yaml + figures. The page must list every
//! evaluated model, embed only valid PNGs, reference nothing external, and render in headless
//! Chromium (Debian's `chromium`, installed by scripts/install-test-browser.sh when missing)
//! without console errors. Set GPL_KEEP_REPORT=<dir> to keep the output for a look.

use crate::common;

use std::path::PathBuf;

use base64::Engine as _;
use gpl::eval::crossval::{summarize_crossval, CrossvalOptions, Metric, ModelFolds, PairedTest};
use gpl::eval::ensemble::{search_weights, soft_vote, SearchOptions};
use gpl::eval::{evaluate, ProbMatrix};
use gpl::report::model::{
    EnsembleReport, EpochRow, KeyFigure, ModelEvaluation, ReportModel, StageReport,
};
use gpl::report::{write_report, DagNode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: [&str; 4] = [
    "Disk, Face-on, Tight Spiral",
    "Smooth, Round",
    "Edge-on & <boxy> bulge",
    "Merger",
];

fn predictions(y: &[u32], skill: f64, seed: u64) -> ProbMatrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = CLASSES.len();
    let mut values = Vec::new();
    for &label in y {
        let mut row: Vec<f64> = (0..c).map(|_| rng.gen_range(0.05..1.0)).collect();
        let target = if rng.gen_bool(skill) {
            label as usize
        } else {
            rng.gen_range(0..c)
        };
        row[target] += 1.5;
        let total: f64 = row.iter().sum();
        values.extend(row.iter().map(|v| v / total));
    }
    ProbMatrix::new(y.len(), c, values).unwrap()
}

fn history(epochs: usize, seed: u64) -> Vec<EpochRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (1..=epochs)
        .map(|e| {
            let t = e as f64;
            EpochRow {
                epoch: e,
                loss: 1.4 / t.sqrt() + rng.gen_range(0.0..0.05),
                accuracy: Some(0.4 + 0.5 * (1.0 - (-t / 4.0).exp())),
                val_loss: Some(1.5 / t.sqrt() + 0.1 + rng.gen_range(0.0..0.08)),
                val_accuracy: Some(0.38 + 0.45 * (1.0 - (-t / 4.0).exp())),
                lr: Some(if e <= 6 { 1e-3 } else { 5e-4 }),
            }
        })
        .collect()
}

fn names() -> Vec<String> {
    CLASSES.iter().map(|s| s.to_string()).collect()
}

fn synthetic_report() -> ReportModel {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let y_val: Vec<u32> = (0..60).map(|_| rng.gen_range(0..4)).collect();
    let y_test: Vec<u32> = (0..80).map(|_| rng.gen_range(0..4)).collect();
    let scratch_val = predictions(&y_val, 0.7, 11);
    let vgg_val = predictions(&y_val, 0.6, 12);
    let scratch_test = predictions(&y_test, 0.7, 21);
    let vgg_test = predictions(&y_test, 0.6, 22);

    let search =
        search_weights(&[&scratch_val, &vgg_val], &y_val, &SearchOptions::default()).unwrap();
    let combo_test = soft_vote(&[&scratch_test, &vgg_test], &search.weights).unwrap();
    let eval = |model: &str, p: &ProbMatrix| ModelEvaluation {
        model: model.to_string(),
        dataset: "galaxy10.test".to_string(),
        evaluation: evaluate(&y_test, p, &names()).unwrap(),
        size: None,
    };

    let folds = |skill: f64, seed: u64| {
        (0..5)
            .map(|f| {
                let y: Vec<u32> = (0..40).map(|i| ((i + f) % 4) as u32).collect();
                evaluate(&y, &predictions(&y, skill, seed + f as u64), &names())
                    .unwrap()
                    .summary()
            })
            .collect::<Vec<_>>()
    };
    let cv = summarize_crossval(
        vec![
            ModelFolds {
                model: "scratch".into(),
                folds: folds(0.75, 100),
            },
            ModelFolds {
                model: "vgg_ft".into(),
                folds: folds(0.55, 200),
            },
        ],
        &CrossvalOptions {
            metrics: Metric::ALL.to_vec(),
            test: Some(PairedTest::Wilcoxon),
            alpha: 0.05,
        },
    )
    .unwrap();

    let mut dataset = StageReport::new("galaxy10", "dataset");
    dataset.key_figures = vec![
        KeyFigure::number("images", 140.0),
        KeyFigure::text("source", "synthetic(galaxy10, seed: 1)"),
    ];
    let mut scratch = StageReport::new("scratch", "train");
    scratch.history = history(12, 1);
    scratch.key_figures = vec![
        KeyFigure::number("parameters", 1_234_567.0),
        KeyFigure::number("best val_accuracy", 0.81),
    ];
    let mut vgg = StageReport::new("vgg_ft", "train");
    vgg.history = history(8, 2);
    let mut combo = StageReport::new("combo", "ensemble");
    combo.ensemble = Some(EnsembleReport {
        members: vec!["scratch".into(), "vgg_ft".into()],
        weights: search.weights.clone(),
        search: Some(search),
    });
    let mut evaluate_stage = StageReport::new("evaluate_test", "evaluate");
    evaluate_stage.evaluations = vec![
        eval("scratch", &scratch_test),
        eval("vgg_ft", &vgg_test),
        eval("combo", &combo_test),
    ];
    let mut cv_stage = StageReport::new("cv", "crossval");
    cv_stage.crossval = Some(cv);

    let node = |name: &str, kind: &str, inputs: &[&str]| DagNode {
        name: name.into(),
        kind: kind.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        cached: name == "galaxy10",
    };
    ReportModel {
        pipeline: "quick <galaxy10>".into(),
        dag: vec![
            node("galaxy10", "dataset", &[]),
            node("scratch", "train", &["galaxy10"]),
            node("vgg_ft", "train", &["galaxy10"]),
            node("combo", "ensemble", &["scratch", "vgg_ft"]),
            node("evaluate_test", "evaluate", &["scratch", "vgg_ft", "combo"]),
            node("cv", "crossval", &["galaxy10"]),
        ],
        stages: vec![dataset, scratch, vgg, combo, evaluate_stage, cv_stage],
    }
}

fn output_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("GPL_KEEP_REPORT") {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    }
}

fn embedded_pngs(html: &str) -> Vec<Vec<u8>> {
    html.split("data:image/png;base64,")
        .skip(1)
        .map(|rest| {
            let end = rest.find('"').expect("closing quote after the data URI");
            base64::engine::general_purpose::STANDARD
                .decode(&rest[..end])
                .expect("valid base64")
        })
        .collect()
}

#[test]
fn report_lists_every_model_and_is_self_contained() {
    let (_keep, dir) = output_dir();
    let model = synthetic_report();
    let files = write_report(&dir, &model).unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();

    for row in model.comparison_rows() {
        assert!(
            html.contains(&format!(
                "<tr><td>{}</td><td class=\"text\">galaxy10.test</td>",
                row.model
            )),
            "row for {}",
            row.model
        );
    }
    assert_eq!(model.comparison_rows().len(), 3);
    // Names are escaped, never interpreted as markup.
    assert!(html.contains("quick &lt;galaxy10&gt;") && !html.contains("<boxy>"));
    // Self-contained: no scripts, stylesheets, or remote URLs (the SVG namespace is not fetched).
    for forbidden in [
        "<script",
        "<link",
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
    ] {
        assert!(
            !html.contains(forbidden),
            "report.html contains {forbidden}"
        );
    }
    let pngs = embedded_pngs(&html);
    // comparison + 2 training curves + 3 × (confusion, ROC)
    assert_eq!(pngs.len(), 9);
    assert_eq!(files.figures.len(), 9);
    for png in &pngs {
        let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .expect("embedded PNG decodes");
        assert!(img.width() > 300 && img.height() > 200);
    }
    assert!(
        html.contains("cannot give a p-value below 0.0625"),
        "five-fold warning"
    );
    assert!(html.contains("Ensemble weights"));

    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&files.metrics_yaml).unwrap()).unwrap();
    let stages = &yaml["stages"];
    let acc = stages["evaluate_test"]["evaluations"]["combo on galaxy10.test"]["accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(acc, model.stages[4].evaluations[2].evaluation.accuracy);
    assert_eq!(
        stages["scratch"]["history"].as_sequence().unwrap().len(),
        12
    );
    assert!(stages["cv"]["crossval"]["comparisons"][0]["test"]["pvalue"]
        .as_f64()
        .is_some());
    assert!(stages["combo"]["ensemble"]["weights"]
        .as_sequence()
        .is_some());
}

#[test]
fn report_model_round_trips_exactly() {
    // The report stage reads the model back from stage artifacts: +inf ROC thresholds and
    // undefined AUCs must survive formats without infinity or NaN (written as null). YAML is
    // used here because serde_yaml parses floats exactly; serde_json without its
    // `float_roundtrip` feature can be one ulp off (seen: 1.6064306967143829 → …827).
    let model = synthetic_report();
    let yaml = serde_yaml::to_string(&model).unwrap();
    let back: ReportModel = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, model);
    let json = serde_json::to_string(&model).unwrap();
    let back: ReportModel = serde_json::from_str(&json).unwrap();
    assert_eq!(back.comparison_rows().len(), model.comparison_rows().len());
    let threshold = &back.stages[4].evaluations[0].evaluation.roc.curves[0]
        .as_ref()
        .unwrap()
        .thresholds;
    assert_eq!(threshold[0], f64::INFINITY);
}

#[test]
fn report_renders_in_headless_chromium_without_console_errors() {
    let (_keep, dir) = output_dir();
    let model = synthetic_report();
    let files = write_report(&dir, &model).unwrap();
    let dom = common::render_dom(&files.html);
    assert!(
        dom.contains("<h1>quick &lt;galaxy10&gt;</h1>"),
        "the DOM holds the rendered page"
    );
    for row in model.comparison_rows() {
        assert!(
            dom.contains(&format!("<td>{}</td>", row.model)),
            "{} in the rendered DOM",
            row.model
        );
    }
    assert_eq!(
        dom.matches("<img ").count(),
        9,
        "every figure reaches the DOM"
    );
    assert!(dom.contains("<svg"), "the stage graph is drawn");
}
