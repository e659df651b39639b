//! Issue 13 through the real binary: what a hostile or careless pipeline must not make gpl do
//! (read or quote files outside the project, write or delete through symlinks, delete a
//! user's file, panic) and the bad inputs that must be named where they are.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs gpl in `dir`; (exit code, stdout, stderr).
fn gpl_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs gpl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const DATASET: &str = "dataset d {\n  source synthetic(galaxy10, count: 100, seed: 1)\n  split holdout(train: 0.8, val: 0.1, test: 0.1)\n}\n";

#[test]
fn imports_outside_the_project_are_refused_unread() {
    let project = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.gpl");
    fs::write(&secret, "SECRET_VALUE=hunter2\n").unwrap();
    fs::write(
        project.path().join("abs.gpl"),
        format!("import \"{}\"\n", secret.display()),
    )
    .unwrap();
    fs::write(
        project.path().join("env.gpl"),
        "import \"/proc/self/environ\"\n",
    )
    .unwrap();
    // A symlink inside the project that leads out of it.
    std::os::unix::fs::symlink(&secret, project.path().join("link.gpl")).unwrap();
    fs::write(project.path().join("via_link.gpl"), "import \"link.gpl\"\n").unwrap();
    fs::write(
        project.path().join("up.gpl"),
        format!(
            "import \"../{}/secret.gpl\"\n",
            outside.path().file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    for file in ["abs.gpl", "env.gpl", "via_link.gpl", "up.gpl"] {
        let (code, out, err) = gpl_in(project.path(), &["check", file]);
        assert_eq!(code, 2, "{file}: {out}{err}");
        assert!(err.contains("gpl::import::outside"), "{file}: {err}");
        assert!(!err.contains("hunter2"), "{file} quoted the file: {err}");
        assert!(
            !err.contains("PATH="),
            "{file} quoted the environment: {err}"
        );
    }
}

#[test]
fn files_that_are_not_pipelines_are_never_quoted() {
    let project = tempfile::tempdir().unwrap();
    fs::write(project.path().join("notes.txt"), "password hunter2\n").unwrap();
    fs::write(project.path().join("imp.gpl"), "import \"notes.txt\"\n").unwrap();
    let (code, _, err) = gpl_in(project.path(), &["check", "imp.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpl::import::not_gpl"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    for command in ["check", "fmt"] {
        let (code, _, err) = gpl_in(project.path(), &[command, "notes.txt"]);
        assert_eq!(code, 2, "{command}: {err}");
        assert!(err.contains("gpl::io::not_pipeline"), "{command}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("password"),
            "{command}: {err}"
        );
    }
}

#[test]
fn a_diagnostic_past_column_65535_renders_without_panicking() {
    let project = tempfile::tempdir().unwrap();
    let line = format!("{}dataset x {{\n", " ".repeat(70_000));
    fs::write(project.path().join("wide.gpl"), &line).unwrap();
    let (code, _, err) = gpl_in(project.path(), &["check", "wide.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpl::syntax"), "{err}");
    assert!(
        err.contains("dataset x {"),
        "the label's line is shown: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.len() < 5_000,
        "the long line is cut: {} bytes",
        err.len()
    );
}

#[test]
fn a_model_summary_wider_than_65535_columns_prints() {
    let project = tempfile::tempdir().unwrap();
    let name = "l".repeat(70_000);
    fs::write(
        project.path().join("wide.gpl"),
        format!(
            "{DATASET}model m(c) {{\n  input 69 x 69 x 3\n  flatten\n  dense c softmax, name: {name}\n}}\ntrain t {{\n  model m(10)\n  data d.train\n  epochs 1\n}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = gpl_in(project.path(), &["check", "wide.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{name} (dense)")), "{err}");
}
