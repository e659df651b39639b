//! `gpl run | watch | graph | clean` (owner: the runner; stage kinds come from `stages`).

use clap::Args;
use std::path::PathBuf;
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
    /// Stages run in parallel at most.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
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

pub fn run(_args: RunArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl run is not built yet"))
}

pub fn watch(_args: WatchArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl watch is not built yet"))
}

pub fn graph(_args: GraphArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl graph is not built yet"))
}

pub fn clean(_args: CleanArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl clean is not built yet"))
}
