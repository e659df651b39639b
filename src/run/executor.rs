//! The contract between the runner and stage kinds: a [`StageExecutor`] computes one stage
//! from a [`StageContext`] (its spec, where to write, where its inputs are, progress,
//! cancellation, messages); a [`Registry`] maps each kind to its executor.

use super::control::RunControl;
use super::events::{EventKind, EventLog};
use super::progress::{Progress, StageProgress};
use crate::plan::fingerprint::lock;
use crate::plan::{Fingerprint, Plan, StageId, StageSpec};
use miette::Diagnostic;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Why a stage did not produce its outputs.
#[derive(Debug, Error, Diagnostic)]
pub enum StageError {
    #[error("cancelled")]
    #[diagnostic(code(gpl::run::cancelled))]
    Cancelled,

    #[error("{message}")]
    #[diagnostic(code(gpl::run::stage_failed))]
    Failed { message: String },

    #[error("{}: {source}", path.display())]
    #[diagnostic(code(gpl::run::io))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StageError {
    pub fn failed(message: impl std::fmt::Display) -> Self {
        StageError::Failed {
            message: message.to_string(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StageError {
        let path = path.into();
        move |source| StageError::Io { path, source }
    }
}

/// Computes one kind of stage. Executors are shared between threads: keep per-run state in
/// the context's folders, not in `self`.
pub trait StageExecutor: Send + Sync {
    /// Writes the stage's outputs under `ctx.out_dir()` (files meant for people under
    /// `ctx.public_dir()`). Must be deterministic given the spec and the inputs' outputs;
    /// should call `ctx.check_cancelled()?` at safe points (between epochs, batches, files).
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError>;
}

/// Kind name → executor.
#[derive(Clone, Default)]
pub struct Registry {
    executors: HashMap<String, Arc<dyn StageExecutor>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn register(
        &mut self,
        kind: impl Into<String>,
        executor: Arc<dyn StageExecutor>,
    ) -> &mut Self {
        self.executors.insert(kind.into(), executor);
        self
    }

    pub fn with(mut self, kind: impl Into<String>, executor: impl StageExecutor + 'static) -> Self {
        self.register(kind, Arc::new(executor));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StageExecutor>> {
        self.executors.get(kind)
    }

    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.executors.keys().map(String::as_str).collect();
        kinds.sort();
        kinds
    }

    /// The first stage (in plan order) among `selected` whose kind has no executor.
    pub fn first_missing<'a>(
        &self,
        plan: &'a Plan,
        selected: impl Fn(&StageId) -> bool,
    ) -> Option<&'a StageSpec> {
        plan.stages()
            .find(|s| selected(&s.id) && !self.executors.contains_key(&s.kind))
    }
}

/// Where a running stage's warnings and notices go: the terminal, the event log, the summary.
pub(crate) struct Messages {
    pub progress: Progress,
    pub log: Arc<EventLog>,
    pub warnings: Mutex<Vec<String>>,
}

impl Messages {
    pub fn warn(&self, stage: Option<&StageId>, message: &str) {
        let line = match stage {
            Some(id) => format!("warning: {id}: {message}"),
            None => format!("warning: {message}"),
        };
        self.progress.println(&line);
        self.log
            .emit(EventKind::Warning, stage, None, None, Some(message));
        lock(&self.warnings).push(line);
    }

    pub fn notice(&self, stage: Option<&StageId>, message: &str) {
        let line = match stage {
            Some(id) => format!("{id}: {message}"),
            None => message.to_string(),
        };
        self.progress.println(&line);
        self.log
            .emit(EventKind::Notice, stage, None, None, Some(message));
    }
}

/// What an executor sees of the run.
pub struct StageContext<'a> {
    pub(crate) spec: &'a StageSpec,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) root: PathBuf,
    pub(crate) out_dir: PathBuf,
    pub(crate) public_dir: PathBuf,
    pub(crate) scratch_dir: PathBuf,
    pub(crate) inputs: BTreeMap<StageId, PathBuf>,
    pub(crate) progress: StageProgress,
    pub(crate) control: Arc<RunControl>,
    pub(crate) messages: Option<Arc<Messages>>,
}

impl<'a> StageContext<'a> {
    /// A context outside any run (for testing an executor directly): `out_dir` gets a
    /// `public/` folder, messages go to stderr, nothing is ever cancelled.
    pub fn standalone(
        spec: &'a StageSpec,
        root: &Path,
        out_dir: &Path,
        scratch_dir: &Path,
        inputs: BTreeMap<StageId, PathBuf>,
    ) -> std::io::Result<StageContext<'a>> {
        let public_dir = out_dir.join(super::cache::PUBLIC_DIR);
        std::fs::create_dir_all(&public_dir)?;
        std::fs::create_dir_all(scratch_dir)?;
        Ok(StageContext {
            spec,
            fingerprint: crate::plan::stage_fingerprint(spec, &[], &[]),
            root: root.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            public_dir,
            scratch_dir: scratch_dir.to_path_buf(),
            inputs,
            progress: StageProgress::hidden(),
            control: Arc::new(RunControl::new()),
            messages: None,
        })
    }

    pub fn spec(&self) -> &StageSpec {
        self.spec
    }

    pub fn id(&self) -> &StageId {
        &self.spec.id
    }

    pub fn config(&self) -> &serde_json::Value {
        &self.spec.config
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The project root: relative paths in the spec (its `files`) are relative to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A spec path resolved against the project root.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// Where the outputs go (a temp folder that becomes the cache entry on commit).
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Outputs for people (reports, plots, metrics): inside `out_dir`, and mirrored to
    /// `runs/<pipeline>/<stage>/` after commit.
    pub fn public_dir(&self) -> &Path {
        &self.public_dir
    }

    /// `.gpl/scratch/<fingerprint>/`: survives a killed run (checkpoints to resume from);
    /// removed once the stage commits.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }

    /// The committed outputs of one of this stage's inputs.
    pub fn input_dir(&self, id: &StageId) -> Result<&Path, StageError> {
        self.inputs.get(id).map(PathBuf::as_path).ok_or_else(|| {
            StageError::failed(format!(
                "stage '{}' asked for '{id}', which is not one of its inputs",
                self.spec.id
            ))
        })
    }

    /// The inputs' output folders in `spec.inputs` order.
    pub fn input_dirs(&self) -> Vec<&Path> {
        self.spec
            .inputs
            .iter()
            .filter_map(|id| self.inputs.get(id).map(PathBuf::as_path))
            .collect()
    }

    pub fn progress(&self) -> &StageProgress {
        &self.progress
    }

    /// True once this stage should stop (Ctrl-C, or watch restarting it).
    pub fn cancelled(&self) -> bool {
        self.control.is_cancelled(&self.spec.id)
    }

    /// `Err(StageError::Cancelled)` once this stage should stop: `ctx.check_cancelled()?`.
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.cancelled() {
            Err(StageError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A warning: printed, logged, and repeated in the run summary.
    pub fn warn(&self, message: impl AsRef<str>) {
        match &self.messages {
            Some(m) => m.warn(Some(&self.spec.id), message.as_ref()),
            None => eprintln!("warning: {}: {}", self.spec.id, message.as_ref()),
        }
    }

    /// An informational line (printed above the progress bars, and logged).
    pub fn notice(&self, message: impl AsRef<str>) {
        match &self.messages {
            Some(m) => m.notice(Some(&self.spec.id), message.as_ref()),
            None => eprintln!("{}: {}", self.spec.id, message.as_ref()),
        }
    }
}
