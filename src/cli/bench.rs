//! `gpl bench ...` (owner: engine; data adds `gpl bench data`).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {}

pub fn run(command: BenchCommand) -> miette::Result<ExitCode> {
    match command {}
}
