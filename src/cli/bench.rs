//! `gpl bench ...` (owner: engine; data adds `gpl bench data`).

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Data layer: synthesis, warm HDF5 load and augmentation against their targets.
    Data(super::data::BenchDataArgs),
    /// Engine speed (forward and training images/s, GFLOP/s, memory) against PyTorch.
    Engine(EngineArgs),
}

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// Threads for gpl and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Minimum seconds of timing per figure.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Do not run the PyTorch side.
    #[arg(long)]
    pub no_torch: bool,
}

pub fn run(command: BenchCommand) -> miette::Result<ExitCode> {
    match command {
        BenchCommand::Data(a) => super::data::bench(a),
        BenchCommand::Engine(a) => {
            let python = std::env::var("GPL_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
            crate::bench::engine::run(&crate::bench::engine::BenchOptions {
                threads: a.threads,
                batch: a.batch,
                seconds: a.seconds,
                python,
                skip_torch: a.no_torch,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
