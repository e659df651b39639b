//! The search stage end to end: trials trained with the train block's recipe, each cached on
//! its own, so a second run is fully cached and raising `trials` trains only the new ones;
//! trials.csv and the best model for Python; an edit to the space re-runs the search only.

use crate::pipeline_text::not_cached;
use gpl::run::RunSummary;
use std::fs;
use std::path::Path;

const BASE: &str = r#"
dataset g {
  source synthetic(galaxy10, count: 160, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, stratify, seed: 42)
}

model tiny_net(classes, f1: 4, k1: 3, units: 16, drop: 0.1) {
  input 69 x 69 x 3
  conv f1 k1 x k1 relu
  maxpool 8
  flatten
  dropout drop
  dense units relu
  dense classes softmax
}

train base {
  model tiny_net(10)
  data g.train
  validation g.val
  optimizer adam(lr: 1e-3)
  epochs 1
  batch 32
  seed 7
}

search tiny {
  model tiny_net(classes: 10)
  train base
  space {
    f1 in 2..6
    k1 in [3, 5]
    units in 8..24
    drop in 0.0..0.5
  }
  strategy bayes(trials: 3, init: 2, seed: 11)
  objective maximize val_accuracy
}
"#;

fn run(dir: &Path, text: &str) -> RunSummary {
    let summary = crate::pipeline_text::run(dir, text);
    assert!(summary.succeeded(), "{}", summary.render_table());
    summary
}

/// trials.csv rows as (trial, cached) pairs, with the header checked.
fn trials(dir: &Path) -> Vec<(Vec<String>, bool)> {
    let csv = fs::read_to_string(dir.join("runs/p/tiny/trials.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "trial,f1,k1,units,drop,val_accuracy,params,mflops,seconds,status,cached"
    );
    lines
        .map(|l| {
            let f: Vec<String> = l.split(',').map(str::to_string).collect();
            let cached = f[f.len() - 1] == "true";
            (f, cached)
        })
        .collect()
}

#[test]
fn trials_are_cached_one_by_one_and_more_trials_reuse_them() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), BASE);
    let first = trials(dir.path());
    assert_eq!(first.len(), 3);
    for (fields, cached) in &first {
        assert!(!cached);
        assert_eq!(fields[9], "\"ok\"", "{fields:?}");
        let accuracy: f64 = fields[5].parse().unwrap();
        assert!((0.0..=1.0).contains(&accuracy));
        let f1: i64 = fields[1].parse().unwrap();
        assert!((2..=6).contains(&f1));
        assert!(["3", "5"].contains(&fields[2].as_str()));
    }
    assert!(dir.path().join("runs/p/tiny/model.safetensors").is_file());
    for figure in ["best_so_far.png", "pareto.png", "partial_dependence.png"] {
        assert!(
            dir.path().join("runs/p/tiny").join(figure).is_file(),
            "{figure}"
        );
    }
    assert_eq!(not_cached(dir.path(), BASE), Vec::<String>::new());

    // Five trials: the first three are the same points, served from their entries.
    let more = BASE.replace("trials: 3, init: 2", "trials: 5, init: 2");
    assert_eq!(not_cached(dir.path(), &more), ["report", "tiny"]);
    run(dir.path(), &more);
    let second = trials(dir.path());
    assert_eq!(second.len(), 5);
    for k in 0..3 {
        assert!(second[k].1, "trial {} was trained again", k + 1);
        assert_eq!(second[k].0[..6], first[k].0[..6], "trial {} moved", k + 1);
    }
    assert!(!second[3].1 && !second[4].1);

    // An edit to the space re-runs the search, never the training it reuses.
    let narrower = BASE.replace("units in 8..24", "units in 8..16");
    assert_eq!(not_cached(dir.path(), &narrower), ["report", "tiny"]);

    // `gpl clean` drops finished trials and a dead process's leftovers, not a live one's.
    let trials_dir = dir.path().join(".gpl/trials");
    let dead = trials_dir.join(".tmp-abc-4294967295");
    let live = trials_dir.join(format!(".tmp-def-{}", std::process::id()));
    fs::create_dir_all(&dead).unwrap();
    fs::create_dir_all(&live).unwrap();
    assert_eq!(gpl::stages::search::clean_trials(dir.path()).unwrap(), 5);
    assert!(!dead.exists());
    assert!(live.exists());
    let left: Vec<_> = fs::read_dir(&trials_dir).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn the_same_seed_proposes_the_same_trials() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(a.path(), BASE);
    run(b.path(), BASE);
    let points = |dir: &Path| -> Vec<Vec<String>> {
        trials(dir)
            .into_iter()
            .map(|(f, _)| f[..6].to_vec())
            .collect()
    };
    assert_eq!(points(a.path()), points(b.path()));
}

#[test]
fn the_best_trial_is_a_model_evaluate_explain_and_ensembles_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}\nevaluate final on g.test {{\n  models base, tiny.best, mix\n  report\n}}\n\
         explain why on g.test {{\n  model tiny.best\n  gradcam samples: 3\n  seed 1\n}}\n\
         ensemble mix {{\n  members base, tiny.best\n}}\n"
    );
    run(dir.path(), &text);
    // The comparison table gives the best trial's size, as trials.csv has it.
    let best = trials(dir.path())
        .into_iter()
        .map(|(f, _)| f)
        .fold(None::<Vec<String>>, |b, f| match b {
            Some(b) if b[5].parse::<f64>().unwrap() >= f[5].parse::<f64>().unwrap() => Some(b),
            _ => Some(f),
        })
        .unwrap();
    let html = fs::read_to_string(dir.path().join("runs/p/report/report.html")).unwrap();
    let row = html
        .lines()
        .find(|l| l.starts_with("<tr><td>tiny</td>"))
        .expect("tiny's row in the comparison table");
    assert!(
        row.contains(&format!("<td>{}</td>", best[6])),
        "{row} vs {best:?}"
    );
    let maps = fs::read(dir.path().join("runs/p/why/gradcam.npy")).unwrap();
    assert!(
        maps.starts_with(b"\x93NUMPY"),
        "gradcam.npy is not a .npy file"
    );
    let report =
        fs::read_to_string(dir.path().join("runs/p/final/classification_report.txt")).unwrap();
    assert!(report.contains("tiny on g.test"), "{report}");
    assert!(report.contains("base on g.test"), "{report}");
    // The ensemble averages the best trial's own val/test predictions with base's.
    assert!(report.contains("mix on g.test"), "{report}");
    let predicted = fs::read_to_string(dir.path().join("runs/p/tiny/predictions.csv")).unwrap();
    assert_eq!(
        predicted.lines().count(),
        fs::read_to_string(dir.path().join("runs/p/base/predictions.csv"))
            .unwrap()
            .lines()
            .count()
    );
}

#[test]
fn size_bounds_keep_every_trial_small_and_log_ranges_stay_in_range() {
    let dir = tempfile::tempdir().unwrap();
    // tiny_net's parameters grow with f1 × units: 3k admits about a third of the space.
    let text = BASE
        .replace(
            "strategy bayes(trials: 3, init: 2, seed: 11)",
            "strategy bayes(trials: 6, init: 3, seed: 11)\n  subject to params <= 3k",
        )
        .replace("drop in 0.0..0.5", "drop in 0.01..0.5 log");
    run(dir.path(), &text);
    let rows = trials(dir.path());
    assert_eq!(rows.len(), 6);
    for (fields, _) in &rows {
        let params: usize = fields[6].parse().unwrap();
        assert!(params <= 3000, "a trial over the bound: {fields:?}");
        let drop: f64 = fields[4].parse().unwrap();
        assert!((0.01..=0.5).contains(&drop), "{fields:?}");
    }
    // Without the bound the same seed proposes bigger models.
    let free = BASE
        .replace(
            "strategy bayes(trials: 3, init: 2, seed: 11)",
            "strategy bayes(trials: 6, init: 3, seed: 11)",
        )
        .replace("drop in 0.0..0.5", "drop in 0.01..0.5 log");
    let other = tempfile::tempdir().unwrap();
    run(other.path(), &free);
    let biggest = trials(other.path())
        .iter()
        .map(|(f, _)| f[6].parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(biggest > 3000, "the bound was never binding: {biggest}");
}
