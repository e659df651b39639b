//! The language corpus: every `tests/cases/bad/*.gpl` must fail with the diagnostic its first
//! line names (`# expect: gpl::...`), pointing at the line marked `# <- error`, rendered as in
//! its snapshot; every `tests/cases/good/*.gpl` must check. Files are discovered, so a new case
//! is a new file.

use gpl::check::{load_program, summary};
use miette::Diagnostic;
use std::path::{Path, PathBuf};

fn gpl_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gpl"))
        .collect();
    files.sort();
    files
}

/// `# key: value` from the file's leading comment lines.
fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&prefix).map(|s| s.trim().to_string()))
}

#[test]
fn bad_cases_fail_with_their_diagnostic_at_the_marked_line() {
    let cases = gpl_files("tests/cases/bad");
    assert!(cases.len() >= 25, "only {} bad cases", cases.len());
    for path in &cases {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let expected = header(&text, "expect")
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
        let profile = header(&text, "profile");
        let diags = match load_program(path, profile.as_deref()) {
            Ok(_) => panic!("{} checked without errors", path.display()),
            Err(d) => d,
        };
        let first = &diags.errors[0];
        let code = first.code().map(|c| c.to_string()).unwrap_or_default();
        assert_eq!(
            code,
            expected,
            "{}: {}",
            path.display(),
            diags.render_plain()
        );
        if let Some(span) = first.span() {
            let file = diags
                .sources
                .get(span.file)
                .expect("span's file is in the source map");
            let marked = file
                .text
                .lines()
                .position(|l| l.contains("# <- error"))
                .map(|i| i + 1);
            if let Some(line) = marked {
                assert_eq!(
                    diags.sources.line_of(span),
                    line,
                    "{}: wrong line\n{}",
                    path.display(),
                    diags.render_plain()
                );
            }
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        insta::with_settings!({ snapshot_path => "../cases/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(format!("bad__{name}"), diags.render_plain());
        });
    }
}

#[test]
fn good_cases_check() {
    let cases = gpl_files("tests/cases/good");
    assert!(!cases.is_empty());
    for path in &cases {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let profile = header(&text, "profile");
        let program = load_program(path, profile.as_deref())
            .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render_plain()));
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut report = String::new();
        for t in program.trains() {
            report.push_str(&summary::summary(&format!("train {}", t.name), &t.ir));
        }
        report.push_str("defaults:\n");
        for d in &program.defaults {
            report.push_str(&format!(
                "  {} {} = {} ({})\n",
                d.block, d.setting, d.value, d.reason
            ));
        }
        insta::with_settings!({ snapshot_path => "../cases/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(format!("good__{name}"), report);
        });
    }
}

/// Each good case's plan, stage by stage: name, kind, inputs and canonical config, so a
/// setting dropped on the way from the checker to a stage shows in review. A case that
/// checks but cannot run yet snapshots its refusal instead.
#[test]
fn good_cases_plans_are_snapshotted() {
    let mut cases = gpl_files("tests/cases/good");
    cases.push(PathBuf::from("tests/pipelines/tiny.gpl"));
    for path in cases {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let profile = header(&text, "profile");
        let program = load_program(&path, profile.as_deref())
            .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render_plain()));
        let report = match gpl::stages::compile(&program) {
            Ok(compiled) => {
                let mut out = String::new();
                for s in compiled.plan.stages() {
                    let inputs: Vec<String> = s.inputs.iter().map(|i| i.to_string()).collect();
                    out.push_str(&format!(
                        "{} ({}) <- [{}]\n  {}\n",
                        s.id,
                        s.kind,
                        inputs.join(", "),
                        gpl::plan::canonical_json(&s.config)
                    ));
                }
                out
            }
            Err(d) => format!("refused:\n{}", d.render_plain()),
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        insta::with_settings!({ snapshot_path => "../cases/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(format!("plan__{name}"), report);
        });
    }
}

/// Every .gpl file of the repository: pipelines, stdlib and the corpus.
fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "pipelines",
        "stdlib",
        "tests/cases/good",
        "tests/cases/bad",
        "tests/cases/bad/lib",
    ] {
        if Path::new(dir).is_dir() {
            files.extend(gpl_files(dir));
        }
    }
    files
}

#[test]
fn fmt_is_idempotent_and_keeps_the_tree() {
    let mut checked = 0;
    for path in all_sources() {
        let Ok((_, tree)) = gpl::check::parse_for_fmt(&path) else {
            continue;
        };
        let once = gpl::lang::fmt::format_file(&tree);
        let reparsed =
            gpl::lang::parse::parse_file(&once, gpl::lang::FileId(0)).unwrap_or_else(|e| {
                panic!("{}: fmt output does not parse: {e}\n{once}", path.display())
            });
        let a = serde_json::to_string(&tree).expect("AST serialises");
        let b = serde_json::to_string(&reparsed).expect("AST serialises");
        assert_eq!(a, b, "{}: fmt changed the tree\n{once}", path.display());
        assert_eq!(
            gpl::lang::fmt::format_file(&reparsed),
            once,
            "{}: fmt is not idempotent",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} files formatted");
}

#[test]
fn stdlib_and_pipelines_are_already_formatted() {
    for dir in ["pipelines", "stdlib"] {
        for path in gpl_files(dir) {
            let (text, tree) =
                gpl::check::parse_for_fmt(&path).unwrap_or_else(|d| panic!("{}", d.render_plain()));
            assert!(
                gpl::lang::fmt::format_file(&tree) == text,
                "{} is not in canonical layout: run `gpl fmt`",
                path.display()
            );
        }
    }
}

#[test]
fn galaxy10_pipeline_checks_with_and_without_the_quick_profile() {
    let full = load_program(Path::new("pipelines/galaxy10.gpl"), None)
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    let quick = load_program(Path::new("pipelines/galaxy10.gpl"), Some("quick"))
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    assert!(full.trains().all(|t| t.classes == Some(9)));
    assert!(quick.trains().all(|t| t.epochs == 2));
    let count =
        |p: &gpl::check::Program| match &p.dataset("galaxy10").and_then(|d| d.fallback.clone()) {
            Some(gpl::check::Source::Synthetic { count, .. }) => *count,
            _ => 0,
        };
    assert_eq!((count(&full), count(&quick)), (21785, 1500));
    assert_eq!(quick.crossvals().next().map(|c| c.folds), Some(3));
    // The report's trainable parameter counts for VGG16 feature extraction.
    let fe = full.train("vgg_fe").expect("vgg_fe");
    assert_eq!(
        (fe.ir.trainable_params(), fe.ir.total_params()),
        (131_721, 14_846_409)
    );
    let ft = full.train("vgg_ft").expect("vgg_ft");
    assert_eq!(
        ft.ir.trainable_params(),
        131_721 + 3 * (3 * 3 * 512 * 512 + 512)
    );
    assert!(full.span_of("scratch").is_some());
    // The DAG has one definition, the compiled plan: each stage's inputs.
    let plan = gpl::stages::compile(&full).expect("compiles").plan;
    let inputs = |id: &str| -> Vec<String> {
        plan.get(&gpl::plan::StageId::from(id))
            .expect(id)
            .inputs
            .iter()
            .map(|i| i.to_string())
            .collect()
    };
    assert_eq!(inputs("partial"), ["galaxy10", "galaxy10.split"]);
    assert_eq!(inputs("scratch"), ["galaxy10", "partial", "galaxy10.split"]);
    assert_eq!(inputs("combo_searched"), ["scratch", "vgg_ft"]);
    assert_eq!(inputs("cv.scratch.fold1"), ["galaxy10"]);
    assert!(full.source_files().len() >= 6);
}

#[test]
fn stdlib_imports_fall_back_to_the_built_in_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("p.gpl");
    let text = "import \"stdlib/cnn.gpl\"\nimport \"stdlib/balance.gpl\"\n\ndataset d {\n  source synthetic(galaxy10, count: 100, seed: 1)\n  split holdout(train: 0.8, val: 0.1, test: 0.1)\n}\n\ntrain t {\n  model scratch_big(10)\n  data d.train\n  epochs 1\n}\n";
    std::fs::write(&path, text).expect("write");
    let program = load_program(&path, None).unwrap_or_else(|d| panic!("{}", d.render_plain()));
    let files: Vec<String> = program
        .source_files()
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    assert!(files.contains(&"<stdlib>/cnn.gpl".to_string()), "{files:?}");
    // balance.gpl imports augment.gpl as a sibling, which must resolve inside the built-in copy.
    assert!(
        files.contains(&"<stdlib>/augment.gpl".to_string()),
        "{files:?}"
    );
    // Keras's counts: convs 896 + 18,496 + 73,856 + 147,584; dense 262,656; head 5,130.
    assert_eq!(
        program.train("t").map(|t| t.ir.total_params()),
        Some(508_618)
    );
    // The program serialises (spans skipped) for the planner's fingerprints.
    let json = serde_json::to_string(&program).expect("program serialises");
    assert!(json.contains("\"scratch_big\""));
    assert!(
        !json.contains(&dir.path().display().to_string()),
        "serialised program names its folder"
    );
}
