//! End to end: a tiny pipeline with every runnable stage kind, from `.gpl` text to
//! report.html, then re-runs that must reuse the cache (everything, or all but the stages an
//! edit touched).

use crate::common;

use gpl::check::load_program;
use gpl::run::{run_plan, ProgressMode, RunOptions, RunSummary, StageStatus};
use gpl::stages::{compile, registry};
use std::fs;
use std::path::Path;

fn project(dir: &Path, text: &str) -> std::path::PathBuf {
    fs::create_dir_all(dir.join(".gpl")).unwrap();
    let file = dir.join("tiny.gpl");
    fs::write(&file, text).unwrap();
    file
}

fn run(file: &Path) -> RunSummary {
    let program = load_program(file, None).unwrap_or_else(|d| panic!("{d}"));
    let compiled = compile(&program).unwrap_or_else(|d| panic!("{d}"));
    let mut options = RunOptions::new(&program.project_root, &compiled.pipeline);
    options.progress = ProgressMode::Silent;
    run_plan(&compiled.plan, &registry(), &options).unwrap()
}

fn ran(summary: &RunSummary) -> Vec<String> {
    let mut ids: Vec<String> = summary
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .map(|s| s.id.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn tiny_study_runs_caches_and_reruns_only_what_an_edit_touched() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../pipelines/tiny.gpl");
    let file = project(dir.path(), text);

    let first = run(&file);
    assert!(first.succeeded(), "{}", first.render_table());
    assert_eq!(
        ran(&first).len(),
        first.stages.len(),
        "a cold run executes every stage"
    );

    let runs = dir.path().join("runs/tiny");
    let predictions = fs::read_to_string(runs.join("a/predictions.csv")).unwrap();
    let header = predictions.lines().next().unwrap();
    assert_eq!(header, "split,index,true,p0,p1,p2,p3,p4,p5,p6,p7,p8");
    assert!(predictions.lines().skip(1).any(|l| l.starts_with("val,")));
    assert!(predictions.lines().skip(1).any(|l| l.starts_with("test,")));
    let history = fs::read_to_string(runs.join("a/history.csv")).unwrap();
    assert_eq!(
        history.lines().count(),
        3,
        "header and two epochs:\n{history}"
    );
    let report = fs::read_to_string(runs.join("report/report.html")).unwrap();
    for model in ["a", "b", "ab", "searched"] {
        assert!(
            report.contains(&format!(">{model}<")),
            "report lists model {model}"
        );
    }
    assert!(report.contains("Wilcoxon"));
    let dom = common::render_dom(&runs.join("report/report.html"));
    for model in ["a", "b", "ab", "searched"] {
        assert!(
            dom.contains(&format!(">{model}<")),
            "rendered report lists model {model}"
        );
    }

    let second = run(&file);
    assert!(
        ran(&second).is_empty(),
        "nothing changed, nothing runs: {:?}",
        ran(&second)
    );

    // Only the fixed-weight ensemble, what evaluates it and the report re-run.
    fs::write(
        &file,
        text.replace("members a: 0.6, b: 0.4", "members a: 0.7, b: 0.3"),
    )
    .unwrap();
    let third = run(&file);
    assert_eq!(ran(&third), vec!["ab", "final", "report"]);
}

#[test]
fn a_comment_changes_nothing_and_patience_dirties_only_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../pipelines/tiny.gpl");
    let keys = |text: &str| {
        let file = project(dir.path(), text);
        let program = load_program(&file, None).unwrap_or_else(|d| panic!("{d}"));
        compile(&program)
            .unwrap_or_else(|d| panic!("{d}"))
            .plan
            .static_keys()
    };
    let base = keys(text);
    let commented = keys(&text.replace("train b {", "# a new comment\ntrain b {  # and another"));
    assert_eq!(base, commented);

    // `a` and everything reading it: ensembles, the evaluation, a's folds, the crossval, the report.
    let downstream_of_a = vec![
        "a",
        "ab",
        "cv",
        "cv.a.fold1",
        "cv.a.fold2",
        "final",
        "report",
        "searched",
    ];
    let changed = |edited: &std::collections::BTreeMap<_, _>| {
        let mut changed: Vec<String> = base
            .iter()
            .filter(|(id, key)| edited.get(*id) != Some(*key))
            .map(|(id, _)| id.to_string())
            .collect();
        changed.sort();
        changed
    };
    let patience = keys(&text.replace("patience: 2", "patience: 5"));
    assert_eq!(changed(&patience), downstream_of_a);
    // Label smoothing is part of what `a` (and its folds) compute.
    let smoothed = keys(&text.replace(
        "loss crossentropy(weights: part)",
        "loss crossentropy(weights: part, label_smoothing: 0.1)",
    ));
    assert_eq!(changed(&smoothed), downstream_of_a);
}

#[test]
fn every_stage_that_runs_the_engine_is_keyed_by_the_engine_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let file = project(dir.path(), include_str!("../pipelines/tiny.gpl"));
    let program = load_program(&file, None).unwrap_or_else(|d| panic!("{d}"));
    let plan = compile(&program).unwrap_or_else(|d| panic!("{d}")).plan;
    let mut engine_stages = 0;
    for spec in plan.stages() {
        let epoch = spec.config.pointer("/recipe/engine_epoch");
        match spec.kind.as_str() {
            "train" | "crossval_fold" => {
                assert_eq!(
                    epoch.and_then(|e| e.as_u64()),
                    Some(gpl::nn::ENGINE_EPOCH as u64),
                    "{}",
                    spec.id
                );
                engine_stages += 1;
            }
            _ => assert_eq!(epoch, None, "{} does not run the engine", spec.id),
        }
    }
    assert!(engine_stages >= 4, "{engine_stages}");
}
