//! Running a pipeline given as text in a temporary project: write it as `p.gpl`, run it
//! through the library (silently), or ask which stages a run would not take from the cache.
//! Shared by the tests that edit one setting and watch what re-runs.

use gpl::check::load_program;
use gpl::plan::StageState;
use gpl::run::{plan_states, run_plan, ProgressMode, RunOptions, RunSummary};
use gpl::stages::{compile, registry};
use std::fs;
use std::path::{Path, PathBuf};

pub fn write(dir: &Path, text: &str) -> PathBuf {
    fs::create_dir_all(dir.join(".gpl")).unwrap();
    let file = dir.join("p.gpl");
    fs::write(&file, text).unwrap();
    file
}

pub fn run(dir: &Path, text: &str) -> RunSummary {
    let file = write(dir, text);
    let program = load_program(&file, None).unwrap_or_else(|d| panic!("{d}"));
    let compiled = compile(&program).unwrap_or_else(|d| panic!("{d}"));
    let mut options = RunOptions::new(&program.project_root, &compiled.pipeline);
    options.progress = ProgressMode::Silent;
    run_plan(&compiled.plan, &registry(), &options).unwrap()
}

/// The stages of `text` that a run would not take from the cache.
pub fn not_cached(dir: &Path, text: &str) -> Vec<String> {
    let file = write(dir, text);
    let program = load_program(&file, None).unwrap_or_else(|d| panic!("{d}"));
    let compiled = compile(&program).unwrap_or_else(|d| panic!("{d}"));
    plan_states(&compiled.plan, &program.project_root)
        .unwrap()
        .into_iter()
        .filter(|(_, s)| !matches!(s, StageState::Cached(_)))
        .map(|(id, _)| id.to_string())
        .collect()
}
