//! `gpl run | watch | graph | clean`: load and check the pipeline, compile it into stages
//! (`stages::compile`), then hand the plan to the runner's command helpers.

use crate::check::{self, Program};
use crate::run::cli_support::{clean_command, graph_command, run_command_with, watch_command};
use crate::run::{live_fingerprints, Reload, RunOptions, RunSummary, StageStatus, WatchOptions};
use crate::stages::{self, Compiled, REPORT_STAGE};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    /// Run only this stage (and what it needs that is not cached).
    #[arg(long)]
    pub only: Option<String>,
    /// Re-run this stage and everything downstream of it.
    #[arg(long)]
    pub from: Option<String>,
    /// Stages run in parallel at most (default: one per core).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Re-hash every cached output instead of trusting sizes and times.
    #[arg(long)]
    pub verify: bool,
    /// Where dirty stages are computed: here, or as one Slurm job each (the project folder
    /// must be on a filesystem the nodes share; README, "Running on a cluster").
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

/// Settings of `--executor slurm`, over the defaults per stage kind.
#[derive(Args, Debug, Default)]
pub struct SlurmArgs {
    /// Slurm partition of every job.
    #[arg(long, value_name = "NAME")]
    pub slurm_partition: Option<String>,
    /// Time limit of every job (sbatch --time: minutes, H:MM:SS, D-HH:MM:SS).
    #[arg(long, value_name = "TIME")]
    pub slurm_time: Option<String>,
    /// CPUs per job (sbatch --cpus-per-task).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub slurm_cpus: Option<u32>,
    /// Memory per job (sbatch --mem: 4G, 500M).
    #[arg(long, value_name = "SIZE")]
    pub slurm_mem: Option<String>,
    /// Account charged for the jobs.
    #[arg(long, value_name = "NAME")]
    pub slurm_account: Option<String>,
    /// More sbatch arguments, split on spaces (e.g. "--qos=low --gres=gpu:1").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub slurm_extra: Option<String>,
    /// Shell words before the gpl command in each job script ("module load hdf5 &&",
    /// "apptainer exec gpl.sif").
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub slurm_launcher: Option<String>,
    /// Seconds between two squeue calls (one call polls all the run's jobs).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub slurm_poll: f64,
}

impl SlurmArgs {
    /// The executor these settings describe; `None` with the settings that need
    /// `--executor slurm` when they are given without it.
    fn options(&self) -> Result<crate::run::slurm::SlurmOptions, String> {
        use crate::run::slurm::{Resources, SlurmOptions};
        if !(self.slurm_poll.is_finite() && self.slurm_poll > 0.0) {
            return Err(format!(
                "--slurm-poll must be a positive number of seconds, not {}",
                self.slurm_poll
            ));
        }
        let program = std::env::current_exe()
            .map_err(|e| format!("cannot find the gpl executable the jobs should run: {e}"))?;
        let mut options = SlurmOptions::new(program);
        options.per_kind = stages::slurm_defaults();
        options.overrides = Resources {
            partition: self.slurm_partition.clone(),
            time: self.slurm_time.clone(),
            cpus: self.slurm_cpus,
            mem: self.slurm_mem.clone(),
            account: self.slurm_account.clone(),
            extra: self
                .slurm_extra
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        options.launcher = self.slurm_launcher.clone();
        options.poll = std::time::Duration::from_secs_f64(self.slurm_poll);
        Ok(options)
    }

    /// The `--slurm-*` flags given (for refusing them without `--executor slurm`).
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let flags = [
            ("--slurm-partition", self.slurm_partition.is_some()),
            ("--slurm-time", self.slurm_time.is_some()),
            ("--slurm-cpus", self.slurm_cpus.is_some()),
            ("--slurm-mem", self.slurm_mem.is_some()),
            ("--slurm-account", self.slurm_account.is_some()),
            ("--slurm-extra", self.slurm_extra.is_some()),
            ("--slurm-launcher", self.slurm_launcher.is_some()),
            ("--slurm-poll", self.slurm_poll != 5.0),
        ];
        for (flag, set) in flags {
            if set {
                given.push(flag);
            }
        }
        given
    }
}

/// `gpl exec-stage`: what a Slurm job runs (not for people).
#[derive(Args, Debug)]
pub struct ExecStageArgs {
    /// `.gpl/slurm/<run>/<stage>.json`, written by the run that submitted the job.
    pub job: PathBuf,
    /// The run's marker token.
    #[arg(long)]
    pub token: String,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    /// Print Graphviz DOT instead of a tree.
    #[arg(long)]
    pub dot: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    /// Node counts to project the wall time for (e.g. 1,5,10,21).
    #[arg(long, required = true, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: Vec<u32>,
    /// Multiply every recorded stage time by this (e.g. the full data set's size over a
    /// smaller profile's, when only that profile has run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Remove only entries that no pipeline in pipelines/ references.
    #[arg(long)]
    pub gc: bool,
}

/// Loads, checks and compiles; diagnostics are rendered into the error string.
fn load(file: &Path, profile: Option<&str>) -> Result<(Program, Compiled), String> {
    let program = check::load_program(file, profile).map_err(|d| d.render())?;
    let compiled = stages::compile(&program).map_err(|d| d.render())?;
    Ok((program, compiled))
}

fn options(program: &Program, compiled: &Compiled, jobs: Option<usize>) -> RunOptions {
    let mut options = RunOptions::new(&program.project_root, &compiled.pipeline);
    options.jobs = jobs.unwrap_or(0);
    options
}

pub fn run(args: RunArgs) -> miette::Result<ExitCode> {
    let (program, compiled) = match load(&args.file, args.profile.as_deref()) {
        Ok(loaded) => loaded,
        Err(rendered) => {
            eprint!("{rendered}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut options = options(&program, &compiled, args.jobs);
    match args.executor {
        ExecutorKind::Local => {
            let given = args.slurm.given();
            if !given.is_empty() {
                eprintln!(
                    "error: {} set(s) how Slurm jobs run, which needs `--executor slurm`",
                    given.join(", ")
                );
                return Ok(ExitCode::from(2));
            }
        }
        ExecutorKind::Slurm => match args.slurm.options() {
            Ok(slurm) => options.executor = crate::run::Executor::Slurm(std::sync::Arc::new(slurm)),
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(2));
            }
        },
    }
    options.only = args.only.map(crate::plan::StageId::new);
    options.from = args.from.map(crate::plan::StageId::new);
    if args.verify {
        options.verify = crate::run::Verify::Full;
    }
    let root = program.project_root.clone();
    let pipeline = compiled.pipeline.clone();
    let code = run_command_with(&compiled.plan, &stages::registry(), &options, |summary| {
        publish_report(&root, &pipeline, summary)
    })?;
    Ok(ExitCode::from(code))
}

/// `runs/<pipeline>/report.html` and `metrics.yaml` beside the stage folders, where people
/// look first (the runner mirrors them into `runs/<pipeline>/report/`). A copy that is already
/// there unchanged is not rewritten (a read-only checkout of results can be re-run); a copy
/// that cannot be written marks the report stage failed.
fn publish_report(root: &Path, pipeline: &str, summary: &mut RunSummary) {
    let Some(report) = summary
        .stages
        .iter_mut()
        .find(|s| s.id.as_str() == REPORT_STAGE && s.status.is_ok())
    else {
        return;
    };
    let relative = Path::new("runs").join(crate::plan::spec::safe_file_name(pipeline));
    let publish = || -> std::io::Result<()> {
        // The report folder's publish lock: another process mirroring a newer report into
        // it waits, so the copies here come from one report.
        let _turn =
            crate::run::CacheStore::open(root)?.lock_publish(&relative.join(REPORT_STAGE))?;
        let runs = crate::fsutil::confined_dir(root, &relative)?;
        for name in ["report.html", "metrics.yaml"] {
            let Ok(bytes) = std::fs::read(runs.join(REPORT_STAGE).join(name)) else {
                continue;
            };
            let target = runs.join(name);
            if std::fs::read(&target).is_ok_and(|old| old == bytes) {
                continue;
            }
            crate::fsutil::write_atomic(&target, &bytes).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", target.display()))
            })?;
        }
        Ok(())
    };
    if let Err(e) = publish() {
        let message = format!("its files could not be published: {e}");
        eprintln!("error: {REPORT_STAGE}: {message}");
        report.status = StageStatus::Failed(message);
    }
}

pub fn watch(args: WatchArgs) -> miette::Result<ExitCode> {
    let (program, compiled) = match load(&args.file, args.profile.as_deref()) {
        Ok(loaded) => loaded,
        Err(rendered) => {
            eprint!("{rendered}");
            return Ok(ExitCode::from(2));
        }
    };
    let options = WatchOptions::new(options(&program, &compiled, args.jobs));
    let file = args.file.clone();
    let profile = args.profile.clone();
    let reload = move || {
        let (_, compiled) = load(&file, profile.as_deref())?;
        let mut watch = compiled.watch;
        watch.push(file.clone());
        Ok(Reload {
            plan: compiled.plan,
            registry: stages::registry(),
            watch,
        })
    };
    let code = watch_command(reload, options)?;
    Ok(ExitCode::from(code))
}

pub fn graph(args: GraphArgs) -> miette::Result<ExitCode> {
    let (program, compiled) = match load(&args.file, args.profile.as_deref()) {
        Ok(loaded) => loaded,
        Err(rendered) => {
            eprint!("{rendered}");
            return Ok(ExitCode::from(2));
        }
    };
    print!(
        "{}",
        graph_command(
            &compiled.plan,
            &program.project_root,
            &compiled.pipeline,
            args.dot
        )?
    );
    Ok(ExitCode::SUCCESS)
}

pub fn clean(args: CleanArgs) -> miette::Result<ExitCode> {
    let root = std::env::current_dir().map_err(|e| miette::miette!("{e}"))?;
    let live = if args.gc {
        let mut plans = Vec::new();
        let dir = root.join("pipelines");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| miette::miette!("cannot list {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gpl"))
            .collect();
        files.sort();
        for file in files {
            // Every profile a pipeline declares keeps its entries too.
            for profile in profiles(&file) {
                if let Ok((_, compiled)) = load(&file, profile.as_deref()) {
                    plans.push(compiled.plan);
                }
            }
        }
        Some(live_fingerprints(&plans, &root)?)
    } else {
        None
    };
    let (_, mut line) = clean_command(&root, live.as_ref())?;
    // Search trials are keyed by recipe and data, not by a plan: only a full clean drops them.
    if live.is_none() {
        let trials = crate::stages::search::clean_trials(&root)
            .map_err(|e| miette::miette!("cannot remove .gpl/trials: {e}"))?;
        if trials > 0 {
            line.push_str(&format!(", and {trials} search trial(s)"));
        }
    }
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// `None` (no profile) plus each `profile NAME` the file declares.
fn profiles(file: &Path) -> Vec<Option<String>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = vec![None];
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("profile ") {
            if let Some(name) = rest.split_whitespace().next() {
                out.push(Some(name.to_string()));
            }
        }
    }
    out
}

/// Runs one stage of a Slurm run on this node. Exit 0 when the stage is in the cache
/// afterwards, 1 when it failed, 2 when the job cannot start (the node does not share the
/// project folder, the job file is unreadable).
pub fn exec_stage(args: ExecStageArgs) -> miette::Result<ExitCode> {
    let (root, job) = match crate::run::slurm::read_job(&args.job, &args.token) {
        Ok(read) => read,
        Err(error) => {
            eprintln!("error: {}", error.0);
            return Ok(ExitCode::from(2));
        }
    };
    crate::run::control::install_interrupt_handler();
    let outcome = crate::run::runner::run_job(&root, &job, &stages::registry())?;
    eprintln!(
        "stage '{}': {} in {:.2} s",
        outcome.id,
        outcome.status.label(),
        outcome.seconds
    );
    Ok(match outcome.status {
        StageStatus::Ran | StageStatus::Cached => ExitCode::SUCCESS,
        StageStatus::Cancelled => ExitCode::from(130),
        StageStatus::Failed(_) | StageStatus::Skipped(_) => ExitCode::from(1),
    })
}

/// `gpl plan`: the critical path and projected wall time on N nodes, from the stage times the
/// cache and the event log recorded.
pub fn plan(args: PlanArgs) -> miette::Result<ExitCode> {
    use crate::plan::projection::{critical_path, list_schedule, Durations};
    use crate::run::TimingSource;
    if !(args.scale.is_finite() && args.scale > 0.0) {
        eprintln!(
            "error: --scale must be a positive number, not {}",
            args.scale
        );
        return Ok(ExitCode::from(2));
    }
    let (program, compiled) = match load(&args.file, args.profile.as_deref()) {
        Ok(loaded) => loaded,
        Err(rendered) => {
            eprint!("{rendered}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = &compiled.plan;
    let timings = crate::run::stage_timings(plan, &program.project_root, &compiled.pipeline)?;
    let durations: Durations = timings
        .iter()
        .map(|(id, (seconds, _))| (id.clone(), seconds * args.scale))
        .collect();
    let from = |source: TimingSource| timings.values().filter(|(_, s)| *s == source).count();
    let unknown: Vec<&str> = plan
        .stages()
        .filter(|s| !timings.contains_key(&s.id))
        .map(|s| s.id.as_str())
        .collect();
    println!(
        "stage times: {} from this plan's cache entries, {} from earlier runs of a stage of \
         that name (.gpl/events.jsonl)",
        from(TimingSource::Cache),
        from(TimingSource::Log)
    );
    if !unknown.is_empty() {
        println!(
            "no time recorded for {} stage(s), counted as 0 s: {}",
            unknown.len(),
            unknown.join(", ")
        );
    }
    if args.scale != 1.0 {
        println!("every time multiplied by {} (--scale)", args.scale);
    }
    let total: f64 = durations.values().sum();
    let (path, critical) = critical_path(plan, &durations);
    println!("total work: {}", hms(total));
    println!(
        "critical path: {}: {}",
        hms(critical),
        path.iter()
            .map(|id| format!("{id} ({})", hms(durations.get(id).copied().unwrap_or(0.0))))
            .collect::<Vec<_>>()
            .join(" -> ")
    );
    println!("{:>5}  {:>10}  {:>8}", "nodes", "wall time", "speed-up");
    for &nodes in &args.nodes {
        let wall = list_schedule(plan, &durations, nodes as usize);
        let speedup = if wall > 0.0 { total / wall } else { 1.0 };
        println!("{nodes:>5}  {:>10}  {speedup:>8.2}", hms(wall));
    }
    Ok(ExitCode::SUCCESS)
}

/// `H:MM:SS`.
fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
