//! The command line: one file per command family, each a thin layer over the library.
//! Exit codes: 0 success, 1 a stage failed, 2 usage or diagnostics.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod bench;
pub mod data;
pub mod eval;
pub mod lang;
pub mod pipeline;

#[derive(Parser, Debug)]
#[command(
    name = "gpl",
    version,
    about = "A declarative pipeline language for deep learning on galaxy images"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a pipeline and print each model's summary.
    Check(lang::CheckArgs),
    /// Rewrite a pipeline in the canonical layout.
    Fmt(lang::FmtArgs),
    /// Run a pipeline, reusing every cached stage whose inputs did not change.
    Run(pipeline::RunArgs),
    /// Re-run what each save of the pipeline, its imports or its data invalidates.
    Watch(pipeline::WatchArgs),
    /// Print the stage graph, marking each stage cached or dirty.
    Graph(pipeline::GraphArgs),
    /// Remove cache entries.
    Clean(pipeline::CleanArgs),
    /// Project a pipeline's wall time on N cluster nodes from its recorded stage times.
    Plan(pipeline::PlanArgs),
    /// Inspect, synthesize and preview datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Evaluate predictions made by any tool.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Benchmarks that run gpl and the reference side by side.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Computes one stage of a `--executor slurm` run: what each Slurm job runs.
    #[command(hide = true)]
    ExecStage(pipeline::ExecStageArgs),
}

pub fn main_with(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(a) => lang::check(a),
        Command::Fmt(a) => lang::fmt(a),
        Command::Run(a) => pipeline::run(a),
        Command::Watch(a) => pipeline::watch(a),
        Command::Graph(a) => pipeline::graph(a),
        Command::Clean(a) => pipeline::clean(a),
        Command::Plan(a) => pipeline::plan(a),
        Command::Data(c) => data::run(c),
        Command::Eval(c) => eval::run(c),
        Command::Bench(c) => bench::run(c),
        Command::ExecStage(a) => pipeline::exec_stage(a),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(2)
        }
    }
}
