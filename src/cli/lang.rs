//! `gpl check` and `gpl fmt` (owner: the language).

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub file: PathBuf,
    /// Show every default that was filled in.
    #[arg(long)]
    pub explain: bool,
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Args, Debug)]
pub struct FmtArgs {
    pub file: PathBuf,
    /// Print the canonical layout instead of rewriting the file.
    #[arg(long)]
    pub check: bool,
}

pub fn check(_args: CheckArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl check is not built yet"))
}

pub fn fmt(_args: FmtArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("gpl fmt is not built yet"))
}
