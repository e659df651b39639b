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
