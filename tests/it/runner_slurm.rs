//! `gpl run --executor slurm` against a real one-node Slurm (issue 18): the tiny study run as
//! Slurm jobs publishes what a local run does, and bad input fails clearly (no sbatch, a
//! partition that does not exist, a job killed by its time limit, a node that does not see
//! the project folder). The cluster is `scripts/slurm-local.sh`, started once per test
//! process and stopped when it exits; starting it needs root. Where it cannot start (not
//! root, no apt, daemons that do not come up), the tests say so on stderr and pass without
//! testing, so a machine that cannot host Slurm does not block unrelated work; with
//! `GPL_REQUIRE_SLURM=1`, which `bash scripts/test.sh slurm` sets, they fail instead. Once
//! the cluster is up, every check is strict.

use crate::runner_concurrency::{finish, published, tiny_project};
use gpl::run::{read_events, Event, EventKind};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The script's cluster folder: the same default as the script, so a cluster someone
/// already started with it is reused (and left running).
fn slurm_dir() -> PathBuf {
    std::env::var_os("GPL_SLURM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/gpl-slurm"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Stops the daemons this test process started, when it exits.
extern "C" fn stop_slurm() {
    let _ = Command::new("bash")
        .arg(script())
        .arg("stop")
        .env("GPL_SLURM_DIR", slurm_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn cluster_answers(conf: &Path) -> bool {
    Command::new("timeout")
        .args(["10", "sinfo", "-h", "-o", "%T"])
        .env("SLURM_CONF", conf)
        .output()
        .is_ok_and(|o| {
            let states = String::from_utf8_lossy(&o.stdout);
            o.status.success() && states.lines().any(|s| s == "idle" || s == "mixed")
        })
}

/// The cluster's slurm.conf, starting the cluster on first use; `None` when it cannot start
/// and `GPL_REQUIRE_SLURM=1` is not set.
fn slurm() -> Option<PathBuf> {
    static STARTED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        let conf = slurm_dir().join("slurm.conf");
        if conf.exists() && cluster_answers(&conf) {
            return Ok(conf);
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err(
                "starting a Slurm cluster needs root (slurmd runs jobs as their users)".into(),
            );
        }
        // The script waits for the node at most 20 s; `timeout` bounds an apt-get too.
        let output = Command::new("timeout")
            .args(["600", "bash"])
            .arg(script())
            .arg("start")
            .env("GPL_SLURM_DIR", slurm_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        // Registered before the result is judged: a half-started cluster is stopped too.
        // SAFETY: atexit with a plain function that takes no arguments.
        unsafe {
            atexit(stop_slurm);
        }
        if !output.status.success() {
            return Err(format!(
                "scripts/slurm-local.sh start failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(conf)
    });
    match started {
        Ok(conf) => Some(conf.clone()),
        Err(reason) if std::env::var("GPL_REQUIRE_SLURM").as_deref() == Ok("1") => {
            panic!("no Slurm to test against (GPL_REQUIRE_SLURM=1): {reason}")
        }
        Err(reason) => {
            eprintln!("SLURM TEST NOT RUN: no Slurm could be started here: {reason}");
            None
        }
    }
}

/// `gpl run <file> --executor slurm ARGS` in `dir` with a 1 s poll, one CPU and 1 GB a job
/// (the test node has two CPUs), its output in `dir/<name>.out|.err`.
fn gpl_slurm(dir: &Path, conf: &Path, file: &str, name: &str, args: &[&str]) -> (bool, String) {
    let log = |ext: &str| fs::File::create(dir.join(format!("{name}.{ext}"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["run", file, "--executor", "slurm", "--slurm-poll", "1"])
        .args(["--slurm-cpus", "1", "--slurm-mem", "1G"])
        .args(args)
        .current_dir(dir)
        .env("SLURM_CONF", conf)
        .stdout(Stdio::from(log("out")))
        .stderr(Stdio::from(log("err")))
        .spawn()
        .unwrap();
    let ok = finish(child, Duration::from_secs(900), "gpl run --executor slurm");
    let out = fs::read_to_string(dir.join(format!("{name}.out"))).unwrap();
    let err = fs::read_to_string(dir.join(format!("{name}.err"))).unwrap();
    (ok, format!("{out}\n--- stderr\n{err}"))
}

fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.event == kind).collect()
}

#[test]
fn slurm_run_of_the_tiny_study_publishes_what_a_local_run_does() {
    let Some(conf) = slurm() else { return };
    let local = tiny_project();
    let ran = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["run", "tiny.gpl"])
        .current_dir(local.path())
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let cluster = tiny_project();
    let (ok, output) = gpl_slurm(cluster.path(), &conf, "tiny.gpl", "slurm", &[]);
    assert!(ok, "{output}");
    assert!(
        output.contains("14 stages: 14 ran, 0 cached, 0 failed"),
        "{output}"
    );
    assert!(
        output.contains("slurm jobs: 0 pending, 0 running, 14 done"),
        "{output}"
    );
    let events = read_events(cluster.path()).unwrap();
    // Each stage was submitted by the run and computed by its job, which logs under the
    // run's id.
    let submitted = of_kind(&events, EventKind::StageSubmitted);
    let finished = of_kind(&events, EventKind::StageFinished);
    assert_eq!(submitted.len(), 14, "{events:?}");
    assert_eq!(finished.len(), 14, "{events:?}");
    assert!(finished.iter().all(|e| e.run == submitted[0].run));
    let run_dir = cluster.path().join(".gpl/slurm").join(&submitted[0].run);
    assert!(run_dir.join("marker").is_file());
    assert!(run_dir.join("cv.a.fold1.log").is_file());

    assert_eq!(published(cluster.path()), published(local.path()));

    // `gpl plan` reads the jobs' times from the entries they committed.
    let plan = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["plan", "tiny.gpl", "--nodes", "1,21"])
        .current_dir(cluster.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{text}");
    assert!(
        text.contains("stage times: 14 from this plan's cache entries"),
        "{text}"
    );
    assert!(text.contains("critical path: "), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("1  "))
            .count(),
        1,
        "{text}"
    );

    // Resources are not part of any key: other settings find every stage cached.
    let (ok, output) = gpl_slurm(
        cluster.path(),
        &conf,
        "tiny.gpl",
        "again",
        &["--slurm-time", "30", "--slurm-extra", "--comment=again"],
    );
    assert!(ok, "{output}");
    assert!(
        output.contains("14 stages: 0 ran, 14 cached, 0 failed"),
        "{output}"
    );
}

#[test]
fn slurm_executor_without_sbatch_on_path_fails_naming_the_executor() {
    let project = tiny_project();
    let empty = tempfile::tempdir().unwrap();
    let output: Output = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["run", "tiny.gpl", "--executor", "slurm"])
        .current_dir(project.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the slurm executor needs `sbatch`, which is not on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("gpl::run::slurm"), "{stderr}");
    assert!(!project.path().join(".gpl/cache").exists(), "nothing ran");
}

#[test]
fn slurm_flags_without_the_slurm_executor_are_refused() {
    let project = tiny_project();
    let output = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(["run", "tiny.gpl", "--slurm-partition", "gpu"])
        .current_dir(project.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--slurm-partition"), "{stderr}");
    assert!(stderr.contains("needs `--executor slurm`"), "{stderr}");
}

#[test]
fn slurm_partition_that_does_not_exist_shows_sbatchs_message() {
    let Some(conf) = slurm() else { return };
    let project = tiny_project();
    let (ok, output) = gpl_slurm(
        project.path(),
        &conf,
        "tiny.gpl",
        "run",
        &["--slurm-partition", "no-such-partition"],
    );
    assert!(!ok, "{output}");
    assert!(
        output.contains("error: g: sbatch refused its job: sbatch: error: invalid partition"),
        "{output}"
    );
    // The first stage failed; everything downstream was skipped, as in a local run.
    assert!(
        output.contains("14 stages: 0 ran, 0 cached, 1 failed"),
        "{output}"
    );
    assert!(output.contains("(13 cancelled or skipped)"), "{output}");
}

/// A dataset and a training far longer than the one-minute limit Slurm is given.
const LONG_TRAINING: &str = r#"
dataset g {
  source hdf5("data/absent.h5", images: "images", labels: "ans")
  fallback synthetic(galaxy10, count: 200, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, stratify, seed: 42)
}

model small(classes) {
  input 69 x 69 x 3
  conv 4 3x3 relu
  maxpool 4
  flatten
  dense 16 relu
  dense classes softmax
}

train long {
  model small(10)
  data g.train
  optimizer adam(lr: 1e-3)
  epochs 5000
  batch 32
  seed 7
}
"#;

#[test]
fn slurm_time_limit_fails_the_stage_with_timeout_and_commits_nothing() {
    let Some(conf) = slurm() else { return };
    let project = tiny_project();
    fs::write(project.path().join("long.gpl"), LONG_TRAINING).unwrap();
    let (ok, output) = gpl_slurm(
        project.path(),
        &conf,
        "long.gpl",
        "run",
        &["--slurm-time", "1"],
    );
    assert!(!ok, "{output}");
    let line = output
        .lines()
        .find(|l| l.starts_with("error: long: "))
        .unwrap_or_else(|| panic!("{output}"));
    assert!(line.contains("ended TIMEOUT (TimeLimit)"), "{line}");
    // The log's tail says Slurm killed it.
    assert!(output.contains("DUE TO TIME LIMIT"), "{output}");

    let events = read_events(project.path()).unwrap();
    let long = |e: &Event| e.stage.as_ref().is_some_and(|s| s.as_str() == "long");
    let submitted = of_kind(&events, EventKind::StageSubmitted);
    let key = submitted
        .iter()
        .find(|e| long(e))
        .unwrap()
        .fingerprint
        .clone()
        .unwrap();
    assert!(of_kind(&events, EventKind::StageStarted)
        .iter()
        .any(|e| long(e)));
    assert!(!of_kind(&events, EventKind::StageFinished)
        .iter()
        .any(|e| long(e)));
    let cache = project.path().join(".gpl/cache");
    assert!(!cache.join(key.as_str()).exists(), "no entry was committed");
    let entries: Vec<String> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.contains(".tmp-") && !name.contains(".old-"))
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "the dataset and its split only: {entries:?}"
    );
}

#[test]
fn slurm_job_on_a_node_that_does_not_see_the_project_fails_with_a_clear_error() {
    let Some(conf) = slurm() else { return };
    let project = tiny_project();
    // A node whose filesystem is not the submitting machine's: the run's marker file is not
    // there when the job starts (the launcher removes it before gpl runs).
    let launcher = format!(
        "rm -f '{}'/.gpl/slurm/*/marker &&",
        project.path().display()
    );
    let (ok, output) = gpl_slurm(
        project.path(),
        &conf,
        "tiny.gpl",
        "run",
        &["--slurm-launcher", &launcher],
    );
    assert!(!ok, "{output}");
    assert!(output.contains("error: g: slurm job "), "{output}");
    assert!(
        output.contains("ended FAILED (NonZeroExitCode)"),
        "{output}"
    );
    assert!(
        output.contains("this node does not see the project folder the run was started in"),
        "{output}"
    );
    assert!(
        output.contains("must be on a filesystem every node mounts"),
        "{output}"
    );
}

#[test]
fn slurm_ctrl_c_cancels_the_runs_jobs() {
    let Some(conf) = slurm() else { return };
    let project = tiny_project();
    fs::write(project.path().join("long.gpl"), LONG_TRAINING).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args([
            "run",
            "long.gpl",
            "--executor",
            "slurm",
            "--slurm-poll",
            "1",
        ])
        .args(["--slurm-cpus", "1", "--slurm-mem", "1G"])
        .current_dir(project.path())
        .env("SLURM_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The training's job id, once the run has submitted it.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let job = loop {
        let events = read_events(project.path()).unwrap();
        let submitted = of_kind(&events, EventKind::StageSubmitted)
            .into_iter()
            .find(|e| e.stage.as_ref().is_some_and(|s| s.as_str() == "long"))
            .and_then(|e| e.message.clone());
        if let Some(message) = submitted {
            break message.trim_start_matches("slurm job ").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "long was never submitted"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let ok = finish_code(&mut child, Duration::from_secs(120));
    assert_eq!(ok, Some(130), "the run reports the interruption");
    let state = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", &job])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "CANCELLED");
}

/// The exit code of `child` (at most `limit`, then it is killed and the test fails).
fn finish_code(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the interrupted run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slurm_jobs_flag_caps_the_jobs_in_flight() {
    let Some(conf) = slurm() else { return };
    let project = tiny_project();
    // `cv` needs the dataset and four folds, ready together once the dataset is in.
    let (ok, output) = gpl_slurm(
        project.path(),
        &conf,
        "tiny.gpl",
        "run",
        &["--only", "cv", "--jobs", "2"],
    );
    assert!(ok, "{output}");
    assert!(output.contains("6 stages: 6 ran"), "{output}");
    let mut polls = 0;
    for line in output.lines() {
        let Some(counts) = line.strip_prefix("slurm jobs: ") else {
            continue;
        };
        polls += 1;
        let words: Vec<&str> = counts.split_whitespace().collect();
        let pending: usize = words[0].parse().unwrap();
        let running: usize = words[2].parse().unwrap();
        assert!(pending + running <= 2, "{line}");
    }
    assert!(polls > 0, "{output}");
}
