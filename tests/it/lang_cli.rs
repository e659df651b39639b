//! `gpl check` and `gpl fmt` through the real binary: exit codes, stdout and stderr.

use std::process::Command;

fn gpl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs gpl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_prints_summaries_and_exits_zero() {
    let (code, out, err) = gpl(&["check", "pipelines/galaxy10.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("train vgg_fe: model vgg16_head(classes: 9, size: 69, units: 64)"),
        "{out}"
    );
    assert!(out.contains("Trainable params: 131,721"), "{out}");
    assert!(out.contains("Total params: 14,846,409"), "{out}");
    assert!(out.contains("block5_pool (max_pooling2d) *"), "{out}");
}

#[test]
fn check_shows_what_each_layer_of_a_graph_reads() {
    let (code, out, err) = gpl(&["check", "tests/cases/good/residual.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Connected to"), "{out}");
    assert!(out.contains("a_out (add)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("b_out (add)") && l.ends_with("b2, b_proj")),
        "{out}"
    );
    // A chain keeps Keras's Sequential layout, without the column.
    let (_, out, _) = gpl(&["check", "pipelines/galaxy10.gpl"]);
    assert!(!out.contains("Connected to"), "{out}");
    // Each graph error exits 2.
    for case in ["model_cycle", "from_unknown_layer", "freeze_off_path"] {
        let (code, _, err) = gpl(&["check", &format!("tests/cases/bad/{case}.gpl")]);
        assert_eq!(code, 2, "{case}: {err}");
    }
}

#[test]
fn check_explain_lists_defaults() {
    let (code, out, _) = gpl(&[
        "check",
        "--explain",
        "--profile",
        "quick",
        "pipelines/galaxy10.gpl",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("Defaults filled in:"));
    assert!(out.contains("early_stopping.min_delta"), "{out}");
    assert!(out.contains("optimizer.beta1"), "{out}");
}

#[test]
fn diagnostics_go_to_stderr_with_exit_code_two() {
    let (code, out, err) = gpl(&["check", "tests/cases/bad/class_count_mismatch.gpl"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("gpl::shape::classes"), "{err}");
    assert!(err.contains("class_count_mismatch.gpl:9:9"), "{err}");
    let (code, _, err) = gpl(&["check", "--profile", "quik", "pipelines/galaxy10.gpl"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `quick`?"), "{err}");
}

#[test]
fn fmt_rewrites_in_place_and_check_reports_differences() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("messy.gpl");
    std::fs::write(
        &path,
        "model   m {input 8 x 8 x 3;flatten\n\n\n  dense 2 softmax   # out\n}",
    )
    .expect("write");
    let p = path.to_string_lossy().to_string();
    let (code, out, _) = gpl(&["fmt", "--check", &p]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "model m {\n  input 8 x 8 x 3\n  flatten\n\n  dense 2 softmax  # out\n}\n"
    );
    let (code, _, _) = gpl(&["fmt", &p]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), out);
    let (code, _, _) = gpl(&["fmt", "--check", &p]);
    assert_eq!(code, 0);
}
