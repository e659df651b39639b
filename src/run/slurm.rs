//! The Slurm executor (`gpl run --executor slurm`): each stage the cache does not have is
//! submitted with `sbatch` as a job that runs gpl itself on a node (`gpl exec-stage`), which
//! computes that one stage into the shared cache through the same locks and commit as a local
//! run ([`super::runner::run_job`]). The run's jobs are polled together, one `squeue` call per
//! interval, by job names that carry the run's id; a finished job's stage then counts like a
//! local completion once its cache entry is there.
//!
//! Files of a run live in `.gpl/slurm/<run>/`: `marker` (a token the job checks, so a node that
//! does not share the project folder fails with a clear error), and per stage `<stage>.json`
//! (the job: spec, key, inputs), `<stage>.sh` (the batch script) and `<stage>.log` (its output).

use super::cache::CacheStore;
use crate::plan::fingerprint::{lock, unique_suffix};
use crate::plan::{ContentHash, Fingerprint, StageId, StageSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The Slurm commands the executor runs; all must be on PATH.
const COMMANDS: [&str; 3] = ["sbatch", "squeue", "scancel"];
/// Lines of a failed job's log shown with its error.
const LOG_TAIL_LINES: usize = 15;
/// Polls in a row that may miss a submitted job (squeue lags, or forgot it) before sacct is
/// asked and, failing that, the job counts as lost.
const MISSES_BEFORE_LOST: u32 = 3;
/// How long squeue may keep failing (controller down) before the run's jobs count as lost.
const SQUEUE_FAILING_LIMIT: Duration = Duration::from_secs(120);

/// What one job asks of Slurm. Unset fields are left to the cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub partition: Option<String>,
    /// `sbatch --time` (minutes, `H:MM:SS`, `D-HH:MM:SS`).
    pub time: Option<String>,
    pub cpus: Option<u32>,
    /// `sbatch --mem` (`4G`, `500M`).
    pub mem: Option<String>,
    pub account: Option<String>,
    /// More sbatch arguments, as given.
    pub extra: Vec<String>,
}

impl Resources {
    /// `self`'s settings, and `base`'s where `self` has none (extra arguments: both).
    pub fn over(&self, base: &Resources) -> Resources {
        Resources {
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            time: self.time.clone().or_else(|| base.time.clone()),
            cpus: self.cpus.or(base.cpus),
            mem: self.mem.clone().or_else(|| base.mem.clone()),
            account: self.account.clone().or_else(|| base.account.clone()),
            extra: base.extra.iter().chain(&self.extra).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    fn sbatch_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        };
        flag("partition", self.partition.clone());
        flag("time", self.time.clone());
        flag("cpus-per-task", self.cpus.map(|c| c.to_string()));
        flag("mem", self.mem.clone());
        flag("account", self.account.clone());
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// How `--executor slurm` submits and polls.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Resources by stage kind (the defaults gpl ships, `stages::slurm_defaults`).
    pub per_kind: BTreeMap<String, Resources>,
    /// Settings for every job (the pipeline's `slurm` section, then the command line).
    pub overrides: Resources,
    /// Shell words put before the gpl command in the batch script (`module load x &&`,
    /// `apptainer exec gpl.sif`).
    pub launcher: Option<String>,
    /// The gpl the jobs run: the same path must work on the nodes.
    pub program: PathBuf,
    /// Seconds between two squeue calls.
    pub poll: Duration,
}

impl SlurmOptions {
    pub fn new(program: impl Into<PathBuf>) -> SlurmOptions {
        SlurmOptions {
            per_kind: BTreeMap::new(),
            overrides: Resources::default(),
            launcher: None,
            program: program.into(),
            poll: Duration::from_secs(5),
        }
    }

    /// What a job of this kind asks for.
    pub fn resources(&self, kind: &str) -> Resources {
        match self.per_kind.get(kind) {
            Some(base) => self.overrides.over(base),
            None => self.overrides.clone(),
        }
    }
}

/// The job's description, written by the run and read by `gpl exec-stage` on the node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFile {
    pub run: String,
    pub pipeline: String,
    /// The run's marker token: the job checks it sees the same `.gpl/` the run wrote.
    pub token: String,
    pub spec: StageSpec,
    /// The key the run computed; the job refuses to compute another one.
    pub fingerprint: Fingerprint,
    pub inputs: Vec<JobInput>,
    /// Recompute even if the entry exists (`--force`, `--from`).
    pub force: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInput {
    pub stage: StageId,
    pub fingerprint: Fingerprint,
    pub digest: ContentHash,
}

/// `.gpl/slurm/<run>/marker`, beside the job files.
fn marker_path(run_dir: &Path) -> PathBuf {
    run_dir.join("marker")
}

/// How a job ended, as the run sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEnd {
    Completed,
    /// Cancelled by this run (Ctrl-C, or its stage cancelled).
    Cancelled,
    /// Slurm's state (`FAILED`, `TIMEOUT`, `OUT_OF_MEMORY`, ...) and reason.
    Failed {
        state: String,
        reason: String,
    },
}

#[derive(Clone, Debug)]
struct Job {
    name: String,
    state: String,
    reason: String,
    misses: u32,
    end: Option<JobEnd>,
}

#[derive(Debug, Default)]
struct Table {
    jobs: HashMap<String, Job>,
    last_poll: Option<Instant>,
    polling: bool,
    /// Since when squeue keeps failing, and its last message.
    failing: Option<(Instant, String)>,
    /// The counts printed last.
    shown: (usize, usize, usize),
}

/// One run's jobs: submits, polls (one squeue call per interval for all of them, made by
/// whichever waiting stage finds the last poll old enough), cancels.
#[derive(Debug)]
pub struct SlurmBackend {
    options: SlurmOptions,
    root: PathBuf,
    run: String,
    run_dir: PathBuf,
    token: String,
    table: Mutex<Table>,
    changed: Condvar,
}

impl SlurmBackend {
    /// Checks the Slurm commands are on PATH, and writes the run's folder and marker.
    pub fn start(options: &SlurmOptions, root: &Path, run: &str) -> Result<SlurmBackend, String> {
        check_commands()?;
        let root = fs::canonicalize(root)
            .map_err(|e| format!("cannot resolve the project folder {}: {e}", root.display()))?;
        let run_dir =
            crate::fsutil::confined_dir(&root, &Path::new(".gpl").join("slurm").join(run))
                .map_err(|e| format!("cannot create .gpl/slurm/{run}: {e}"))?;
        let token = format!("{run}-{}", unique_suffix());
        crate::fsutil::write_atomic(&marker_path(&run_dir), token.as_bytes())
            .map_err(|e| format!("cannot write the marker file in {}: {e}", run_dir.display()))?;
        Ok(SlurmBackend {
            options: options.clone(),
            root,
            run: run.to_string(),
            run_dir,
            token,
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn log_path(&self, stage: &StageId) -> PathBuf {
        self.run_dir.join(format!("{}.log", stage.file_name()))
    }

    /// Writes the job's files and submits it; returns its Slurm job id.
    pub fn submit(
        &self,
        spec: &StageSpec,
        fingerprint: &Fingerprint,
        inputs: Vec<JobInput>,
        force: bool,
        pipeline: &str,
    ) -> Result<String, String> {
        let base = spec.id.file_name();
        let job = JobFile {
            run: self.run.clone(),
            pipeline: pipeline.to_string(),
            token: self.token.clone(),
            spec: spec.clone(),
            fingerprint: fingerprint.clone(),
            inputs,
            force,
        };
        let job_path = self.run_dir.join(format!("{base}.json"));
        let json =
            serde_json::to_vec_pretty(&job).map_err(|e| format!("cannot write the job: {e}"))?;
        crate::fsutil::write_atomic(&job_path, &json)
            .map_err(|e| format!("cannot write {}: {e}", job_path.display()))?;
        let mut script = String::from("#!/bin/sh\n");
        let _ = writeln!(
            script,
            "# gpl run {}: computes stage '{}' into the shared cache.",
            self.run, spec.id
        );
        let command = format!(
            "{} exec-stage {} --token {}",
            shell_quote(self.options.program.as_os_str()),
            shell_quote(job_path.as_os_str()),
            shell_quote(OsStr::new(&self.token)),
        );
        match &self.options.launcher {
            Some(launcher) => {
                let _ = writeln!(script, "{launcher} {command}");
            }
            None => {
                let _ = writeln!(script, "exec {command}");
            }
        }
        let script_path = self.run_dir.join(format!("{base}.sh"));
        crate::fsutil::write_atomic(&script_path, script.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", script_path.display()))?;

        let name = self.job_name(&spec.id);
        let output = Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--output={}", self.log_path(&spec.id).display()))
            .arg(format!("--chdir={}", self.root.display()))
            .args(self.options.resources(&spec.kind).sbatch_args())
            .arg(&script_path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run sbatch: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "sbatch refused its job: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        // `--parsable` prints `id` or `id;cluster`.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("sbatch printed no job id: {}", stdout.trim()));
        }
        lock(&self.table).jobs.insert(
            id.clone(),
            Job {
                name,
                state: "PENDING".to_string(),
                reason: String::new(),
                misses: 0,
                end: None,
            },
        );
        Ok(id)
    }

    fn job_name(&self, stage: &StageId) -> String {
        format!("gpl-{}-{}", self.run, stage.file_name())
    }

    /// Waits until the job ends; `cancelled` is asked between polls, and a cancellation
    /// cancels the job (`scancel`). `on_state` hears each new state (for the stage's bar).
    pub fn wait(
        &self,
        id: &str,
        cancelled: impl Fn() -> bool,
        on_state: impl Fn(&str),
        progress: impl Fn(&str),
    ) -> JobEnd {
        let mut seen = String::new();
        let mut table = lock(&self.table);
        loop {
            let Some(job) = table.jobs.get(id) else {
                return JobEnd::Failed {
                    state: "UNKNOWN".to_string(),
                    reason: "the run lost track of it".to_string(),
                };
            };
            if let Some(end) = &job.end {
                return end.clone();
            }
            if job.state != seen {
                seen = job.state.clone();
                on_state(&seen);
            }
            if cancelled() {
                drop(table);
                scancel(&[id.to_string()]);
                let mut table = lock(&self.table);
                if let Some(job) = table.jobs.get_mut(id) {
                    job.end = Some(JobEnd::Cancelled);
                }
                self.changed.notify_all();
                return JobEnd::Cancelled;
            }
            let due = table.last_poll.map_or(Duration::ZERO, |t| {
                self.options.poll.saturating_sub(t.elapsed())
            });
            if !table.polling && due.is_zero() {
                table.polling = true;
                let active: Vec<(String, String)> = table
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.end.is_none())
                    .map(|(id, j)| (id.clone(), j.name.clone()))
                    .collect();
                drop(table);
                let polled = squeue(&active);
                table = lock(&self.table);
                self.record(&mut table, polled, &progress);
                table.polling = false;
                table.last_poll = Some(Instant::now());
                self.changed.notify_all();
                continue;
            }
            // Short waits keep Ctrl-C prompt while another stage polls.
            let pause = due.clamp(Duration::from_millis(10), Duration::from_millis(200));
            table = match self.changed.wait_timeout(table, pause) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Takes in one poll's answer.
    fn record(
        &self,
        table: &mut Table,
        polled: Result<HashMap<String, (String, String)>, String>,
        progress: &dyn Fn(&str),
    ) {
        let rows = match polled {
            Ok(rows) => {
                table.failing = None;
                rows
            }
            Err(message) => {
                let since = table
                    .failing
                    .as_ref()
                    .map_or_else(Instant::now, |(since, _)| *since);
                if since.elapsed() >= SQUEUE_FAILING_LIMIT {
                    for job in table.jobs.values_mut().filter(|j| j.end.is_none()) {
                        job.end = Some(JobEnd::Failed {
                            state: "UNKNOWN".to_string(),
                            reason: format!("squeue kept failing: {message}"),
                        });
                    }
                }
                table.failing = Some((since, message));
                return;
            }
        };
        let mut lost = Vec::new();
        for (id, job) in table.jobs.iter_mut().filter(|(_, j)| j.end.is_none()) {
            match rows.get(id) {
                Some((state, reason)) => {
                    job.misses = 0;
                    job.state = state.clone();
                    job.reason = reason.clone();
                    job.end = job_end(state, reason);
                }
                None => {
                    job.misses += 1;
                    if job.misses >= MISSES_BEFORE_LOST {
                        lost.push(id.clone());
                    }
                }
            }
        }
        if !lost.is_empty() {
            let known = sacct(&lost);
            for id in lost {
                let Some(job) = table.jobs.get_mut(&id) else {
                    continue;
                };
                job.end = Some(match known.get(&id) {
                    Some(state) => job_end(state, "").unwrap_or(JobEnd::Failed {
                        state: state.clone(),
                        reason: "sacct reports it still active, squeue does not list it"
                            .to_string(),
                    }),
                    None => JobEnd::Failed {
                        state: "UNKNOWN".to_string(),
                        reason: "neither squeue nor sacct knows the job any more".to_string(),
                    },
                });
            }
        }
        let counts = counts(table);
        if counts != table.shown {
            table.shown = counts;
            progress(&format!(
                "slurm jobs: {} pending, {} running, {} done",
                counts.0, counts.1, counts.2
            ));
        }
    }

    /// Cancels every job of the run that has not ended (one scancel call).
    fn cancel_unfinished(&self) {
        let ids: Vec<String> = lock(&self.table)
            .jobs
            .iter()
            .filter(|(_, j)| j.end.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !ids.is_empty() {
            scancel(&ids);
        }
    }

    /// The last lines of a stage's job log (or why there are none).
    pub fn log_tail(&self, stage: &StageId) -> String {
        let path = self.log_path(stage);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(LOG_TAIL_LINES);
                format!(
                    "last lines of {}:\n{}",
                    path.display(),
                    lines[start..].join("\n")
                )
            }
            Err(e) => format!(
                "its log {} cannot be read here ({e}): is the project folder shared with the nodes?",
                path.display()
            ),
        }
    }

    /// Removes temp folders a killed job left in the cache (only those no live process holds).
    pub fn sweep(&self, store: &CacheStore) {
        let _ = store.remove_stale_temps();
    }
}

impl Drop for SlurmBackend {
    /// A run that ends (or unwinds) leaves no job of its own behind.
    fn drop(&mut self) {
        self.cancel_unfinished();
    }
}

/// (pending, running, done) among the run's jobs.
fn counts(table: &Table) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for job in table.jobs.values() {
        if job.end.is_some() {
            counts.2 += 1;
        } else if job.state == "RUNNING" || job.state == "COMPLETING" {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    counts
}

/// The end a Slurm state means, `None` while the job is still queued or running.
fn job_end(state: &str, reason: &str) -> Option<JobEnd> {
    // sacct may print `CANCELLED by 0`.
    let word = state.split_whitespace().next().unwrap_or("");
    match word {
        "COMPLETED" => Some(JobEnd::Completed),
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED"
        | "RESV_DEL_HOLD" => None,
        _ => Some(JobEnd::Failed {
            state: word.to_string(),
            reason: reason.to_string(),
        }),
    }
}

/// One squeue call for the given jobs (id, name): id → (state, reason).
fn squeue(jobs: &[(String, String)]) -> Result<HashMap<String, (String, String)>, String> {
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<&str> = jobs
        .iter()
        .map(|(_, n)| n.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let output = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-n"])
        .arg(names.join(","))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut cells = line.trim().splitn(3, '|');
            let id = cells.next()?.to_string();
            let state = cells.next()?.to_string();
            let reason = cells.next().unwrap_or("").to_string();
            Some((id, (state, reason)))
        })
        .collect())
}

/// States sacct knows for these jobs; empty when sacct is missing or has no database.
fn sacct(ids: &[String]) -> HashMap<String, String> {
    let output = Command::new("sacct")
        .args(["-n", "-X", "-P", "-o", "JobID,State", "-j"])
        .arg(ids.join(","))
        .stdin(Stdio::null())
        .output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once('|')?;
            Some((id.to_string(), state.to_string()))
        })
        .collect()
}

fn scancel(ids: &[String]) {
    let _ = Command::new("scancel")
        .args(ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The Slurm client commands the executor runs are all on PATH.
pub fn check_commands() -> Result<(), String> {
    for command in COMMANDS {
        if find_on_path(command).is_none() {
            return Err(format!(
                "the slurm executor needs `{command}`, which is not on PATH"
            ));
        }
    }
    Ok(())
}

fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

/// Single-quoted for sh.
fn shell_quote(text: &OsStr) -> String {
    format!("'{}'", text.to_string_lossy().replace('\'', r"'\''"))
}

/// Why `gpl exec-stage` could not start the stage.
#[derive(Debug)]
pub struct JobSetupError(pub String);

/// Reads a job file after checking this node sees the run's marker: the project root, and
/// the job.
pub fn read_job(job_path: &Path, token: &str) -> Result<(PathBuf, JobFile), JobSetupError> {
    let run_dir = job_path.parent().unwrap_or(Path::new("."));
    let marker = marker_path(run_dir);
    let not_shared = |what: String| {
        JobSetupError(format!(
            "{what}: this node does not see the project folder the run was started in. \
             The project folder (its .gpl/ cache) must be on a filesystem every node mounts \
             at the same path"
        ))
    };
    match fs::read_to_string(&marker) {
        Ok(text) if text == token => {}
        Ok(_) => {
            return Err(not_shared(format!(
                "the marker file {} holds another run's token",
                marker.display()
            )))
        }
        Err(e) => {
            return Err(not_shared(format!(
                "cannot read the run's marker file {} ({e})",
                marker.display()
            )))
        }
    }
    // <root>/.gpl/slurm/<run>/<stage>.json
    let root = run_dir
        .ancestors()
        .nth(3)
        .filter(|r| r.join(".gpl").is_dir())
        .ok_or_else(|| {
            JobSetupError(format!(
                "{} is not inside a project's .gpl/slurm/ folder",
                job_path.display()
            ))
        })?
        .to_path_buf();
    let bytes = fs::read(job_path)
        .map_err(|e| JobSetupError(format!("cannot read {}: {e}", job_path.display())))?;
    let job: JobFile = serde_json::from_slice(&bytes)
        .map_err(|e| JobSetupError(format!("{} does not parse: {e}", job_path.display())))?;
    if job.token != token {
        return Err(JobSetupError(format!(
            "{} belongs to another run",
            job_path.display()
        )));
    }
    Ok((root, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_the_kind_defaults_and_extra_arguments_add_up() {
        let mut options = SlurmOptions::new("/bin/gpl");
        options.per_kind.insert(
            "train".to_string(),
            Resources {
                time: Some("24:00:00".to_string()),
                cpus: Some(4),
                extra: vec!["--gres=gpu:1".to_string()],
                ..Resources::default()
            },
        );
        options.overrides = Resources {
            cpus: Some(1),
            partition: Some("short".to_string()),
            extra: vec!["--qos=low".to_string()],
            ..Resources::default()
        };
        assert_eq!(
            options.resources("train").sbatch_args(),
            [
                "--partition=short",
                "--time=24:00:00",
                "--cpus-per-task=1",
                "--gres=gpu:1",
                "--qos=low"
            ]
        );
        assert_eq!(
            options.resources("report").sbatch_args(),
            ["--partition=short", "--cpus-per-task=1", "--qos=low"]
        );
    }

    #[test]
    fn slurm_states_map_to_ends() {
        assert_eq!(job_end("RUNNING", "None"), None);
        assert_eq!(job_end("PENDING", "Resources"), None);
        assert_eq!(job_end("COMPLETED", "None"), Some(JobEnd::Completed));
        assert_eq!(
            job_end("TIMEOUT", "TimeLimit"),
            Some(JobEnd::Failed {
                state: "TIMEOUT".to_string(),
                reason: "TimeLimit".to_string()
            })
        );
        assert_eq!(
            job_end("CANCELLED by 0", ""),
            Some(JobEnd::Failed {
                state: "CANCELLED".to_string(),
                reason: String::new()
            })
        );
    }

    #[test]
    fn a_job_without_the_runs_marker_says_the_folder_is_not_shared() {
        let root = tempfile::tempdir().unwrap();
        let run_dir = root.path().join(".gpl/slurm/r1");
        fs::create_dir_all(&run_dir).unwrap();
        let error = read_job(&run_dir.join("a.json"), "t").unwrap_err();
        assert!(
            error.0.contains("does not see the project folder"),
            "{}",
            error.0
        );
        fs::write(marker_path(&run_dir), "other").unwrap();
        let error = read_job(&run_dir.join("a.json"), "t").unwrap_err();
        assert!(error.0.contains("another run's token"), "{}", error.0);
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote(OsStr::new("a'b c")), r"'a'\''b c'");
    }
}
