//! Benchmark: planning plus cache lookup of a fully cached 60-stage plan (target < 200 ms).
//!
//!     cargo run --release --example runner_bench [-- DATA_MB]
//!
//! Builds a 60-stage toy pipeline in a temp folder (one stage reads a DATA_MB-megabyte data
//! file, default 64), runs it once to fill the cache, then times: (1) Plan::new + run_plan
//! with everything cached, (2) the same without the file-hash memo (the data file is
//! re-hashed), (3) with `--verify` (every output re-hashed), (4) `gpl graph`'s plan_states.

use gpl::plan::{Plan, StageSpec};
use gpl::run::{
    plan_states, run_plan, ProgressMode, Registry, RunOptions, StageContext, StageError,
    StageExecutor, Verify,
};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Writes a 256 KiB artifact, a small public file, and a digest of its inputs.
struct Toy;

impl StageExecutor for Toy {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let mut text = gpl::plan::canonical_json(ctx.config());
        for dir in ctx.input_dirs() {
            text.push_str(
                &fs::read_to_string(dir.join("digest.txt")).map_err(StageError::io(dir))?,
            );
        }
        let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
        let out = ctx.out_dir();
        fs::write(out.join("digest.txt"), &digest).map_err(StageError::io(out))?;
        fs::write(
            out.join("weights.bin"),
            vec![digest.as_bytes()[0]; 256 << 10],
        )
        .map_err(StageError::io(out))?;
        fs::write(
            ctx.public_dir().join("metrics.yaml"),
            format!("digest: {digest}\n"),
        )
        .map_err(StageError::io(out))?;
        Ok(())
    }
}

fn specs(data: &Path) -> Vec<StageSpec> {
    let mut specs = vec![
        StageSpec::new("dataset", "toy", json!({"source": "galaxy10"}))
            .with_files([data.to_path_buf()]),
    ];
    for i in 1..60 {
        // Layers of a wide DAG: each stage reads the previous one and, every third stage,
        // one further back, like splits → trainings → evaluations → reports.
        let mut inputs = vec![format!("s{}", i - 1)];
        if i == 1 {
            inputs = vec!["dataset".to_string()];
        } else if i % 3 == 0 && i >= 4 {
            inputs.push(format!("s{}", i - 3));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        specs.push(
            StageSpec::new(
                format!("s{i}"),
                "toy",
                json!({"layer": i, "epochs": 30, "lr": 1e-3, "patience": 5}),
            )
            .with_inputs(&refs)
            .with_seed(7),
        );
    }
    specs
}

fn time<T>(label: &str, repeats: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        std::hint::black_box(f());
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = samples[samples.len() / 2];
    println!(
        "{label:58} median {median:8.2} ms  (min {:.2}, max {:.2}, n={repeats})",
        samples[0],
        samples[samples.len() - 1]
    );
    median
}

fn main() {
    let data_mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("a temp folder");
    let root: PathBuf = dir.path().to_path_buf();
    let data = root.join("galaxy10.h5");
    let mut bytes = vec![0u8; data_mb << 20];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    fs::write(&data, &bytes).expect("write the data file");
    // The file-hash memo skips files modified in the last 2 s (same-tick writes), so age it.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&data)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");

    let registry = Registry::new().with("toy", Toy);
    let mut options = RunOptions::new(&root, "bench");
    options.progress = ProgressMode::Silent;
    let start = Instant::now();
    let first = run_plan(
        &Plan::new(specs(&data)).expect("acyclic"),
        &registry,
        &options,
    )
    .expect("starts");
    assert_eq!(first.with_status("ran").len(), 60);
    println!(
        "cold run of 60 stages (executes and commits everything): {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "data file: {data_mb} MB; cores: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let cached = || {
        let plan = Plan::new(specs(&data)).expect("acyclic");
        let summary = run_plan(&plan, &registry, &options).expect("starts");
        assert_eq!(summary.with_status("cached").len(), 60);
    };
    time(
        "plan + cache lookup, fully cached (file-hash memo warm)",
        15,
        cached,
    );
    let memo = root.join(".gpl/filehash.json");
    time(
        "same, file-hash memo deleted (data file re-hashed)",
        5,
        || {
            let _ = fs::remove_file(&memo);
            cached()
        },
    );
    let mut full = options.clone();
    full.verify = Verify::Full;
    time("same with --verify (every output re-hashed)", 5, || {
        let summary =
            run_plan(&Plan::new(specs(&data)).expect("acyclic"), &registry, &full).expect("starts");
        assert_eq!(summary.with_status("cached").len(), 60);
    });
    time("gpl graph: Plan::new + plan_states", 15, || {
        let plan = Plan::new(specs(&data)).expect("acyclic");
        plan_states(&plan, &root).expect("states")
    });
    watch_latency(&root);
}

/// Time from saving a watched file to the `stage_started` event of the stage reading it.
fn watch_latency(root: &Path) {
    use gpl::run::{read_events, EventKind, Reload, WatchOptions};
    let input = root.join("params.txt");
    fs::write(&input, "0").expect("write");
    let reload_root = root.to_path_buf();
    let reload = move || {
        let plan = Plan::new(vec![StageSpec::new("reads_params", "toy", json!({}))
            .with_files([reload_root.join("params.txt")])])
        .map_err(|e| e.to_string())?;
        Ok(Reload {
            plan,
            registry: Registry::new().with("toy", Toy),
            watch: vec![],
        })
    };
    let mut run = RunOptions::new(root, "watch-bench");
    run.progress = ProgressMode::Silent;
    let options = WatchOptions::new(run);
    let stop = options.stop.clone();
    let watcher = std::thread::spawn(move || gpl::run::watch(reload, options));
    let started = |count: usize| {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let events = read_events(root).expect("events");
            let n = events
                .iter()
                .filter(|e| {
                    e.event == EventKind::StageStarted
                        && e.pipeline.as_deref() == Some("watch-bench")
                })
                .count();
            if n >= count || Instant::now() > deadline {
                return n >= count;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    assert!(started(1), "the first watch run started");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut samples = Vec::new();
    for i in 1..=5 {
        let temp = root.join("params.swp");
        fs::write(&temp, i.to_string()).expect("write");
        let saved = Instant::now();
        fs::rename(&temp, &input).expect("rename");
        assert!(started(i + 1), "the watch run after save {i} started");
        samples.push(saved.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.join();
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{:58} median {:8.2} ms  (min {:.2}, max {:.2}, n=5)",
        "watch: save -> stage_started", samples[2], samples[0], samples[4]
    );
}
