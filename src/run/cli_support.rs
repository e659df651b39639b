//! The generic halves of `gpl run | watch | graph | clean`: what each command does once the
//! caller (src/cli/pipeline.rs) has loaded the program and built the plan and registry.
//! Each returns what to print and the exit code, so the CLI stays a thin layer.

use super::cache::{CacheStore, CleanReport};
use super::control::{install_interrupt_handler, interrupted};
use super::executor::Registry;
use super::runner::{run_plan, RunError, RunOptions, RunSummary};
use super::status::plan_states;
use super::watch::{watch, Reload, WatchOptions};
use crate::plan::{render_dot, render_tree, Fingerprint, Plan};
use std::collections::HashSet;
use std::path::Path;

/// `gpl run`: runs the plan with Ctrl-C handling, prints the summary table on stdout and
/// returns the exit code (0 ok, 1 a stage failed, 130 interrupted).
pub fn run_command(plan: &Plan, registry: &Registry, options: &RunOptions) -> Result<u8, RunError> {
    run_command_with(plan, registry, options, |_| {})
}

/// [`run_command`] with a last step (`gpl run` publishes the report) that may mark a stage
/// failed before the summary is printed, so the table and the exit code always agree.
pub fn run_command_with(
    plan: &Plan,
    registry: &Registry,
    options: &RunOptions,
    finish: impl FnOnce(&mut RunSummary),
) -> Result<u8, RunError> {
    install_interrupt_handler();
    let mut summary = run_plan(plan, registry, options)?;
    finish(&mut summary);
    print!("{}", summary.render_table());
    if !summary.warnings.is_empty() {
        eprintln!("{} warning(s):", summary.warnings.len());
        for warning in &summary.warnings {
            eprintln!("  {warning}");
        }
    }
    Ok(summary.exit_code())
}

/// `gpl watch`: watches until Ctrl-C; exit code 130 then.
pub fn watch_command<F>(reload: F, options: WatchOptions) -> Result<u8, RunError>
where
    F: Fn() -> Result<Reload, String>,
{
    install_interrupt_handler();
    watch(reload, options)?;
    Ok(if interrupted() { 130 } else { 0 })
}

/// `gpl graph`: the tree (or DOT) with each stage's cache state.
pub fn graph_command(
    plan: &Plan,
    root: &Path,
    pipeline: &str,
    dot: bool,
) -> Result<String, RunError> {
    let states = plan_states(plan, root)?;
    Ok(if dot {
        render_dot(plan, pipeline, &states)
    } else {
        render_tree(plan, &states)
    })
}

/// `gpl clean` (no `live`) or `gpl clean --gc` (keep the `live` fingerprints, see
/// [`super::status::live_fingerprints`]). Returns the report and a line to print.
pub fn clean_command(
    root: &Path,
    live: Option<&HashSet<Fingerprint>>,
) -> Result<(CleanReport, String), RunError> {
    let store = CacheStore::open(root).map_err(|source| RunError::CacheIo {
        path: root.join(".gpl"),
        source,
    })?;
    let report = match live {
        Some(live) => store.gc(live),
        None => store.clean_all(),
    }
    .map_err(|source| RunError::CacheIo {
        path: store.cache_dir(),
        source,
    })?;
    let mut line = format!(
        "removed {} cache entr{} and {} scratch folder(s), {:.1} MB freed",
        report.entries_removed,
        if report.entries_removed == 1 {
            "y"
        } else {
            "ies"
        },
        report.scratch_removed,
        report.bytes_freed as f64 / 1e6
    );
    if report.in_use > 0 {
        line.push_str(&format!(
            "; kept {} in use by another gpl process",
            report.in_use
        ));
    }
    Ok((report, line))
}
