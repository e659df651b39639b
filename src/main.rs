//! The `gpl` command line: a thin layer over the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    gpl::cli::main_with(gpl::cli::Cli::parse())
}
