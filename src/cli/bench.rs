//! `gpl bench ...` (owner: engine; data adds `gpl bench data`).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Data layer: synthesis, warm HDF5 load and augmentation against their targets.
    Data(super::data::BenchDataArgs),
}

pub fn run(command: BenchCommand) -> miette::Result<ExitCode> {
    match command {
        BenchCommand::Data(a) => super::data::bench(a),
    }
}
