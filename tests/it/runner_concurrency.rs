//! Runs that share one project's cache at the same time (issue 18): four `gpl run` of one
//! pipeline compute each stage once and publish what a single run publishes; a run waits for
//! the process computing a stage and counts it cached; `gpl clean` and `--gc` keep what a
//! running process holds; a killed process's lock files block nothing. What ran is read
//! from `.gpl/events.jsonl`.

use crate::runner_pipeline::{events_of, options, registry, stages_with, wait_for};
use gpl::plan::{Plan, StageSpec};
use gpl::run::cli_support::clean_command;
use gpl::run::{read_events, run_plan, EventKind};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for `child` (at most `limit`, then kills it and fails) and returns whether it
/// succeeded; its output went to files, so a full pipe cannot stall it.
pub(crate) fn finish(mut child: Child, limit: Duration, what: &str) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `gpl run tiny.gpl` in `dir`, its stdout and stderr in `dir/<name>.out` and `.err`.
fn spawn_gpl_run(dir: &Path, name: &str) -> Child {
    let file = |ext: &str| fs::File::create(dir.join(format!("{name}.{ext}"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["run", "tiny.gpl"])
        .current_dir(dir)
        .stdout(Stdio::from(file("out")))
        .stderr(Stdio::from(file("err")))
        .spawn()
        .unwrap()
}

/// A project folder holding the tiny study (every runnable stage kind).
pub(crate) fn tiny_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // `.gpl` marks the project root, so no folder above the temp dir is taken for it.
    fs::create_dir_all(dir.path().join(".gpl")).unwrap();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipelines/tiny.gpl");
    fs::copy(tiny, dir.path().join("tiny.gpl")).unwrap();
    dir
}

/// Every file under `runs/`, by relative path, without the wall-clock times that are the only
/// bytes two runs of one pipeline may differ in: the `seconds` column of training histories
/// and the `training seconds` lines of the metrics and the report. A `.gpl-entry` record
/// keeps its file list; the entry it names is keyed by those times upstream.
/// The line with each `<td class="timing">` cell (images/s in the comparison table) emptied.
fn without_timings(line: &str) -> String {
    const CELL: &str = "<td class=\"timing\">";
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(CELL) {
        out.push_str(&rest[..at + CELL.len()]);
        rest = &rest[at + CELL.len()..];
        rest = &rest[rest.find("</td>").unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn published(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.join("runs")];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = fs::read(&path).unwrap();
            let text = match path.file_name().and_then(|n| n.to_str()) {
                Some("history.csv") => {
                    let text = String::from_utf8(bytes).unwrap();
                    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
                    let seconds = header.iter().position(|c| *c == "seconds").unwrap();
                    text.lines()
                        .map(|line| {
                            let mut cells: Vec<&str> = line.split(',').collect();
                            cells.remove(seconds);
                            cells.join(",")
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                Some("metrics.yaml" | "report.html") => String::from_utf8(bytes)
                    .unwrap()
                    .lines()
                    .filter(|line| !line.contains("training seconds"))
                    .map(without_timings)
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(".gpl-entry") => {
                    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    record["files"].to_string()
                }
                // Models, predictions, plots: compared byte for byte.
                _ => blake3::hash(&bytes).to_hex().to_string(),
            };
            files.insert(name, text);
        }
    }
    files
}

#[test]
fn four_concurrent_gpl_runs_compute_each_stage_once_and_publish_what_one_run_does() {
    let single = tiny_project();
    assert!(
        finish(
            spawn_gpl_run(single.path(), "single"),
            Duration::from_secs(300),
            "the single run"
        ),
        "{}",
        fs::read_to_string(single.path().join("single.err")).unwrap()
    );
    let stages: HashSet<String> = read_events(single.path())
        .unwrap()
        .into_iter()
        .filter(|e| e.event == EventKind::StageStarted)
        .filter_map(|e| e.stage.map(|s| s.to_string()))
        .collect();
    assert_eq!(stages.len(), 14, "{stages:?}");

    let shared = tiny_project();
    let started = Instant::now();
    let runs: Vec<Child> = (0..4)
        .map(|i| spawn_gpl_run(shared.path(), &format!("run{i}")))
        .collect();
    for (i, child) in runs.into_iter().enumerate() {
        let ok = finish(child, Duration::from_secs(300), "a concurrent run");
        let err = fs::read_to_string(shared.path().join(format!("run{i}.err"))).unwrap();
        assert!(ok, "run {i} failed:\n{err}");
    }
    let wall = started.elapsed();

    let events = read_events(shared.path()).unwrap();
    let count = |kind: EventKind, stage: &str| {
        events
            .iter()
            .filter(|e| e.event == kind && e.stage.as_ref().is_some_and(|s| s.as_str() == stage))
            .count()
    };
    for stage in &stages {
        assert_eq!(
            count(EventKind::StageStarted, stage),
            1,
            "{stage} computed once"
        );
        assert_eq!(
            count(EventKind::StageFinished, stage),
            1,
            "{stage} committed once"
        );
        // The other three runs found it in the cache, at once or after waiting.
        assert_eq!(count(EventKind::StageCached, stage), 3, "{stage}");
    }
    assert!(!events.iter().any(|e| e.event == EventKind::StageFailed));
    let finished = events.iter().filter(|e| e.event == EventKind::RunFinished);
    assert_eq!(finished.count(), 4);
    // Each run's table: all 14 stages done, together 14 computed.
    let mut ran = 0;
    for i in 0..4 {
        let out = fs::read_to_string(shared.path().join(format!("run{i}.out"))).unwrap();
        let line = out.lines().find(|l| l.starts_with("14 stages: ")).unwrap();
        assert!(line.contains("cached, 0 failed"), "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        ran += words[2].parse::<usize>().unwrap();
    }
    assert_eq!(ran, 14);

    assert_eq!(published(shared.path()), published(single.path()));
    eprintln!("four concurrent runs of the tiny study: {wall:.1?}");
}

// ---- a child process of toy stages: first → long (slow) → after ----

const CHILD_ENV: &str = "GPL_CONCURRENCY_TEST_CHILD";

/// `long` writes `<root>/long.started` after its first chunk, then takes two more seconds.
fn held_plan() -> Plan {
    Plan::new(vec![
        StageSpec::new("first", "derive", json!({"n": 1})),
        StageSpec::new("long", "slow", json!({"chunks": 200, "pause_ms": 10}))
            .with_inputs(&["first"]),
        StageSpec::new("after", "derive", json!({})).with_inputs(&["long"]),
    ])
    .unwrap()
}

/// Not a test of its own: the body of the child processes below (it returns at once unless
/// `GPL_CONCURRENCY_TEST_CHILD` names a project root).
#[test]
fn child_process_entry() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let code =
        gpl::run::cli_support::run_command(&held_plan(), &registry(), &options(Path::new(&root)))
            .expect("the plan can start");
    std::process::exit(i32::from(code));
}

/// Starts the child and returns once it computes `long` (holding `long`'s entry exclusively
/// and `first`'s shared).
fn spawn_child_in_long(root: &Path) -> Child {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "runner_concurrency::child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&root.join("long.started"));
    child
}

#[test]
fn a_run_waits_for_the_process_computing_a_stage_and_counts_it_cached() {
    let root = tempfile::tempdir().unwrap();
    let child = spawn_child_in_long(root.path());
    let summary = run_plan(&held_plan(), &registry(), &options(root.path())).unwrap();
    assert!(finish(child, Duration::from_secs(60), "the child run"));

    assert!(summary.succeeded(), "{}", summary.render_table());
    assert_eq!(summary.with_status("cached")[..2], ["first", "long"]);
    let ours = events_of(root.path(), &summary.run_id);
    assert!(
        stages_with(&ours, EventKind::StageWaiting).contains(&"long".to_string()),
        "{ours:?}"
    );
    assert!(!stages_with(&ours, EventKind::StageStarted).contains(&"long".to_string()));
    let all = read_events(root.path()).unwrap();
    let mut started = stages_with(&all, EventKind::StageStarted);
    started.sort();
    assert_eq!(started, ["after", "first", "long"], "each computed once");
}

#[test]
fn clean_and_gc_keep_what_a_running_process_holds() {
    let root = tempfile::tempdir().unwrap();
    let child = spawn_child_in_long(root.path());
    // The child reads `first`'s entry and writes `long`'s temp and scratch folders.
    let no_plan_keeps_anything = HashSet::new();
    let (report, line) = clean_command(root.path(), Some(&no_plan_keeps_anything)).unwrap();
    assert_eq!((report.entries_removed, report.in_use), (0, 3), "{line}");
    assert!(
        line.contains("kept 3 in use by another gpl process"),
        "{line}"
    );
    let (report, line) = clean_command(root.path(), None).unwrap();
    assert_eq!((report.entries_removed, report.in_use), (0, 3), "{line}");
    assert!(
        finish(child, Duration::from_secs(60), "the child run"),
        "it lost nothing it needed"
    );

    let (report, line) = clean_command(root.path(), None).unwrap();
    assert_eq!((report.entries_removed, report.in_use), (3, 0), "{line}");
}

#[test]
fn a_killed_process_leaves_lock_files_that_block_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut child = spawn_child_in_long(root.path());
    child.kill().unwrap(); // SIGKILL: the kernel drops its locks, the files stay
    child.wait().unwrap();
    let locks = fs::read_dir(root.path().join(".gpl/locks"))
        .unwrap()
        .count();
    assert!(
        locks >= 2,
        "the lock files of first and long are left: {locks}"
    );

    let started = Instant::now();
    let summary = run_plan(&held_plan(), &registry(), &options(root.path())).unwrap();
    assert_eq!(summary.with_status("ran"), ["long", "after"]);
    assert_eq!(summary.with_status("cached"), ["first"]);
    let ours = events_of(root.path(), &summary.run_id);
    assert!(
        stages_with(&ours, EventKind::StageWaiting).is_empty(),
        "{ours:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
