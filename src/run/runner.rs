//! The scheduler: runs a plan in topological order, independent stages in parallel (at most
//! `jobs` at once), loading cached stages and executing dirty ones, and commits each result
//! atomically. A failed stage stops its downstream; the others go on.
//!
//! Fingerprints resolve during the run: a stage's key needs its inputs' output digests, which
//! are known once the inputs ran or were found in the cache (early cutoff).

use super::cache::{
    mirror_public, CacheStore, CommitInfo, FileRead, Lookup, Manifest, ManifestInput, Verify,
};
use super::control::RunControl;
use super::events::{EventKind, EventLog};
use super::executor::{Messages, Registry, StageContext, StageError};
use super::lock::{FileLock, LockMode};
use super::progress::{Progress, ProgressMode};
use super::slurm::{JobEnd, JobFile, JobInput, SlurmBackend, SlurmOptions};
use crate::plan::fingerprint::unique_suffix;
use crate::plan::{
    stage_fingerprint, ContentHash, FileHasher, Fingerprint, Plan, PlanError, StageId, StageSpec,
};
use miette::Diagnostic;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Problems found before any stage runs.
#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    #[error(
        "{} has kind '{kind}', which gpl cannot run yet",
        describe_stage(stage, label)
    )]
    #[diagnostic(code(gpl::run::no_executor), help("runnable kinds: {known}"))]
    NoExecutor {
        stage: StageId,
        kind: String,
        label: Option<String>,
        known: String,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] PlanError),

    #[error("cannot use the cache folder {}: {source}", path.display())]
    #[diagnostic(
        code(gpl::run::cache_io),
        help("check that the project folder is writable")
    )]
    CacheIo {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{message}")]
    #[diagnostic(
        code(gpl::run::slurm),
        help("`--executor slurm` submits stages with sbatch and polls them with squeue; run it where the Slurm client commands work, or use `--executor local`")
    )]
    Slurm { message: String },

    #[error("cannot watch files: {message}")]
    #[diagnostic(
        code(gpl::run::watch),
        help("on Linux, raising fs.inotify.max_user_watches may help")
    )]
    Watch { message: String },
}

fn describe_stage(stage: &StageId, label: &Option<String>) -> String {
    match label {
        Some(l) => format!("stage '{stage}' ({l})"),
        None => format!("stage '{stage}'"),
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The project root: `.gpl/` and `runs/` live here, spec files are relative to it.
    pub root: PathBuf,
    /// Names `runs/<pipeline>/`.
    pub pipeline: String,
    /// Stages executing at once; 0 means one per core.
    pub jobs: usize,
    /// Run only this stage and the ancestors it needs.
    pub only: Option<StageId>,
    /// Re-execute this stage and everything downstream even if cached.
    pub from: Option<StageId>,
    /// Re-execute everything.
    pub force: bool,
    pub verify: Verify,
    pub progress: ProgressMode,
    pub control: Arc<RunControl>,
    /// Where dirty stages are computed.
    pub executor: Executor,
}

/// Where a run computes its dirty stages.
#[derive(Clone, Debug, Default)]
pub enum Executor {
    /// In this process, `jobs` at a time.
    #[default]
    Local,
    /// As Slurm jobs on a cache every node shares (`run::slurm`).
    Slurm(Arc<SlurmOptions>),
}

impl RunOptions {
    pub fn new(root: impl Into<PathBuf>, pipeline: impl Into<String>) -> RunOptions {
        RunOptions {
            root: root.into(),
            pipeline: pipeline.into(),
            jobs: 0,
            only: None,
            from: None,
            force: false,
            verify: Verify::Quick,
            progress: ProgressMode::Auto,
            control: Arc::new(RunControl::new()),
            executor: Executor::Local,
        }
    }

    /// Locally one stage per core by default; on Slurm every ready stage is submitted (the
    /// cluster queues them) unless `jobs` caps the jobs in flight.
    fn effective_jobs(&self, stages: usize) -> usize {
        match (self.jobs, &self.executor) {
            (0, Executor::Local) => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            (0, Executor::Slurm(_)) => stages.max(1),
            (n, _) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StageStatus {
    Cached,
    Ran,
    Failed(String),
    Cancelled,
    /// Not started: an input failed, or the run was stopped.
    Skipped(String),
}

impl StageStatus {
    pub fn label(&self) -> &'static str {
        match self {
            StageStatus::Cached => "cached",
            StageStatus::Ran => "ran",
            StageStatus::Failed(_) => "failed",
            StageStatus::Cancelled => "cancelled",
            StageStatus::Skipped(_) => "skipped",
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, StageStatus::Cached | StageStatus::Ran)
    }
}

#[derive(Clone, Debug)]
pub struct StageOutcome {
    pub id: StageId,
    pub kind: String,
    pub status: StageStatus,
    pub seconds: f64,
    pub fingerprint: Option<Fingerprint>,
    pub output_digest: Option<ContentHash>,
}

#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    /// Selected stages in plan order.
    pub stages: Vec<StageOutcome>,
    pub warnings: Vec<String>,
    pub interrupted: bool,
    pub seconds: f64,
}

impl RunSummary {
    pub fn stage(&self, id: &str) -> Option<&StageOutcome> {
        self.stages.iter().find(|s| s.id.as_str() == id)
    }

    pub fn succeeded(&self) -> bool {
        self.stages.iter().all(|s| s.status.is_ok())
    }

    /// Ids of the stages with a given status label (`"ran"`, `"cached"`, ...).
    pub fn with_status(&self, label: &str) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| s.status.label() == label)
            .map(|s| s.id.as_str())
            .collect()
    }

    /// 0 all stages succeeded, 130 interrupted by Ctrl-C, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.succeeded() {
            0
        } else {
            1
        }
    }

    /// The table printed at the end of `gpl run`.
    pub fn render_table(&self) -> String {
        let id_width = self
            .stages
            .iter()
            .map(|s| s.id.as_str().len())
            .max()
            .unwrap_or(0)
            .max(5);
        let kind_width = self
            .stages
            .iter()
            .map(|s| s.kind.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:id_width$}  {:kind_width$}  {:9}  {:>8}",
            "stage", "kind", "status", "seconds"
        );
        for s in &self.stages {
            let _ = write!(
                out,
                "{:id_width$}  {:kind_width$}  {:9}  {:>8.2}",
                s.id.as_str(),
                s.kind,
                s.status.label(),
                s.seconds
            );
            match &s.status {
                StageStatus::Failed(m) | StageStatus::Skipped(m) => {
                    let _ = write!(out, "  {}", m.lines().next().unwrap_or(""));
                }
                _ => {}
            }
            out.push('\n');
        }
        let count = |label: &str| {
            self.stages
                .iter()
                .filter(|s| s.status.label() == label)
                .count()
        };
        let _ = write!(
            out,
            "{} stages: {} ran, {} cached, {} failed in {:.2} s",
            self.stages.len(),
            count("ran"),
            count("cached"),
            count("failed"),
            self.seconds
        );
        let other = count("cancelled") + count("skipped");
        if other > 0 {
            let _ = write!(out, " ({} cancelled or skipped)", other);
        }
        if self.interrupted {
            out.push_str(" — interrupted");
        }
        out.push('\n');
        out
    }
}

/// A stage that ran or was found cached: what its dependents need.
#[derive(Clone, Debug)]
struct Resolved {
    fingerprint: Fingerprint,
    digest: ContentHash,
    out_dir: PathBuf,
    /// The entry's shared lock, held until the run ends (the scheduler drops the last copy),
    /// so no other process removes the entry while this run's stages may still read it.
    _lock: Arc<FileLock>,
}

/// The stages a run touches: `--only X` is X and its ancestors.
fn selected_stages(plan: &Plan, only: Option<&StageId>) -> Result<HashSet<StageId>, PlanError> {
    match only {
        Some(id) => {
            plan.require(id)?;
            let mut set: HashSet<StageId> = plan.ancestors(id).into_iter().collect();
            set.insert(id.clone());
            Ok(set)
        }
        None => Ok(plan.stages().map(|s| s.id.clone()).collect()),
    }
}

/// Computes a stage's fingerprint from its inputs' digests and the files it reads.
pub(crate) fn resolve_fingerprint(
    spec: &StageSpec,
    input_digests: &[(StageId, ContentHash)],
    hasher: &FileHasher,
    root: &Path,
) -> Result<(Fingerprint, Vec<FileRead>), String> {
    let mut files = Vec::with_capacity(spec.files.len());
    for file in &spec.files {
        let path = root.join(file);
        let hash = hasher
            .hash(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files.push(FileRead {
            path: file.clone(),
            hash,
        });
    }
    let pairs: Vec<(PathBuf, ContentHash)> = files
        .iter()
        .map(|f| (f.path.clone(), f.hash.clone()))
        .collect();
    Ok((stage_fingerprint(spec, input_digests, &pairs), files))
}

pub(crate) fn file_hash_store(root: &Path) -> PathBuf {
    root.join(".gpl").join("filehash.json")
}

/// Runs `plan`. Errors are only what prevents starting; stage failures are in the summary.
pub fn run_plan(
    plan: &Plan,
    registry: &Registry,
    options: &RunOptions,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let selected = selected_stages(plan, options.only.as_ref())?;
    let mut forced: HashSet<StageId> = HashSet::new();
    if let Some(from) = &options.from {
        plan.require(from)?;
        forced.insert(from.clone());
        forced.extend(plan.descendants(from));
    }
    if options.force {
        forced.extend(selected.iter().cloned());
    }
    if let Some(spec) = registry.first_missing(plan, |id| selected.contains(id)) {
        return Err(RunError::NoExecutor {
            stage: spec.id.clone(),
            kind: spec.kind.clone(),
            label: spec.label.clone(),
            known: registry.kinds().join(", "),
        });
    }

    // Before anything is written: a run that cannot reach Slurm starts nothing.
    if let Executor::Slurm(_) = &options.executor {
        super::slurm::check_commands().map_err(|message| RunError::Slurm { message })?;
    }
    let store = CacheStore::open(&options.root).map_err(|source| RunError::CacheIo {
        path: options.root.join(".gpl"),
        source,
    })?;
    let leftovers = store
        .remove_stale_temps()
        .map_err(|source| RunError::CacheIo {
            path: store.cache_dir(),
            source,
        })?;
    let hasher = FileHasher::load(&file_hash_store(&options.root));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!("{now}-{}-{}", std::process::id(), unique_suffix());
    let log = Arc::new(EventLog::open(&options.root, &run_id, &options.pipeline));
    let messages = Arc::new(Messages {
        progress: Progress::new(options.progress),
        log: log.clone(),
        warnings: Default::default(),
    });
    log.emit(
        EventKind::RunStarted,
        None,
        None,
        None,
        Some(&options.pipeline),
    );
    if leftovers > 0 {
        messages.notice(
            None,
            &format!("removed {leftovers} unfinished cache folder(s) left by an interrupted run"),
        );
    }

    let slurm = match &options.executor {
        Executor::Local => None,
        Executor::Slurm(slurm) => Some(
            SlurmBackend::start(slurm, &options.root, &run_id)
                .map_err(|message| RunError::Slurm { message })?,
        ),
    };
    let worker = Worker {
        registry,
        store: &store,
        hasher: &hasher,
        messages: messages.clone(),
        options,
        runs_dir: Path::new("runs").join(crate::plan::spec::safe_file_name(&options.pipeline)),
        slurm: slurm.as_ref(),
        publish: true,
    };
    let outcomes = schedule(plan, &selected, &forced, &worker, options);
    // Jobs still queued (a stage thread that unwound) are cancelled here.
    drop(slurm);

    if let Err(e) = hasher.save() {
        messages.warn(None, &format!("cannot save the file hash memo: {e}"));
    }
    let mut stages = Vec::with_capacity(selected.len());
    let mut outcomes = outcomes;
    for spec in plan.stages().filter(|s| selected.contains(&s.id)) {
        let outcome = outcomes.remove(&spec.id).unwrap_or_else(|| {
            let reason = if options.control.scheduling_stopped() {
                "the run was stopped".to_string()
            } else {
                "an input did not complete".to_string()
            };
            log.emit(
                EventKind::StageSkipped,
                Some(&spec.id),
                None,
                None,
                Some(&reason),
            );
            StageOutcome {
                id: spec.id.clone(),
                kind: spec.kind.clone(),
                status: StageStatus::Skipped(reason),
                seconds: 0.0,
                fingerprint: None,
                output_digest: None,
            }
        });
        stages.push(outcome);
    }
    let summary = RunSummary {
        run_id,
        pipeline: options.pipeline.clone(),
        stages,
        warnings: std::mem::take(&mut *crate::plan::fingerprint::lock(&messages.warnings)),
        interrupted: super::control::interrupted(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let failed = summary.stages.iter().filter(|s| !s.status.is_ok()).count();
    log.emit(
        EventKind::RunFinished,
        None,
        None,
        Some(summary.seconds),
        Some(&format!(
            "{} stages, {failed} not completed",
            summary.stages.len()
        )),
    );
    Ok(summary)
}

/// Dispatches ready stages to scoped threads and collects their outcomes.
fn schedule(
    plan: &Plan,
    selected: &HashSet<StageId>,
    forced: &HashSet<StageId>,
    worker: &Worker<'_>,
    options: &RunOptions,
) -> HashMap<StageId, StageOutcome> {
    let jobs = options.effective_jobs(selected.len());
    let mut waiting_on: HashMap<&StageId, usize> = HashMap::new();
    let mut ready: BTreeSet<(usize, &StageId)> = BTreeSet::new();
    for (position, spec) in plan.stages().enumerate() {
        if !selected.contains(&spec.id) {
            continue;
        }
        let distinct: BTreeSet<&StageId> = spec.inputs.iter().collect();
        waiting_on.insert(&spec.id, distinct.len());
        if distinct.is_empty() {
            ready.insert((position, &spec.id));
        }
    }
    let mut resolved: HashMap<StageId, Resolved> = HashMap::new();
    let mut outcomes: HashMap<StageId, StageOutcome> = HashMap::new();

    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel::<(StageOutcome, Option<Resolved>)>();
        let mut running = 0usize;
        loop {
            while running < jobs && !options.control.scheduling_stopped() {
                let Some((_, id)) = ready.pop_first() else {
                    break;
                };
                // Every stage in `ready` comes from the plan, and its inputs are resolved.
                let Some(spec) = plan.get(id) else { continue };
                let inputs: Vec<(StageId, Resolved)> = spec
                    .inputs
                    .iter()
                    .filter_map(|i| resolved.get(i).map(|r| (i.clone(), r.clone())))
                    .collect();
                let force = forced.contains(id);
                let sender = sender.clone();
                scope.spawn(move || {
                    // Executor panics are caught inside run_stage; this catches the runner's
                    // own, so the scheduler always hears back and never waits forever.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.run_stage(spec, &inputs, force)
                    }))
                    .unwrap_or_else(|_| {
                        let outcome = StageOutcome {
                            id: spec.id.clone(),
                            kind: spec.kind.clone(),
                            status: StageStatus::Failed(
                                "internal error in the runner (panic)".to_string(),
                            ),
                            seconds: 0.0,
                            fingerprint: None,
                            output_digest: None,
                        };
                        (outcome, None)
                    });
                    // The receiver lives until every worker has reported.
                    let _ = sender.send(result);
                });
                running += 1;
            }
            if running == 0 {
                break;
            }
            // Workers always send exactly one message, even when the executor panics.
            let Ok((outcome, result)) = receiver.recv() else {
                break;
            };
            running -= 1;
            if let Some(result) = result {
                for dependent in plan.dependents(&outcome.id) {
                    if let Some(count) = waiting_on.get_mut(dependent) {
                        *count -= 1;
                        if *count == 0 {
                            let position = plan.position(dependent).unwrap_or(usize::MAX);
                            ready.insert((position, dependent));
                        }
                    }
                }
                resolved.insert(outcome.id.clone(), result);
            }
            outcomes.insert(outcome.id.clone(), outcome);
        }
    });
    outcomes
}

struct Worker<'a> {
    registry: &'a Registry,
    store: &'a CacheStore,
    hasher: &'a FileHasher,
    messages: Arc<Messages>,
    options: &'a RunOptions,
    /// `runs/<pipeline>`, relative to the project root.
    runs_dir: PathBuf,
    /// Dirty stages go to Slurm jobs instead of this process.
    slurm: Option<&'a SlurmBackend>,
    /// Mirror public files to `runs/` (a Slurm job leaves that to its run).
    publish: bool,
}

impl Worker<'_> {
    /// Finds the stage in the cache or computes it. Another process may be computing,
    /// replacing or removing the same entry: its lock orders this run after it, and an entry
    /// another process committed meanwhile counts as cached (docs/decisions.md, "Concurrent
    /// runs share the cache through entry locks").
    fn run_stage(&self, spec: &StageSpec, inputs: &[(StageId, Resolved)], force: bool) -> Done {
        let run = StageRun {
            worker: self,
            spec,
            started: Instant::now(),
        };
        let digests: Vec<(StageId, ContentHash)> = inputs
            .iter()
            .map(|(id, r)| (id.clone(), r.digest.clone()))
            .collect();
        let (fp, files_read) =
            match resolve_fingerprint(spec, &digests, self.hasher, &self.options.root) {
                Ok(x) => x,
                Err(message) => return run.fail(message, None),
            };

        let mut force = force;
        let mut ran = false;
        loop {
            if !force {
                let shared = match run.lock(&fp, LockMode::Shared) {
                    Ok(lock) => lock,
                    Err(done) => return *done,
                };
                match self.store.lookup(&fp, self.options.verify) {
                    Lookup::Hit(manifest) => return run.completed(&fp, &manifest, shared, ran),
                    // Committed a moment ago and already gone or damaged: do not loop on it.
                    Lookup::Miss if ran => {
                        return run.fail(
                            format!("its cache entry {} vanished after its commit", fp.short()),
                            Some(&fp),
                        )
                    }
                    Lookup::Invalid(reason) if ran => {
                        return run.fail(
                            format!(
                                "its cache entry {} is bad after its commit: {reason}",
                                fp.short()
                            ),
                            Some(&fp),
                        )
                    }
                    Lookup::Miss | Lookup::Invalid(_) => drop(shared),
                }
            }
            if let Some(slurm) = self.slurm {
                // The job takes the entry's exclusive lock on its node, as a local run would.
                if let Err(done) = run.submit(slurm, &fp, inputs, force) {
                    return *done;
                }
                ran = true;
                force = false;
                continue;
            }
            let exclusive = match run.lock(&fp, LockMode::Exclusive) {
                Ok(lock) => lock,
                Err(done) => return *done,
            };
            if !force {
                match self.store.lookup(&fp, self.options.verify) {
                    // Another process committed it while this one waited: read it shared.
                    Lookup::Hit(_) => continue,
                    Lookup::Miss => {}
                    Lookup::Invalid(reason) => {
                        self.messages.warn(
                            Some(&spec.id),
                            &format!(
                                "cache entry {} cannot be trusted: {reason}; recomputing",
                                fp.short()
                            ),
                        );
                        if let Err(e) = self.store.remove_entry(&fp) {
                            return run.fail(
                                format!(
                                    "cannot remove the damaged cache entry {}: {e}",
                                    fp.short()
                                ),
                                Some(&fp),
                            );
                        }
                    }
                }
            }
            if let Err(done) = run.compute(&fp, inputs, &files_read) {
                return *done;
            }
            drop(exclusive);
            ran = true;
            force = false;
        }
    }

    /// Public files are a convenience copy: failing to mirror them is a warning. Processes
    /// publishing the same stage folder take turns (its publish lock).
    fn mirror(&self, spec: &StageSpec, fp: &Fingerprint, manifest: &Manifest) {
        if !self.publish {
            return;
        }
        let has_public = manifest
            .outputs
            .iter()
            .any(|o| o.path.starts_with("public/"));
        let relative = self.runs_dir.join(spec.id.file_name());
        let dest = self.options.root.join(&relative);
        if !has_public && !dest.exists() {
            return;
        }
        let mirrored = self.store.lock_publish(&relative).and_then(|_turn| {
            crate::fsutil::confined_dir(&self.options.root, &relative)
                .and_then(|dest| mirror_public(&self.store.out_dir(fp), manifest, &dest))
        });
        if let Err(e) = mirrored {
            self.messages.warn(
                Some(&spec.id),
                &format!("cannot copy its public files to {}: {e}", dest.display()),
            );
        }
    }
}

/// A stage's outcome and, when it completed, what its dependents need.
type Done = (StageOutcome, Option<Resolved>);

/// One stage while the worker runs it: the helpers that report on it.
struct StageRun<'w, 'a> {
    worker: &'w Worker<'a>,
    spec: &'w StageSpec,
    started: Instant,
}

impl StageRun<'_, '_> {
    fn outcome(
        &self,
        status: StageStatus,
        fp: Option<&Fingerprint>,
        digest: Option<&ContentHash>,
    ) -> StageOutcome {
        StageOutcome {
            id: self.spec.id.clone(),
            kind: self.spec.kind.clone(),
            status,
            seconds: self.started.elapsed().as_secs_f64(),
            fingerprint: fp.cloned(),
            output_digest: digest.cloned(),
        }
    }

    fn fail(&self, message: String, fp: Option<&Fingerprint>) -> Done {
        self.worker.messages.log.emit(
            EventKind::StageFailed,
            Some(&self.spec.id),
            fp,
            Some(self.started.elapsed().as_secs_f64()),
            Some(&message),
        );
        self.worker
            .messages
            .progress
            .println(&format!("error: {}: {message}", self.spec.id));
        (self.outcome(StageStatus::Failed(message), fp, None), None)
    }

    fn cancelled(&self, fp: &Fingerprint) -> Done {
        self.worker.messages.log.emit(
            EventKind::StageCancelled,
            Some(&self.spec.id),
            Some(fp),
            Some(self.started.elapsed().as_secs_f64()),
            None,
        );
        (self.outcome(StageStatus::Cancelled, Some(fp), None), None)
    }

    /// Takes the entry's lock. When another process holds it, says so (a line, a
    /// `stage_waiting` event, a spinner) and waits; cancelling the stage ends the wait.
    fn lock(&self, fp: &Fingerprint, mode: LockMode) -> Result<FileLock, Box<Done>> {
        let messages = &self.worker.messages;
        let control = &self.worker.options.control;
        let spinner = OnceCell::new();
        let waiting = || {
            let doing = match mode {
                LockMode::Shared => "writing",
                LockMode::Exclusive => "using",
            };
            let message = format!(
                "another gpl process is {doing} its cache entry {}; waiting for it",
                fp.short()
            );
            messages.log.emit(
                EventKind::StageWaiting,
                Some(&self.spec.id),
                Some(fp),
                None,
                Some(&message),
            );
            messages
                .progress
                .println(&format!("{}: {message}", self.spec.id));
            let bar = messages
                .progress
                .stage(&format!("{} [{}]", self.spec.id, self.spec.kind));
            bar.set_message("waiting for another gpl process");
            let _ = spinner.set(bar);
        };
        let locked = self
            .worker
            .store
            .lock_entry(fp, mode, waiting, || control.is_cancelled(&self.spec.id));
        if let Some(bar) = spinner.get() {
            bar.finish();
        }
        match locked {
            Ok(lock) => Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                Err(Box::new(self.cancelled(fp)))
            }
            Err(e) => Err(Box::new(self.fail(
                format!("cannot lock its cache entry {}: {e}", fp.short()),
                Some(fp),
            ))),
        }
    }

    /// The entry is in the cache and `shared` keeps it there while this run may read it.
    fn completed(
        &self,
        fp: &Fingerprint,
        manifest: &Manifest,
        shared: FileLock,
        ran: bool,
    ) -> Done {
        self.worker.mirror(self.spec, fp, manifest);
        let status = if ran {
            StageStatus::Ran
        } else {
            self.worker.messages.log.emit(
                EventKind::StageCached,
                Some(&self.spec.id),
                Some(fp),
                Some(self.started.elapsed().as_secs_f64()),
                None,
            );
            StageStatus::Cached
        };
        let resolved = Resolved {
            fingerprint: fp.clone(),
            digest: manifest.output_digest.clone(),
            out_dir: self.worker.store.out_dir(fp),
            _lock: Arc::new(shared),
        };
        (
            self.outcome(status, Some(fp), Some(&manifest.output_digest)),
            Some(resolved),
        )
    }

    /// Submits the stage as a Slurm job and waits for it to end; `Ok` once the job has
    /// committed the entry (the caller then reads it under its shared lock).
    fn submit(
        &self,
        slurm: &SlurmBackend,
        fp: &Fingerprint,
        inputs: &[(StageId, Resolved)],
        force: bool,
    ) -> Result<(), Box<Done>> {
        let worker = self.worker;
        let spec = self.spec;
        let control = &worker.options.control;
        if control.is_cancelled(&spec.id) {
            return Err(Box::new(self.cancelled(fp)));
        }
        let job_inputs = inputs
            .iter()
            .map(|(id, r)| JobInput {
                stage: id.clone(),
                fingerprint: r.fingerprint.clone(),
                digest: r.digest.clone(),
            })
            .collect();
        let id = slurm
            .submit(spec, fp, job_inputs, force, &worker.options.pipeline)
            .map_err(|message| Box::new(self.fail(message, Some(fp))))?;
        worker.messages.log.emit(
            EventKind::StageSubmitted,
            Some(&spec.id),
            Some(fp),
            None,
            Some(&format!("slurm job {id}")),
        );
        control.set_running(&spec.id, Some(fp));
        let bar = worker
            .messages
            .progress
            .stage(&format!("{} [{}]", spec.id, spec.kind));
        let end = slurm.wait(
            &id,
            || control.is_cancelled(&spec.id),
            |state| bar.set_message(format!("slurm job {id}: {}", state.to_lowercase())),
            |line| worker.messages.progress.println(line),
        );
        bar.finish();
        control.set_running(&spec.id, None);
        match end {
            JobEnd::Completed => match worker.store.lookup(fp, Verify::Quick) {
                Lookup::Hit(_) => Ok(()),
                Lookup::Miss => Err(Box::new(self.fail(
                    format!(
                        "slurm job {id} completed, but its cache entry {} is not in {} as this \
                         machine sees it: do the nodes share the project folder? {}",
                        fp.short(),
                        worker.store.cache_dir().display(),
                        slurm.log_tail(&spec.id)
                    ),
                    Some(fp),
                ))),
                Lookup::Invalid(reason) => Err(Box::new(self.fail(
                    format!(
                        "slurm job {id} completed, but its cache entry {} is bad: {reason}",
                        fp.short()
                    ),
                    Some(fp),
                ))),
            },
            JobEnd::Cancelled => Err(Box::new(self.cancelled(fp))),
            JobEnd::Failed { state, reason } => {
                // A job killed mid-stage leaves a temp folder, never an entry.
                slurm.sweep(worker.store);
                let why = if reason.is_empty() || reason == "None" {
                    state
                } else {
                    format!("{state} ({reason})")
                };
                Err(Box::new(self.fail(
                    format!("slurm job {id} ended {why}; {}", slurm.log_tail(&spec.id)),
                    Some(fp),
                )))
            }
        }
    }

    /// Executes the stage into a temp folder and commits it. The caller holds the entry's
    /// exclusive lock throughout, so the temp folder is never taken for a leftover.
    fn compute(
        &self,
        fp: &Fingerprint,
        inputs: &[(StageId, Resolved)],
        files_read: &[FileRead],
    ) -> Result<(), Box<Done>> {
        let worker = self.worker;
        let spec = self.spec;
        let log = &worker.messages.log;
        let control = &worker.options.control;
        if control.is_cancelled(&spec.id) {
            log.emit(
                EventKind::StageCancelled,
                Some(&spec.id),
                Some(fp),
                Some(0.0),
                None,
            );
            return Err(Box::new((
                self.outcome(StageStatus::Cancelled, Some(fp), None),
                None,
            )));
        }
        // Checked before the run started (Registry::first_missing).
        let Some(executor) = worker.registry.get(&spec.kind) else {
            return Err(Box::new(
                self.fail(format!("no executor for kind '{}'", spec.kind), Some(fp)),
            ));
        };
        let pending = worker.store.begin(fp).map_err(|e| {
            Box::new(self.fail(format!("cannot create a cache folder: {e}"), Some(fp)))
        })?;
        let scratch = worker.store.scratch_dir(fp);
        std::fs::create_dir_all(&scratch).map_err(|e| {
            Box::new(self.fail(
                format!("cannot create {}: {e}", scratch.display()),
                Some(fp),
            ))
        })?;

        log.emit(
            EventKind::StageStarted,
            Some(&spec.id),
            Some(fp),
            None,
            None,
        );
        control.set_running(&spec.id, Some(fp));
        let progress = worker
            .messages
            .progress
            .stage(&format!("{} [{}]", spec.id, spec.kind));
        let ctx = StageContext {
            spec,
            fingerprint: fp.clone(),
            root: worker.options.root.clone(),
            out_dir: pending.out_dir(),
            public_dir: pending.public_dir(),
            scratch_dir: scratch.clone(),
            inputs: inputs
                .iter()
                .map(|(id, r)| (id.clone(), r.out_dir.clone()))
                .collect::<BTreeMap<_, _>>(),
            progress: progress.clone(),
            control: control.clone(),
            messages: Some(worker.messages.clone()),
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| executor.execute(&ctx)));
        drop(ctx);
        progress.finish();
        control.set_running(&spec.id, None);

        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Some(StageError::failed(format!("the executor panicked: {text}")))
            }
        };
        if let Some(error) = error {
            // `pending` is dropped here: its temp folder is removed, nothing is committed.
            drop(pending);
            // Scratch is kept for a resume only when the stage left something in it.
            let _ = std::fs::remove_dir(&scratch);
            if matches!(error, StageError::Cancelled) || control.is_cancelled(&spec.id) {
                return Err(Box::new(self.cancelled(fp)));
            }
            return Err(Box::new(self.fail(error.to_string(), Some(fp))));
        }

        let info = CommitInfo {
            stage: spec.id.clone(),
            kind: spec.kind.clone(),
            inputs: inputs
                .iter()
                .map(|(id, r)| ManifestInput {
                    stage: id.clone(),
                    fingerprint: r.fingerprint.clone(),
                    output_digest: r.digest.clone(),
                })
                .collect(),
            files_read: files_read.to_vec(),
            seconds: self.started.elapsed().as_secs_f64(),
        };
        worker.store.commit(pending, info).map_err(|e| {
            Box::new(self.fail(
                format!("cannot commit its outputs to the cache: {e}"),
                Some(fp),
            ))
        })?;
        let _ = std::fs::remove_dir_all(&scratch);
        log.emit(
            EventKind::StageFinished,
            Some(&spec.id),
            Some(fp),
            Some(self.started.elapsed().as_secs_f64()),
            None,
        );
        Ok(())
    }
}

/// `gpl exec-stage` on a Slurm node: computes the one stage `job` describes into the shared
/// cache, through the same locks, commit and event log as a local run (its events carry the
/// submitting run's id). The inputs must be committed as the run saw them, and the stage's key
/// computed here must be the run's: a file read that differs on this node is refused.
pub fn run_job(root: &Path, job: &JobFile, registry: &Registry) -> Result<StageOutcome, RunError> {
    let store = CacheStore::open(root).map_err(|source| RunError::CacheIo {
        path: root.join(".gpl"),
        source,
    })?;
    let hasher = FileHasher::load(&file_hash_store(root));
    let messages = Arc::new(Messages {
        progress: Progress::new(ProgressMode::Hidden),
        log: Arc::new(EventLog::open(root, &job.run, &job.pipeline)),
        warnings: Default::default(),
    });
    let mut options = RunOptions::new(root, &job.pipeline);
    options.progress = ProgressMode::Hidden;
    let worker = Worker {
        registry,
        store: &store,
        hasher: &hasher,
        messages,
        options: &options,
        runs_dir: PathBuf::new(),
        slurm: None,
        publish: false,
    };
    let run = StageRun {
        worker: &worker,
        spec: &job.spec,
        started: Instant::now(),
    };
    if registry.get(&job.spec.kind).is_none() {
        return Ok(run
            .fail(
                format!("this gpl cannot run stage kind '{}'", job.spec.kind),
                Some(&job.fingerprint),
            )
            .0);
    }
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        let shared = match run.lock(&input.fingerprint, LockMode::Shared) {
            Ok(lock) => lock,
            Err(done) => return Ok(done.0),
        };
        match store.lookup(&input.fingerprint, options.verify) {
            Lookup::Hit(manifest) if manifest.output_digest == input.digest => inputs.push((
                input.stage.clone(),
                Resolved {
                    fingerprint: input.fingerprint.clone(),
                    digest: input.digest.clone(),
                    out_dir: store.out_dir(&input.fingerprint),
                    _lock: Arc::new(shared),
                },
            )),
            _ => {
                return Ok(run
                    .fail(
                        format!(
                            "its input '{}' (cache entry {}) is not in the cache as this node \
                             sees it",
                            input.stage,
                            input.fingerprint.short()
                        ),
                        Some(&job.fingerprint),
                    )
                    .0)
            }
        }
    }
    let digests: Vec<(StageId, ContentHash)> = job
        .inputs
        .iter()
        .map(|i| (i.stage.clone(), i.digest.clone()))
        .collect();
    match resolve_fingerprint(&job.spec, &digests, &hasher, root) {
        Ok((fp, _)) if fp == job.fingerprint => {}
        Ok((fp, _)) => {
            return Ok(run
                .fail(
                    format!(
                        "its key on this node is {} where the run computed {}: a file it reads \
                         differs here (changed since the run started, or not shared)",
                        fp.short(),
                        job.fingerprint.short()
                    ),
                    Some(&job.fingerprint),
                )
                .0)
        }
        Err(message) => return Ok(run.fail(message, Some(&job.fingerprint)).0),
    }
    Ok(worker.run_stage(&job.spec, &inputs, job.force).0)
}
