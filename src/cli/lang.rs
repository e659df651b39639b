//! `gpl check` and `gpl fmt` (owner: the language).

use crate::check::{self, summary::summary};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub file: PathBuf,
    /// Show every default that was filled in.
    #[arg(long)]
    pub explain: bool,
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Args, Debug)]
pub struct FmtArgs {
    pub file: PathBuf,
    /// Print the canonical layout instead of rewriting the file.
    #[arg(long)]
    pub check: bool,
}

pub fn check(args: CheckArgs) -> miette::Result<ExitCode> {
    let program = match check::load_program(&args.file, args.profile.as_deref()) {
        Ok(p) => p,
        Err(diagnostics) => {
            eprint!("{}", diagnostics.render());
            return Ok(ExitCode::from(2));
        }
    };
    // What `gpl run` would refuse when it compiles the plan is refused here too, so a
    // pipeline that checks is one that runs.
    if let Err(diagnostics) = crate::stages::compile(&program) {
        eprint!("{}", diagnostics.render());
        return Ok(ExitCode::from(2));
    }
    let mut out = String::new();
    for train in program.trains() {
        let args_text: Vec<String> = train
            .model
            .args
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let title = format!(
            "train {}: model {}({})",
            train.name,
            train.model.def,
            args_text.join(", ")
        );
        out.push_str(&summary(&title, &train.ir));
        out.push('\n');
    }
    let used: Vec<&str> = program.trains().map(|t| t.model.def.as_str()).collect();
    let root_models = program
        .blocks
        .iter()
        .filter(|b| b.in_root && b.kind == crate::lang::BlockKind::Model)
        .map(|b| b.name.as_str());
    for name in root_models {
        let Some(def) = program.models.iter().find(|m| m.name == name) else {
            continue;
        };
        if let (Some(ir), false) = (&def.default_ir, used.contains(&name)) {
            out.push_str(&summary(&format!("model {name}"), ir));
            out.push('\n');
        }
    }
    if args.explain {
        out.push_str("Defaults filled in:\n");
        for d in &program.defaults {
            out.push_str(&format!(
                "  {:<28} {:<32} = {:<24} ({})\n",
                d.block, d.setting, d.value, d.reason
            ));
        }
        if program.defaults.is_empty() {
            out.push_str("  none: every setting is written in the file\n");
        }
    }
    let stages = program.blocks.iter().filter(|b| b.stage).count();
    out.push_str(&format!(
        "ok: {} ({} stages, {} files read)\n",
        args.file.display(),
        stages,
        program.source_files().len()
    ));
    // A closed stdout (`gpl check | head`) is not an error worth reporting.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

pub fn fmt(args: FmtArgs) -> miette::Result<ExitCode> {
    let (text, file) = match check::parse_for_fmt(&args.file) {
        Ok(x) => x,
        Err(diagnostics) => {
            eprint!("{}", diagnostics.render());
            return Ok(ExitCode::from(2));
        }
    };
    let formatted = crate::lang::fmt::format_file(&file);
    if args.check {
        let _ = std::io::stdout().write_all(formatted.as_bytes());
        return Ok(if formatted == text {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if formatted != text {
        crate::fsutil::write_atomic(&args.file, formatted.as_bytes()).map_err(|e| {
            miette::miette!(
                code = "gpl::io::write",
                "cannot write {}: {e}",
                args.file.display()
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}
