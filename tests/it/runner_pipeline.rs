//! The runner, end to end, with toy stage kinds: fingerprints, early cutoff, cache repair
//! after a killed process or a corrupted byte, parallelism, cancellation, Ctrl-C, watch.
//! Every assertion about what ran reads the run summary or `.gpl/events.jsonl`.

use gpl::plan::{Plan, StageSpec};
use gpl::run::cache::{CacheStore, Lookup, Verify};
use gpl::run::{
    read_events, run_plan, Event, EventKind, ProgressMode, Registry, RunOptions, RunSummary,
    StageContext, StageError, StageExecutor,
};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes `result.txt` = its id, its config and its inputs' results; a copy goes to public/.
/// With `"only": KEY` in the config, only that key's value counts (for early cutoff).
struct Derive;

impl StageExecutor for Derive {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config = ctx.config();
        let own = match config.get("only") {
            Some(key) => config[key.as_str().unwrap_or_default()].to_string(),
            None => gpl::plan::canonical_json(config),
        };
        let mut text = format!("{}={own}", ctx.id());
        for dir in ctx.input_dirs() {
            let input = fs::read_to_string(dir.join("result.txt")).map_err(StageError::io(dir))?;
            text.push_str(&format!("[{input}]"));
        }
        for file in &ctx.spec().files {
            let path = ctx.resolve(file);
            text.push_str(&fs::read_to_string(&path).map_err(StageError::io(&path))?);
        }
        fs::write(ctx.out_dir().join("result.txt"), &text)
            .map_err(StageError::io(ctx.out_dir()))?;
        fs::write(ctx.public_dir().join("summary.txt"), &text)
            .map_err(StageError::io(ctx.public_dir()))?;
        Ok(())
    }
}

/// Writes `chunks` chunks of 64 KiB, `pause_ms` apart, checking cancellation between them;
/// creates `<root>/<id>.started` after the first chunk.
struct Slow;

impl StageExecutor for Slow {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let chunks = ctx.config()["chunks"].as_u64().unwrap_or(4);
        let pause = Duration::from_millis(ctx.config()["pause_ms"].as_u64().unwrap_or(10));
        let path = ctx.out_dir().join("big.bin");
        let mut file = fs::File::create(&path).map_err(StageError::io(&path))?;
        for i in 0..chunks {
            ctx.check_cancelled()?;
            file.write_all(&vec![(i % 251) as u8; 1 << 16])
                .map_err(StageError::io(&path))?;
            file.flush().map_err(StageError::io(&path))?;
            if i == 0 {
                // What a trainer keeps in scratch to resume from.
                let checkpoint = ctx.scratch_dir().join("checkpoint");
                fs::write(&checkpoint, b"chunk 0").map_err(StageError::io(&checkpoint))?;
                fs::write(ctx.root().join(format!("{}.started", ctx.id())), b"")
                    .map_err(StageError::io(ctx.root()))?;
            }
            std::thread::sleep(pause);
        }
        let result = ctx.out_dir().join("result.txt");
        fs::write(&result, format!("{} wrote {chunks} chunks", ctx.id()))
            .map_err(StageError::io(&result))
    }
}

struct Fail;

impl StageExecutor for Fail {
    fn execute(&self, _ctx: &StageContext) -> Result<(), StageError> {
        Err(StageError::failed("this toy stage always fails"))
    }
}

/// Records how many of its kind run at once; waits (up to `wait_ms`) for a partner.
struct Meet {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl StageExecutor for Meet {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let here = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(here, Ordering::SeqCst);
        let deadline = Instant::now()
            + Duration::from_millis(ctx.config()["wait_ms"].as_u64().unwrap_or(3000));
        while self.most.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        fs::write(ctx.out_dir().join("result.txt"), ctx.id().as_str())
            .map_err(StageError::io(ctx.out_dir()))
    }
}

pub(crate) fn registry() -> Registry {
    Registry::new()
        .with("derive", Derive)
        .with("slow", Slow)
        .with("fail", Fail)
}

pub(crate) fn options(root: &Path) -> RunOptions {
    let mut options = RunOptions::new(root, "toy");
    options.progress = ProgressMode::Silent;
    options.jobs = 2;
    options
}

fn run(root: &Path, specs: Vec<StageSpec>) -> RunSummary {
    let plan = Plan::new(specs).expect("the toy plans are acyclic");
    run_plan(&plan, &registry(), &options(root)).expect("the toy plans can start")
}

/// data → (left, right) → join; `right_value` and `left_extra` vary per test.
fn diamond(left: serde_json::Value, right: serde_json::Value) -> Vec<StageSpec> {
    vec![
        StageSpec::new("data", "derive", json!({"size": 10, "name": "galaxies"})),
        StageSpec::new("left", "derive", left).with_inputs(&["data"]),
        StageSpec::new("right", "derive", right).with_inputs(&["data"]),
        StageSpec::new("join", "derive", json!({"how": "concat"})).with_inputs(&["left", "right"]),
    ]
}

fn sorted(mut ids: Vec<&str>) -> Vec<&str> {
    ids.sort();
    ids
}

pub(crate) fn events_of(root: &Path, run_id: &str) -> Vec<Event> {
    read_events(root)
        .unwrap()
        .into_iter()
        .filter(|e| e.run == run_id)
        .collect()
}

pub(crate) fn stages_with(events: &[Event], kind: EventKind) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| e.event == kind)
        .filter_map(|e| e.stage.as_ref())
        .map(|s| s.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn key_order_changes_nothing_and_a_config_change_dirties_only_downstream() {
    let root = tempfile::tempdir().unwrap();
    let first = run(
        root.path(),
        diamond(json!({"lr": 0.1, "epochs": 3}), json!({"patience": 5})),
    );
    assert_eq!(first.with_status("ran").len(), 4);
    assert!(first.succeeded());

    let reordered = run(
        root.path(),
        diamond(json!({"epochs": 3, "lr": 0.1}), json!({"patience": 5})),
    );
    assert_eq!(reordered.with_status("cached").len(), 4);
    for stage in &first.stages {
        assert_eq!(
            reordered.stage(stage.id.as_str()).unwrap().fingerprint,
            stage.fingerprint
        );
    }

    let patience = run(
        root.path(),
        diamond(json!({"epochs": 3, "lr": 0.1}), json!({"patience": 6})),
    );
    assert_eq!(sorted(patience.with_status("ran")), ["join", "right"]);
    assert_eq!(sorted(patience.with_status("cached")), ["data", "left"]);
    let events = events_of(root.path(), &patience.run_id);
    assert_eq!(
        stages_with(&events, EventKind::StageStarted),
        ["join", "right"]
    );
    assert_eq!(
        fs::read_to_string(root.path().join("runs/toy/join/summary.txt"))
            .unwrap()
            .matches("patience\":6")
            .count(),
        1
    );
}

#[test]
fn identical_upstream_outputs_leave_downstream_cached() {
    let root = tempfile::tempdir().unwrap();
    let upstream = |note: &str| {
        vec![
            StageSpec::new(
                "up",
                "derive",
                json!({"only": "value", "value": 7, "note": note}),
            ),
            StageSpec::new("down", "derive", json!({})).with_inputs(&["up"]),
        ]
    };
    let first = run(root.path(), upstream("first"));
    let second = run(root.path(), upstream("second"));
    assert_eq!(
        second.with_status("ran"),
        ["up"],
        "the note changes up's fingerprint"
    );
    assert_eq!(second.with_status("cached"), ["down"], "but not its bytes");
    assert_ne!(
        first.stage("up").unwrap().fingerprint,
        second.stage("up").unwrap().fingerprint
    );
    assert_eq!(
        first.stage("up").unwrap().output_digest,
        second.stage("up").unwrap().output_digest
    );
}

#[test]
fn a_corrupted_byte_is_detected_and_recomputed_with_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let specs = || diamond(json!({"a": 1}), json!({"b": 2}));
    let first = run(root.path(), specs());
    let store = CacheStore::open(root.path()).unwrap();
    let fp = first.stage("left").unwrap().fingerprint.clone().unwrap();
    let result = store.out_dir(&fp).join("result.txt");
    let mut bytes = fs::read(&result).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&result, &bytes).unwrap();

    let second = run(root.path(), specs());
    assert_eq!(second.with_status("ran"), ["left"]);
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(
        second.warnings[0].contains("corrupted"),
        "{}",
        second.warnings[0]
    );
    assert!(matches!(store.lookup(&fp, Verify::Full), Lookup::Hit(_)));
    assert_eq!(
        second.with_status("cached").len(),
        3,
        "left's bytes are back, so join is cached"
    );

    // Same size and the old mtime: only a full verification can see it.
    let old_mtime = fs::metadata(&result).unwrap().modified().unwrap();
    let mut bytes = fs::read(&result).unwrap();
    bytes[1] ^= 0x01;
    fs::write(&result, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&result)
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    assert!(matches!(store.lookup(&fp, Verify::Quick), Lookup::Hit(_)));
    let mut verify = options(root.path());
    verify.verify = Verify::Full;
    let third = run_plan(&Plan::new(specs()).unwrap(), &registry(), &verify).unwrap();
    assert_eq!(third.with_status("ran"), ["left"]);
    assert!(third.warnings[0].contains("corrupted"));
}

#[test]
fn truncated_or_deleted_entries_are_recomputed() {
    let root = tempfile::tempdir().unwrap();
    let specs = || {
        vec![StageSpec::new(
            "s",
            "slow",
            json!({"chunks": 3, "pause_ms": 0}),
        )]
    };
    let first = run(root.path(), specs());
    let store = CacheStore::open(root.path()).unwrap();
    let fp = first.stage("s").unwrap().fingerprint.clone().unwrap();
    let big = store.out_dir(&fp).join("big.bin");
    let file = fs::File::options().write(true).open(&big).unwrap();
    file.set_len(1000).unwrap();
    let second = run(root.path(), specs());
    assert_eq!(second.with_status("ran"), ["s"]);
    assert!(
        second.warnings[0].contains("1000 bytes"),
        "{:?}",
        second.warnings
    );
    assert_eq!(fs::metadata(&big).unwrap().len(), 3 << 16);
    fs::remove_file(store.entry_dir(&fp).join("manifest.json")).unwrap();
    assert_eq!(run(root.path(), specs()).with_status("ran"), ["s"]);
}

#[test]
fn a_failed_stage_stops_its_downstream_only() {
    let root = tempfile::tempdir().unwrap();
    let summary = run(
        root.path(),
        vec![
            StageSpec::new("data", "derive", json!({})),
            StageSpec::new("bad", "fail", json!({})).with_inputs(&["data"]),
            StageSpec::new("after_bad", "derive", json!({})).with_inputs(&["bad"]),
            StageSpec::new("good", "derive", json!({})).with_inputs(&["data"]),
        ],
    );
    assert_eq!(summary.with_status("failed"), ["bad"]);
    assert_eq!(summary.with_status("skipped"), ["after_bad"]);
    assert_eq!(sorted(summary.with_status("ran")), ["data", "good"]);
    assert_eq!(summary.exit_code(), 1);
    let table = summary.render_table();
    assert!(table.contains("this toy stage always fails"), "{table}");
    assert!(
        table.contains("4 stages: 2 ran, 0 cached, 1 failed"),
        "{table}"
    );
}

#[test]
fn unknown_kinds_are_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let plan = Plan::new(vec![
        StageSpec::new("data", "derive", json!({})),
        StageSpec::new("gradcam", "explain", json!({}))
            .with_inputs(&["data"])
            .with_label("pipelines/x.gpl:12"),
    ])
    .unwrap();
    let err = run_plan(&plan, &registry(), &options(root.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stage 'gradcam' (pipelines/x.gpl:12) has kind 'explain', which gpl cannot run yet"
    );
    assert!(
        read_events(root.path()).unwrap().is_empty(),
        "nothing started"
    );
}

#[test]
fn only_and_from_select_what_runs() {
    let root = tempfile::tempdir().unwrap();
    let plan = Plan::new(diamond(json!({"a": 1}), json!({"b": 1}))).unwrap();
    let mut only = options(root.path());
    only.only = Some("left".into());
    let summary = run_plan(&plan, &registry(), &only).unwrap();
    assert_eq!(summary.with_status("ran"), ["data", "left"]);
    assert_eq!(summary.stages.len(), 2);

    let all = run_plan(&plan, &registry(), &options(root.path())).unwrap();
    assert_eq!(sorted(all.with_status("ran")), ["join", "right"]);

    let mut from = options(root.path());
    from.from = Some("right".into());
    let forced = run_plan(&plan, &registry(), &from).unwrap();
    assert_eq!(sorted(forced.with_status("ran")), ["join", "right"]);
    assert_eq!(sorted(forced.with_status("cached")), ["data", "left"]);
    assert!(forced.succeeded());

    from.from = Some("rigth".into());
    let err = run_plan(&plan, &registry(), &from).unwrap_err();
    assert!(err.to_string().contains("did you mean 'right'"), "{err}");
}

#[test]
fn independent_stages_run_in_parallel() {
    let root = tempfile::tempdir().unwrap();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let registry = Registry::new().with(
        "meet",
        Meet {
            now: now.clone(),
            most: most.clone(),
        },
    );
    let plan = Plan::new(vec![
        StageSpec::new("a", "meet", json!({"wait_ms": 5000})),
        StageSpec::new("b", "meet", json!({"wait_ms": 5000})),
    ])
    .unwrap();
    let summary = run_plan(&plan, &registry, &options(root.path())).unwrap();
    assert!(summary.succeeded());
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "both stages were running at the same moment"
    );

    let root = tempfile::tempdir().unwrap();
    most.store(0, Ordering::SeqCst);
    let plan = Plan::new(vec![
        StageSpec::new("a", "meet", json!({"wait_ms": 200})),
        StageSpec::new("b", "meet", json!({"wait_ms": 200})),
    ])
    .unwrap();
    let mut serial = options(root.path());
    serial.jobs = 1;
    run_plan(&plan, &registry, &serial).unwrap();
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "--jobs 1 runs one stage at a time"
    );
}

#[test]
fn cancelling_commits_nothing_and_keeps_the_cache_sound() {
    let root = tempfile::tempdir().unwrap();
    let plan = Plan::new(vec![
        StageSpec::new("long", "slow", json!({"chunks": 400, "pause_ms": 10})),
        StageSpec::new("after", "derive", json!({})).with_inputs(&["long"]),
    ])
    .unwrap();
    let opts = options(root.path());
    let control = opts.control.clone();
    let marker = root.path().join("long.started");
    let canceller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !marker.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        control.cancel();
    });
    let summary = run_plan(&plan, &registry(), &opts).unwrap();
    canceller.join().unwrap();
    assert_eq!(summary.with_status("cancelled"), ["long"]);
    assert_eq!(summary.with_status("skipped"), ["after"]);
    let store = CacheStore::open(root.path()).unwrap();
    assert!(store.entries().unwrap().is_empty(), "no entry committed");
    assert_eq!(
        fs::read_dir(store.cache_dir()).unwrap().count(),
        0,
        "the temp folder is gone"
    );
    let events = events_of(root.path(), &summary.run_id);
    assert_eq!(stages_with(&events, EventKind::StageCancelled), ["long"]);
}

// ---- child processes: killed mid-write, interrupted by Ctrl-C ----

const CHILD_ENV: &str = "GPL_RUNNER_TEST_CHILD";

fn slow_plan() -> Plan {
    Plan::new(vec![
        StageSpec::new("long", "slow", json!({"chunks": 100, "pause_ms": 10})),
        StageSpec::new("after", "derive", json!({})).with_inputs(&["long"]),
    ])
    .unwrap()
}

/// Not a test of its own: the body of the child processes the next two tests start
/// (it returns at once unless `GPL_RUNNER_TEST_CHILD` names a project root).
#[test]
fn child_process_entry() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let code =
        gpl::run::cli_support::run_command(&slow_plan(), &registry(), &options(Path::new(&root)))
            .expect("the plan can start");
    std::process::exit(i32::from(code));
}

fn spawn_child(root: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            // Test names are module paths inside the one test binary (tests/it/main.rs).
            "runner_pipeline::child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub(crate) fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_process_killed_mid_write_leaves_a_cache_the_next_run_repairs() {
    let root = tempfile::tempdir().unwrap();
    let mut child = spawn_child(root.path());
    wait_for(&root.path().join("long.started"));
    child.kill().unwrap(); // SIGKILL: no handler, no cleanup
    child.wait().unwrap();

    let store = CacheStore::open(root.path()).unwrap();
    assert!(
        store.entries().unwrap().is_empty(),
        "nothing trusted was left"
    );
    let leftovers: Vec<PathBuf> = fs::read_dir(store.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "the half-written temp folder: {leftovers:?}"
    );
    assert!(leftovers[0].to_string_lossy().contains(".tmp-"));

    let mut opts = options(root.path());
    opts.control = Arc::new(gpl::run::RunControl::new());
    let summary = run_plan(&slow_plan(), &registry(), &opts).unwrap();
    assert_eq!(summary.with_status("ran"), ["long", "after"]);
    assert!(
        !leftovers[0].exists(),
        "the leftover temp folder was removed"
    );
    let fp = summary.stage("long").unwrap().fingerprint.clone().unwrap();
    let Lookup::Hit(manifest) = store.lookup(&fp, Verify::Full) else {
        panic!("the repaired entry must verify")
    };
    assert_eq!(manifest.outputs[0].size, 100 << 16);
    assert!(summary.warnings.is_empty());
}

#[test]
fn ctrl_c_stops_cleanly_with_exit_code_130() {
    let root = tempfile::tempdir().unwrap();
    let mut child = spawn_child(root.path());
    wait_for(&root.path().join("long.started"));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(130));

    let store = CacheStore::open(root.path()).unwrap();
    assert!(store.entries().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(store.cache_dir()).unwrap().count(),
        0,
        "no temp folder either"
    );
    let events = read_events(root.path()).unwrap();
    assert_eq!(stages_with(&events, EventKind::StageCancelled), ["long"]);
    assert_eq!(events.last().map(|e| e.event), Some(EventKind::RunFinished));
    let scratch = root.path().join(".gpl/scratch");
    assert_eq!(
        fs::read_dir(scratch).unwrap().count(),
        1,
        "scratch survives for a resume"
    );
}

// ---- watch ----

/// Waits until the event log holds `count` finished runs.
fn wait_for_runs(root: &Path, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = read_events(root).unwrap();
        if events
            .iter()
            .filter(|e| e.event == EventKind::RunFinished)
            .count()
            >= count
        {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "run {count} never finished: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Saves like an editor that writes a temp file and renames it over the original, so the
/// watcher never sees a half-written file.
fn save(path: &Path, text: &str) {
    let temp = path.with_extension("swp");
    fs::write(&temp, text).unwrap();
    fs::rename(&temp, path).unwrap();
}

fn run_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == EventKind::RunStarted)
        .map(|e| e.run.clone())
        .collect()
}

#[test]
fn watch_reruns_only_the_edited_stage_and_survives_a_bad_edit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    fs::write(dir.join("a.txt"), "alpha").unwrap();
    fs::write(dir.join("b.txt"), "beta").unwrap();
    let reloads = Arc::new(AtomicUsize::new(0));
    let counter = reloads.clone();
    let reload_root = dir.clone();
    let reload = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        if fs::read_to_string(reload_root.join("b.txt"))
            .map_err(|e| e.to_string())?
            .contains("bad")
        {
            return Err("b.txt: a bad edit".to_string());
        }
        let plan = Plan::new(vec![
            StageSpec::new("a", "derive", json!({})).with_files([PathBuf::from("a.txt")]),
            StageSpec::new("b", "derive", json!({})).with_files([PathBuf::from("b.txt")]),
            StageSpec::new("c", "derive", json!({})).with_inputs(&["a", "b"]),
        ])
        .map_err(|e| e.to_string())?;
        Ok(gpl::run::Reload {
            plan,
            registry: registry(),
            watch: vec![PathBuf::from("a.txt"), PathBuf::from("b.txt")],
        })
    };
    let watch_options = gpl::run::WatchOptions::new(options(&dir));
    let stop = watch_options.stop.clone();
    let watcher = std::thread::spawn(move || gpl::run::watch(reload, watch_options));

    let events = wait_for_runs(&dir, 1);
    assert_eq!(
        stages_with(&events, EventKind::StageStarted),
        ["a", "b", "c"]
    );

    let before = reloads.load(Ordering::SeqCst);
    save(&dir.join("b.txt"), "bad edit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reloads.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "the bad edit was never seen");
        std::thread::sleep(Duration::from_millis(10));
    }
    save(&dir.join("b.txt"), "beta, edited");
    let events = wait_for_runs(&dir, 2);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap().unwrap();

    let runs = run_ids(&events);
    assert_eq!(runs.len(), 2, "the bad edit started no run: {events:#?}");
    let second: Vec<Event> = events
        .iter()
        .filter(|e| e.run == runs[1])
        .cloned()
        .collect();
    assert_eq!(
        stages_with(&second, EventKind::StageStarted),
        ["b", "c"],
        "{events:#?}"
    );
    assert_eq!(stages_with(&second, EventKind::StageCached), ["a"]);
    let joined = fs::read_to_string(dir.join("runs/toy/c/summary.txt")).unwrap();
    assert!(joined.contains("beta, edited"), "{joined}");
}

#[test]
fn watch_restarts_a_running_stage_whose_input_changed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    fs::write(dir.join("slow.json"), "1").unwrap();
    let reload_root = dir.clone();
    let reload = move || {
        let version =
            fs::read_to_string(reload_root.join("slow.json")).map_err(|e| e.to_string())?;
        // Long enough the first time for the edit to land while it runs; short after.
        let chunks = if version.trim() == "1" { 200 } else { 5 };
        let plan = Plan::new(vec![
            StageSpec::new("steady", "slow", json!({"chunks": 30, "pause_ms": 10})),
            StageSpec::new(
                "edited",
                "slow",
                json!({"chunks": chunks, "pause_ms": 20, "version": version.trim()}),
            ),
        ])
        .map_err(|e| e.to_string())?;
        Ok(gpl::run::Reload {
            plan,
            registry: registry(),
            watch: vec![PathBuf::from("slow.json")],
        })
    };
    let watch_options = gpl::run::WatchOptions::new(options(&dir));
    let stop = watch_options.stop.clone();
    let watcher = std::thread::spawn(move || gpl::run::watch(reload, watch_options));

    wait_for(&dir.join("edited.started"));
    save(&dir.join("slow.json"), "2");
    let events = wait_for_runs(&dir, 2);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap().unwrap();

    let runs = run_ids(&events);
    let of = |run: &str| {
        events
            .iter()
            .filter(|e| e.run == run)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stages_with(&of(&runs[0]), EventKind::StageCancelled),
        ["edited"]
    );
    assert_eq!(
        stages_with(&of(&runs[0]), EventKind::StageFinished),
        ["steady"],
        "an unaffected stage finishes"
    );
    assert_eq!(
        stages_with(&of(&runs[1]), EventKind::StageFinished),
        ["edited"]
    );
    assert_eq!(
        stages_with(&of(&runs[1]), EventKind::StageCached),
        ["steady"]
    );
}

#[test]
fn events_are_one_json_object_per_line() {
    let root = tempfile::tempdir().unwrap();
    run(root.path(), diamond(json!({}), json!({})));
    let text = fs::read_to_string(root.path().join(".gpl/events.jsonl")).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    assert_eq!(kinds.iter().filter(|k| *k == "stage_finished").count(), 4);
}

#[test]
fn graph_marks_cached_dirty_and_upstream_dirty_stages() {
    let root = tempfile::tempdir().unwrap();
    run(root.path(), diamond(json!({"a": 1}), json!({"b": 1})));
    let plan = Plan::new(diamond(json!({"a": 1}), json!({"b": 2}))).unwrap();
    let states = gpl::run::plan_states(&plan, root.path()).unwrap();
    let label = |id: &str| states[&gpl::plan::StageId::from(id)].label();
    assert_eq!(
        [label("data"), label("left"), label("right"), label("join")],
        ["cached", "cached", "dirty", "dirty (upstream)"]
    );
    let tree = gpl::run::cli_support::graph_command(&plan, root.path(), "toy", false).unwrap();
    assert!(tree.starts_with("data  [derive]  cached  "), "{tree}");
    assert!(
        tree.contains("right  [derive]  dirty  ") && tree.contains("(not in cache)"),
        "{tree}"
    );
    let dot = gpl::run::cli_support::graph_command(&plan, root.path(), "toy", true).unwrap();
    assert!(dot.contains("\"left\" -> \"join\";"), "{dot}");
}

#[test]
fn clean_gc_keeps_what_current_plans_reference() {
    let root = tempfile::tempdir().unwrap();
    run(root.path(), diamond(json!({"a": 1}), json!({"b": 1})));
    run(root.path(), diamond(json!({"a": 1}), json!({"b": 2})));
    let store = CacheStore::open(root.path()).unwrap();
    assert_eq!(
        store.entries().unwrap().len(),
        6,
        "two versions of right and join"
    );
    let current = Plan::new(diamond(json!({"a": 1}), json!({"b": 2}))).unwrap();
    let live = gpl::run::live_fingerprints([&current], root.path()).unwrap();
    let (report, line) = gpl::run::cli_support::clean_command(root.path(), Some(&live)).unwrap();
    assert_eq!(report.entries_removed, 2, "{line}");
    assert_eq!(
        run(root.path(), diamond(json!({"a": 1}), json!({"b": 2})))
            .with_status("cached")
            .len(),
        4
    );
    let (report, _) = gpl::run::cli_support::clean_command(root.path(), None).unwrap();
    assert_eq!(report.entries_removed, 4);
    assert!(store.entries().unwrap().is_empty());
}

/// Trains `epochs` toy epochs, checkpointing each in the scratch folder and resuming from
/// the last checkpoint; `result.txt` lists the epochs this process computed.
struct Epochs;

impl StageExecutor for Epochs {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let epochs = ctx.config()["epochs"].as_u64().unwrap_or(5);
        let checkpoint = ctx.scratch_dir().join("last_epoch");
        let start = fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(0, |e| e + 1);
        let mut computed = Vec::new();
        for epoch in start..epochs {
            ctx.check_cancelled()?;
            std::thread::sleep(Duration::from_millis(20));
            computed.push(epoch.to_string());
            fs::write(&checkpoint, epoch.to_string()).map_err(StageError::io(&checkpoint))?;
            fs::write(ctx.root().join(format!("epoch{epoch}.done")), b"")
                .map_err(StageError::io(ctx.root()))?;
        }
        let result = ctx.out_dir().join("result.txt");
        fs::write(&result, computed.join(",")).map_err(StageError::io(&result))
    }
}

#[test]
fn a_cancelled_stage_resumes_from_its_scratch_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::new().with("epochs", Epochs);
    let plan = Plan::new(vec![StageSpec::new(
        "train",
        "epochs",
        json!({"epochs": 6}),
    )])
    .unwrap();
    let first_options = options(root.path());
    let control = first_options.control.clone();
    let marker = root.path().join("epoch2.done");
    let canceller = std::thread::spawn(move || {
        wait_for(&marker);
        control.cancel();
    });
    let first = run_plan(&plan, &registry, &first_options).unwrap();
    canceller.join().unwrap();
    assert_eq!(first.with_status("cancelled"), ["train"]);

    let second = run_plan(&plan, &registry, &options(root.path())).unwrap();
    assert_eq!(second.with_status("ran"), ["train"]);
    let fp = second.stage("train").unwrap().fingerprint.clone().unwrap();
    let store = CacheStore::open(root.path()).unwrap();
    let computed = fs::read_to_string(store.out_dir(&fp).join("result.txt")).unwrap();
    assert!(
        !computed.starts_with("0,"),
        "resumed after epoch 2 or later, computed {computed}"
    );
    assert!(computed.ends_with("5"), "{computed}");
    assert!(
        !store.scratch_dir(&fp).exists(),
        "scratch is removed after the commit"
    );
}
