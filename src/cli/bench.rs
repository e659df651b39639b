//! `gpl bench ...` (owner: engine; data adds `gpl bench data`, search `gpl bench search`).

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Data layer: synthesis, warm HDF5 load and augmentation against their targets.
    Data(super::data::BenchDataArgs),
    /// The classical detector against SEP (pixels per second on the same images), then the
    /// SSD-lite detector against PyTorch (images per second).
    Detect(DetectArgs),
    /// Engine speed (forward and training images/s, GFLOP/s, memory) against PyTorch.
    Engine(EngineArgs),
    /// Explanations (Grad-CAM, filter ascent) against PyTorch and pytorch-grad-cam.
    Explain(ExplainArgs),
    /// The search optimiser: bayes and random on Branin and Hartmann-6, median regret.
    Search(SearchArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Threads for gpl and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Images explained by Grad-CAM per round.
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// Filters visualised per round.
    #[arg(long, default_value_t = 8)]
    pub filters: usize,
    /// Gradient-ascent steps per filter.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Alternating rounds (gpl, then PyTorch); the ratio is the median over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Alternating rounds (gpl, then SEP or PyTorch); each ratio is the median over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Detection threshold in units of the global background RMS.
    #[arg(long, default_value_t = 1.5)]
    pub thresh: f32,
    #[arg(long, default_value_t = 5)]
    pub minarea: usize,
    /// Run one part only: `extractor` (against SEP) or `detector` (SSD-lite against PyTorch).
    #[arg(long, value_enum)]
    pub only: Option<DetectPartArg>,
    /// Threads for the detector part, gpl and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Minimum seconds of timing per detector figure, per side and round.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DetectPartArg {
    Extractor,
    Detector,
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
    /// Minimum seconds of timing per figure (per side and round in the paired rounds).
    #[arg(long, default_value_t = 1.5)]
    pub seconds: f64,
    /// Alternating rounds (gpl, then PyTorch); the ratios are medians over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Do not run the PyTorch side.
    #[arg(long)]
    pub no_torch: bool,
}

pub fn run(command: BenchCommand) -> miette::Result<ExitCode> {
    match command {
        BenchCommand::Data(a) => super::data::bench(a),
        BenchCommand::Explain(a) => {
            crate::bench::explain::run(&crate::bench::explain::ExplainBenchOptions {
                threads: a.threads,
                images: a.images,
                filters: a.filters,
                steps: a.steps,
                rounds: a.rounds.max(1),
                python: bench_python(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Detect(a) => {
            crate::bench::detect::run(&crate::bench::detect::DetectBenchOptions {
                rounds: a.rounds.max(1),
                thresh: a.thresh,
                minarea: a.minarea,
                python: bench_python(),
                only: a.only.map(|p| match p {
                    DetectPartArg::Extractor => crate::bench::detect::DetectPart::Extractor,
                    DetectPartArg::Detector => crate::bench::detect::DetectPart::Detector,
                }),
                threads: a.threads.max(1),
                seconds: a.seconds,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Engine(a) => {
            let python = bench_python();
            crate::bench::engine::run(&crate::bench::engine::BenchOptions {
                threads: a.threads,
                batch: a.batch,
                seconds: a.seconds,
                rounds: a.rounds.max(1),
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

/// The Python that runs the PyTorch side of the benches.
fn bench_python() -> String {
    std::env::var("GPL_BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}
