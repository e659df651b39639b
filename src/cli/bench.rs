//! `gpl bench ...` (owner: engine; data adds `gpl bench data`, search `gpl bench search`).

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Data layer: synthesis, warm HDF5 load and augmentation against their targets.
    Data(super::data::BenchDataArgs),
    /// Engine speed (forward and training images/s, GFLOP/s, memory) against PyTorch.
    Engine(EngineArgs),
    /// The search optimiser: bayes and random on Branin and Hartmann-6, median regret.
    Search(SearchArgs),
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Runs per (problem, strategy), from seeds 0, 1, ...
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Fit the GP's noise instead of telling it the test functions are noise-free (as the
    /// reference's Optuna run is told with `deterministic_objective`).
    #[arg(long)]
    pub fitted_noise: bool,
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
        BenchCommand::Search(a) => {
            let noise = if a.fitted_noise {
                crate::search::Noise::Fitted
            } else {
                crate::search::Noise::Deterministic
            };
            crate::bench::search::run(a.seeds, noise);
            Ok(ExitCode::SUCCESS)
        }
    }
}
