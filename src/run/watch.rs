//! `gpl watch`: re-plan on every save of a watched file, re-run what changed.
//!
//! A thin loop around [`run_plan`]: the caller's `reload` closure re-parses, re-checks and
//! re-plans (or returns rendered diagnostics, which are printed while watching goes on).
//! When a new plan arrives while a run is going, running stages whose fingerprint the new
//! plan no longer resolves to are cancelled, the rest of that run finishes without starting
//! new stages, and a fresh run of the new plan follows: stages that completed meanwhile are
//! cached in it, so only what the edit invalidated runs again.

use super::control::{interrupted, RunControl};
use super::executor::Registry;
use super::progress::ProgressMode;
use super::runner::{run_plan, RunError, RunOptions, RunSummary};
use super::status::plan_states;
use crate::plan::Plan;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the caller's reload closure produces.
pub struct Reload {
    pub plan: Plan,
    pub registry: Registry,
    /// Files (or folders) whose saves trigger a reload: the pipeline, its imports, data files.
    /// The files of the plan's stages are watched too. Relative paths are relative to the root.
    pub watch: Vec<PathBuf>,
}

pub struct WatchOptions {
    /// Root, pipeline, jobs, verification and progress for every run (its `control` is
    /// replaced per run).
    pub run: RunOptions,
    pub debounce: Duration,
    /// Set to end watching (tests); Ctrl-C ends it too.
    pub stop: Arc<AtomicBool>,
}

impl WatchOptions {
    pub fn new(run: RunOptions) -> WatchOptions {
        WatchOptions {
            run,
            debounce: Duration::from_millis(100),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

struct ActiveRun {
    control: Arc<RunControl>,
    handle: JoinHandle<Result<RunSummary, RunError>>,
}

/// Watches until `options.stop` is set or Ctrl-C.
pub fn watch<F>(reload: F, options: WatchOptions) -> Result<(), RunError>
where
    F: Fn() -> Result<Reload, String>,
{
    let root = options.run.root.clone();
    let quiet = options.run.progress == ProgressMode::Silent;
    let say = |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let (sender, receiver) = mpsc::channel();
    let mut debouncer =
        notify_debouncer_mini::new_debouncer(options.debounce, sender).map_err(|e| {
            RunError::Watch {
                message: e.to_string(),
            }
        })?;
    // Watched folder → recursive?; watched path (file or folder) → how to match events.
    let mut watched_dirs: BTreeMap<PathBuf, RecursiveMode> = BTreeMap::new();
    let mut targets: BTreeSet<Target> = BTreeSet::new();
    let mut current: Option<ActiveRun> = None;
    let mut need_reload = true;

    loop {
        if options.stop.load(Ordering::SeqCst) || interrupted() {
            if let Some(run) = current.take() {
                run.control.cancel();
                finish(run, quiet);
            }
            return Ok(());
        }
        if need_reload {
            need_reload = false;
            match reload() {
                Err(diagnostics) => {
                    if !quiet {
                        eprintln!("{diagnostics}");
                    }
                    say("watch: fix the error and save; still watching");
                }
                Ok(next) => {
                    let mut paths = next.watch.clone();
                    paths.extend(next.plan.stages().flat_map(|s| s.files.iter().cloned()));
                    targets = paths
                        .iter()
                        .filter_map(|p| Target::new(&root.join(p)))
                        .collect();
                    update_watches(debouncer.watcher(), &mut watched_dirs, &targets, &say);
                    if let Some(run) = current.take() {
                        cancel_invalidated(&run.control, &next.plan, &root, &say);
                        run.control.stop_scheduling();
                        finish(run, quiet);
                    }
                    current = Some(start(next, &options.run));
                }
            }
        }
        if current.as_ref().is_some_and(|run| run.handle.is_finished()) {
            if let Some(run) = current.take() {
                finish(run, quiet);
                say("watch: waiting for changes (Ctrl-C to stop)");
            }
        }
        match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(events)) => {
                if let Some(event) = events
                    .iter()
                    .find(|e| targets.iter().any(|t| t.matches(&e.path)))
                {
                    say(&format!("watch: {} changed", event.path.display()));
                    need_reload = true;
                }
            }
            Ok(Err(error)) => say(&format!("watch: {error}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(RunError::Watch {
                    message: "the file watcher stopped".to_string(),
                });
            }
        }
    }
}

fn start(next: Reload, template: &RunOptions) -> ActiveRun {
    let control = Arc::new(RunControl::new());
    let mut options = template.clone();
    options.control = control.clone();
    let handle = std::thread::spawn(move || run_plan(&next.plan, &next.registry, &options));
    ActiveRun { control, handle }
}

fn finish(run: ActiveRun, quiet: bool) {
    match run.handle.join() {
        Ok(Ok(summary)) if !quiet => print!("{}", summary.render_table()),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => eprintln!("{:?}", miette::Report::new(error)),
        Err(_) => eprintln!("error: the run thread panicked"),
    }
}

/// Cancels the running stages whose fingerprint the new plan does not resolve to now.
fn cancel_invalidated(control: &RunControl, plan: &Plan, root: &Path, say: &dyn Fn(&str)) {
    let running = control.running_stages();
    if running.is_empty() {
        return;
    }
    let states = plan_states(plan, root).ok();
    for (id, fp) in running {
        let unchanged = states
            .as_ref()
            .and_then(|s| s.get(&id))
            .and_then(|s| s.fingerprint())
            == Some(&fp);
        if !unchanged {
            say(&format!("watch: {id} is out of date; restarting it"));
            control.cancel_stage(&id);
        }
    }
}

/// One watched path, canonical where it exists.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    path: PathBuf,
    is_dir: bool,
}

impl Target {
    fn new(path: &Path) -> Option<Target> {
        let absolute = match std::fs::canonicalize(path) {
            Ok(p) => p,
            // A file that does not exist yet: watch its folder for it to appear.
            Err(_) => std::fs::canonicalize(path.parent()?)
                .ok()?
                .join(path.file_name()?),
        };
        let is_dir = absolute.is_dir();
        Some(Target {
            path: absolute,
            is_dir,
        })
    }

    fn matches(&self, event_path: &Path) -> bool {
        if self.is_dir {
            event_path.starts_with(&self.path)
        } else {
            event_path == self.path
        }
    }

    /// Folders are watched (not files) so that editors that save by renaming still count.
    fn watch_point(&self) -> Option<(PathBuf, RecursiveMode)> {
        if self.is_dir {
            Some((self.path.clone(), RecursiveMode::Recursive))
        } else {
            Some((
                self.path.parent()?.to_path_buf(),
                RecursiveMode::NonRecursive,
            ))
        }
    }
}

fn update_watches(
    watcher: &mut dyn Watcher,
    watched: &mut BTreeMap<PathBuf, RecursiveMode>,
    targets: &BTreeSet<Target>,
    say: &dyn Fn(&str),
) {
    let mut wanted: BTreeMap<PathBuf, RecursiveMode> = BTreeMap::new();
    for (dir, mode) in targets.iter().filter_map(Target::watch_point) {
        let entry = wanted.entry(dir).or_insert(mode);
        if mode == RecursiveMode::Recursive {
            *entry = mode;
        }
    }
    let stale: Vec<PathBuf> = watched
        .iter()
        .filter(|(dir, mode)| wanted.get(*dir) != Some(*mode))
        .map(|(dir, _)| dir.clone())
        .collect();
    for dir in stale {
        let _ = watcher.unwatch(&dir);
        watched.remove(&dir);
    }
    for (dir, mode) in wanted {
        if watched.contains_key(&dir) {
            continue;
        }
        match watcher.watch(&dir, mode) {
            Ok(()) => {
                watched.insert(dir, mode);
            }
            Err(e) => say(&format!("watch: cannot watch {}: {e}", dir.display())),
        }
    }
}
