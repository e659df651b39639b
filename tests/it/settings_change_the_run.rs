//! Every setting the checker accepts changes the run: a pipeline is run once, then each
//! setting is edited and the stage it belongs to must no longer be cached (the other stages
//! stay cached, so the check can fail). Settings that cannot run yet are refused at compile
//! time with a diagnostic, never dropped.

use crate::pipeline_text::{not_cached, run, write};
use gpl::check::load_program;
use gpl::plan::StageId;
use gpl::stages::compile;
use std::fs;

const BASE: &str = r#"
dataset g {
  source synthetic(galaxy10, count: 240, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, stratify, seed: 42)
}

dataset h {
  source synthetic(galaxy10, count: 120, seed: 2)
  split holdout(train: 0.5, val: 0.25, test: 0.25, stratify, seed: 3)
}

balance part from g.train {
  downsample class 1, 2 to 20
  weights balanced
  seed 3
}

model small(classes) {
  input 69 x 69 x 3
  conv 2 3x3 relu
  maxpool 8
  flatten
  dense classes softmax
}

train a {
  model small(10)
  data part
  loss crossentropy(weights: part)
  optimizer adam(lr: 1e-3)
  epochs 1
  batch 32
  seed 7
}

train b {
  model small(10)
  data g.train
  optimizer sgd(lr: 1e-2)
  epochs 1
  batch 32
  seed 8
}

evaluate final on g.test {
  models a, b
  report
  confusion
}

crossval cv on g {
  folds 2
  stratify
  seed 7
  compare a, b
  test wilcoxon
  metrics accuracy, recall
}
"#;

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the base pipeline has no `{from}`");
    text.replacen(from, to, 1)
}

#[test]
fn each_edited_setting_dirties_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), BASE);
    assert!(first.succeeded(), "{}", first.render_table());
    assert_eq!(not_cached(dir.path(), BASE), Vec::<String>::new());

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "train data part",
            edit(BASE, "data g.train\n", "data g.val\n"),
            "b",
        ),
        (
            "train data test part",
            edit(BASE, "data g.train\n", "data g.test\n"),
            "b",
        ),
        (
            "train label smoothing",
            edit(
                BASE,
                "data g.train\n",
                "data g.train\n  loss crossentropy(label_smoothing: 0.1)\n",
            ),
            "b",
        ),
        (
            "train validation",
            edit(BASE, "data g.train\n", "data g.train\n  validation g.test\n"),
            "b",
        ),
        (
            "split stratify",
            edit(
                BASE,
                "split holdout(train: 0.6, val: 0.2, test: 0.2, stratify, seed: 42)",
                "split holdout(train: 0.6, val: 0.2, test: 0.2, seed: 42)",
            ),
            "g.split",
        ),
        ("balance from", edit(BASE, "from g.train", "from g.val"), "part"),
        (
            "dataset class names",
            edit(
                BASE,
                "source synthetic(galaxy10, count: 240, seed: 1)",
                "source synthetic(galaxy10, count: 240, seed: 1)\n  classes [\"c0\", \"c1\", \"c2\", \"c3\", \"c4\", \"c5\", \"c6\", \"c7\", \"c8\", \"c9\"]",
            ),
            "g",
        ),
        (
            "evaluate report",
            edit(BASE, "  report\n  confusion\n", "  confusion\n"),
            "final",
        ),
        (
            "evaluate predictions",
            edit(BASE, "  report\n  confusion\n", "  report\n  confusion\n  predictions\n"),
            "final",
        ),
        (
            "evaluate on another dataset",
            edit(BASE, "evaluate final on g.test", "evaluate final on h.test"),
            "final",
        ),
        (
            "crossval stratify",
            edit(BASE, "  folds 2\n  stratify\n", "  folds 2\n"),
            "cv.a.fold1",
        ),
        (
            "crossval test",
            edit(BASE, "test wilcoxon", "test paired_t"),
            "cv",
        ),
        (
            "crossval test none",
            edit(BASE, "test wilcoxon", "test none"),
            "cv",
        ),
        (
            "crossval metrics",
            edit(BASE, "metrics accuracy, recall", "metrics f1"),
            "cv",
        ),
        (
            "crossval data",
            edit(BASE, "crossval cv on g {", "crossval cv on g.train {"),
            "cv.b.fold2",
        ),
    ];
    for (what, text, stage) in &cases {
        let dirty = not_cached(dir.path(), text);
        assert!(
            dirty.iter().any(|d| d == stage),
            "{what}: `{stage}` is still cached (not cached: {dirty:?})"
        );
        assert!(
            dirty.len() < first.stages.len(),
            "{what}: everything is dirty, so the check proves nothing: {dirty:?}"
        );
    }
}

#[test]
fn evaluate_on_another_dataset_runs_the_model_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(
        &edit(BASE, "evaluate final on g.test", "evaluate final on h.test"),
        "  report\n  confusion\n",
        "  report\n  predictions\n",
    );
    let summary = run(dir.path(), &text);
    assert!(summary.succeeded(), "{}", summary.render_table());
    let runs = dir.path().join("runs/p");
    // h has 120 images and a 25% test part: 30 rows per model, indices into h.
    let h_split = fs::read_to_string(runs.join("h.split/split.csv")).unwrap();
    let test_count: usize = h_split
        .lines()
        .find(|l| l.starts_with("test,"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    for model in ["a", "b"] {
        let csv = fs::read_to_string(runs.join(format!("final/predictions_{model}.csv"))).unwrap();
        assert_eq!(csv.lines().count() - 1, test_count, "{model}:\n{csv}");
    }
    // The model files are published where Python can open them.
    assert!(runs.join("a/model.safetensors").is_file());
    let report = fs::read_to_string(runs.join("final/classification_report.txt")).unwrap();
    assert!(report.contains("a on h.test"), "{report}");
}

#[test]
fn what_cannot_run_yet_is_refused_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |text: &str| -> String {
        let file = write(dir.path(), text);
        let program = load_program(&file, None).unwrap_or_else(|d| panic!("{d}"));
        match compile(&program) {
            Ok(_) => panic!("compiled, but should have been refused:\n{text}"),
            Err(d) => d.to_string(),
        }
    };
    // Fields run now (detect and chain read them); a classifier cannot train on them, and the
    // checker says so.
    let file = write(
        dir.path(),
        &edit(
            BASE,
            "source synthetic(galaxy10, count: 240, seed: 1)",
            "source synthetic(fields, count: 240, seed: 1)",
        ),
    );
    let fields = match load_program(&file, None) {
        Ok(_) => panic!("training on detection fields checked"),
        Err(d) => d.to_string(),
    };
    assert!(fields.contains("detection images with boxes"), "{fields}");
    let cv_balance = refused(&edit(BASE, "crossval cv on g {", "crossval cv on part {"));
    assert!(cv_balance.contains("balance output"), "{cv_balance}");
    let ensemble = refused(
        &edit(
            &edit(BASE, "evaluate final on g.test", "evaluate final on h.test"),
            "models a, b\n  report",
            "models ab\n  report",
        )
        .replace(
            "evaluate final",
            "ensemble ab {\n  members a: 0.5, b: 0.5\n}\n\nevaluate final",
        ),
    );
    assert!(ensemble.contains("ensemble `ab`"), "{ensemble}");
    let presets = refused(&format!(
        "import \"stdlib/augment.gpl\"\n{}",
        edit(
            BASE,
            "downsample class 1, 2 to 20",
            "oversample class 3 to 30 using keras_default\n  oversample class 4 to 30"
        )
    ));
    assert!(
        presets.contains("different augmentation presets"),
        "{presets}"
    );
    // The base pipeline itself compiles: the refusals come from the edits.
    let file = write(dir.path(), BASE);
    assert!(compile(&load_program(&file, None).unwrap()).is_ok());
}

#[test]
fn the_stage_graph_has_one_definition() {
    // The plan's inputs are what the executors read: a train on a split part reads the
    // dataset and its split, never a balance it does not name.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), BASE);
    let plan = compile(&load_program(&file, None).unwrap()).unwrap().plan;
    let inputs = |id: &str| -> Vec<String> {
        plan.get(&StageId::from(id))
            .unwrap()
            .inputs
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(inputs("b"), ["g", "g.split"]);
    assert_eq!(inputs("a"), ["g", "part", "g.split"]);
    assert_eq!(inputs("final"), ["g", "g.split", "a", "b"]);
}
