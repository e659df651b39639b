//! `gpl data inspect | synth | preview` (owner: data).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DataCommand {}

pub fn run(command: DataCommand) -> miette::Result<ExitCode> {
    match command {}
}
